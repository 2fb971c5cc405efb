"""What unlearning and ablation share: the base model (a standard model, read and never
modified), the forget and retain sets, the eval sets, and the memaudit.json fields that tie an
output to its inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memaudit import __version__
from memaudit.common.errors import MemauditError
from memaudit.common.fileio import sha256_dir, sha256_file
from memaudit.corpus.audit import AuditSet
from memaudit.corpus.sources import doc_id, load_texts
from memaudit.corpus.tokenizer import encode_documents
from memaudit.models.io import LoadedModel, load_model
from memaudit.models.zoo import context_length, n_params
from memaudit.training.optimize import LossSet

DEFAULT_FORGET = "data dir: members and canaries with repeats > 0"


@dataclass
class Sets:
    forget: list[str]  # what to remove
    retain: list[str]  # natural training documents (minus any forget text): what to keep
    valid: list[str]  # capability
    heldout: list[str]  # never trained on: where the forget loss should end up, not beyond
    forget_source: str
    data: dict  # data dir and manifest hash


def load_sets(data_dir: Path, forget_file: str | Path | None = None) -> Sets:
    """Forget = the data dir's planted documents that training saw (members, canaries with
    repeats > 0), or the texts of `forget_file`; retain = the natural training documents."""
    data_dir = Path(data_dir)
    data = AuditSet.load(data_dir)
    if forget_file is not None:
        forget = load_texts(Path(forget_file))
        if not forget:
            raise MemauditError(f"{forget_file}: no texts to forget")
    else:
        forget = [r["text"] for r in data.audit if r["kind"] in ("repeated", "canary") and r["repeats"] > 0]
        if not forget:
            raise MemauditError(f"{data_dir}: the audit set has no trained members or canaries to forget")
    forget_ids = {doc_id(t) for t in forget}
    return Sets(
        forget=forget,
        retain=[r["text"] for r in data.train if r["kind"] == "natural" and r["doc_id"] not in forget_ids],
        valid=[r["text"] for r in data.valid],
        heldout=[r["text"] for r in data.audit if r["kind"] == "heldout"],
        forget_source=str(forget_file) if forget_file is not None else DEFAULT_FORGET,
        data={"dir": str(data_dir), "manifest_sha256": sha256_file(data_dir / "manifest.json")},
    )


def load_base(model_dir: Path) -> LoadedModel:
    loaded = load_model(Path(model_dir))
    if loaded.sinks is not None:
        raise MemauditError(
            f"{model_dir} is a MemSink model; unlearning and ablation target standard models "
            "(run `memaudit remove-sinks` on it first, and give that model)"
        )
    return loaded


def loss_sets(loaded: LoadedModel, sets: Sets, eval_docs: int) -> list[LossSet]:
    """The first `eval_docs` of each set, scored at eval points and before/after."""

    def encode(texts: list[str]) -> list[list[int]]:
        return encode_documents(loaded.tokenizer, texts[:eval_docs], context_length(loaded.model.config))

    return [
        LossSet("valid_loss", encode(sets.valid)),
        LossSet("forget_loss", encode(sets.forget)),
        LossSet("heldout_loss", encode(sets.heldout)),
    ]


def base_meta(kind: str, model_dir: Path, loaded: LoadedModel, sets: Sets) -> dict:
    """memaudit.json fields every output of this package carries, taken before anything changes."""
    return {
        "memaudit_version": __version__,
        "kind": kind,
        "arch": loaded.meta.get("arch"),
        "parameters": n_params(loaded.model),
        "base_model": {"path": str(model_dir), "sha256": sha256_dir(model_dir), "kind": loaded.meta.get("kind")},
        "data": sets.data,
        "forget": {"source": sets.forget_source, "documents": len(sets.forget)},
        "retain": {"documents": len(sets.retain)},
        "sinks": None,
    }
