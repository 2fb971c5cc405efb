"""`memaudit scan model`: load a model, score every audited sequence in one pass, compute the
metrics of the registry, and return the results document (the single source of truth that
every report view is rendered from)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from memaudit import __version__
from memaudit.corpus.audit import AuditSet
from memaudit.corpus.sources import doc_id
from memaudit.corpus.tokenizer import encode_documents
from memaudit.errors import MemauditError
from memaudit.fileio import sha256_dir, sha256_file
from memaudit.models.io import LoadedModel, load_model
from memaudit.probes.registry import get_metric
from memaudit.probes.scoring import ScoredSequence, score_sequences
from memaudit.probes.stats import mean, summarize

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ScanConfig:
    prefix_len: int = 32
    suffix_len: int = 32
    bootstrap: int = 1000
    seed: int = 0
    max_batch_tokens: int = 16384


def _context_len(loaded: LoadedModel) -> int:
    config = loaded.model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 2048


def _sequence_row(row: dict, tokens: list[int], scored: ScoredSequence, cfg: ScanConfig, tok) -> dict:
    out = {
        "doc_id": row["doc_id"],
        "kind": row["kind"],
        "repeats": row["repeats"],
        "member": row["repeats"] > 0,
        "n_tokens": len(scored),
        "loss": float(-scored.logp.mean()),
    }
    p, s = cfg.prefix_len, cfg.suffix_len
    if len(scored) >= p + s:
        hits = scored.hit[p : p + s]
        out |= {
            "exact": bool(hits.all()),
            "token_match": float(hits.mean()),
            # tokens[0] is the boundary token; text token j is tokens[j + 1]
            "prefix": tok.decode(tokens[1 : p + 1]),
            "suffix": tok.decode(tokens[p + 1 : p + s + 1]),
        }
    return out


def _metric(name: str, summary: dict, by_repeats: dict | None = None) -> dict:
    m = get_metric(name)
    out = {**summary, "higher_is_better": m.higher_is_better, "group": m.group}
    if m.ideal is not None:
        out["ideal"] = m.ideal
    if by_repeats is not None:
        out["by_repeats"] = by_repeats
    return out


def compute_metrics(seqs: list[dict], valid: list[ScoredSequence], cfg: ScanConfig) -> dict:
    """The registry's metrics from per-sequence rows; `by_repeats["0"]` is the held-out baseline."""
    text = [r for r in seqs if r["kind"] != "canary"]
    members = [r for r in text if r["member"]]
    nonmembers = [r for r in text if not r["member"]]
    levels = sorted({r["repeats"] for r in text})
    boot = dict(n_boot=cfg.bootstrap, seed=cfg.seed)

    def values(rows: list[dict], key: str) -> np.ndarray:
        return np.array([float(r[key]) for r in rows if key in r])

    def per_level(key: str) -> dict:
        return {
            str(lv): summarize([values([r for r in text if r["repeats"] == lv], key)], mean, **boot) for lv in levels
        }

    metrics = {
        "memorization.member_loss": _metric(
            "memorization.member_loss", summarize([values(members, "loss")], mean, **boot), per_level("loss")
        ),
        "memorization.nonmember_loss": _metric(
            "memorization.nonmember_loss", summarize([values(nonmembers, "loss")], mean, **boot)
        ),
    }
    gap = lambda non, mem: mean(non) - mean(mem)  # noqa: E731
    gap_levels = {
        str(lv): summarize(
            [values(nonmembers, "loss"), values([r for r in members if r["repeats"] == lv], "loss")], gap, **boot
        )
        for lv in levels
        if lv > 0
    }
    metrics["memorization.loss_gap"] = _metric(
        "memorization.loss_gap",
        summarize([values(nonmembers, "loss"), values(members, "loss")], gap, **boot),
        gap_levels,
    )
    for name, key in (("extraction.exact_rate", "exact"), ("extraction.token_match", "token_match")):
        metrics[name] = _metric(name, summarize([values(members, key)], mean, **boot), per_level(key))
    if valid:
        nll = [(-s.logp.sum(), len(s)) for s in valid]
        sums, counts = np.array([a for a, _ in nll]), np.array([b for _, b in nll])
        pooled = lambda idx: float(sums[idx.astype(int)].sum() / counts[idx.astype(int)].sum())  # noqa: E731
        loss = summarize([np.arange(len(valid))], pooled, **boot)
        metrics["capability.valid_loss"] = _metric("capability.valid_loss", loss)
        ppl = {**loss, "value": math.exp(loss["value"])}
        if "ci95" in loss:
            ppl["ci95"] = [math.exp(v) for v in loss["ci95"]]
        metrics["capability.valid_ppl"] = _metric("capability.valid_ppl", ppl)
    return metrics


def scan(
    model: str | Path | LoadedModel,
    *,
    data_dir: str | Path | None = None,
    audit_rows: list[dict] | None = None,
    valid_texts: list[str] | None = None,
    sinks_mode: str | None = None,
    config: ScanConfig = ScanConfig(),
) -> dict:
    """Score a model on an audit set; returns the results document (see DESIGN.md)."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    data_info: dict = {}
    if data_dir is not None:
        data = AuditSet.load(Path(data_dir))
        audit_rows = data.audit
        valid_texts = [r["text"] for r in data.valid] if valid_texts is None else valid_texts
        data_info = {"dir": str(data_dir), "manifest_sha256": sha256_file(Path(data_dir) / "manifest.json")}
    if not audit_rows:
        raise MemauditError("nothing to audit: the audit set is empty")
    sink_mode = None
    if loaded.sinks is not None:
        loaded.sinks.mode = sink_mode = sinks_mode or "off"
    elif sinks_mode not in (None, "none"):
        raise MemauditError(f"--sinks {sinks_mode}: {loaded.path} is not a MemSink model")

    tok, ctx = loaded.tokenizer, _context_len(loaded)
    tokens = encode_documents(tok, [r["text"] for r in audit_rows], ctx)
    scored = score_sequences(
        loaded.model,
        tokens,
        pad_id=tok.pad_token_id,
        doc_ids=[r["doc_id"] for r in audit_rows],
        sinks=loaded.sinks,
        max_batch_tokens=config.max_batch_tokens,
    )
    seqs = [_sequence_row(r, t, s, config, tok) for r, t, s in zip(audit_rows, tokens, scored) if len(s) > 0]
    valid = []
    if valid_texts:
        valid = score_sequences(
            loaded.model,
            encode_documents(tok, valid_texts, ctx),
            pad_id=tok.pad_token_id,
            doc_ids=[doc_id(t) for t in valid_texts],  # `own` mode: each text's own (untrained) sinks
            sinks=loaded.sinks,
            max_batch_tokens=config.max_batch_tokens,
        )
    short = sum(1 for r in seqs if "exact" not in r and r["kind"] != "canary")
    if short == len([r for r in seqs if r["kind"] != "canary"]):
        raise MemauditError(
            f"every audited sequence is shorter than prefix {config.prefix_len} + suffix {config.suffix_len} tokens; "
            "audit longer texts or lower the prefix/suffix lengths"
        )
    meta = loaded.meta
    model_path = Path(loaded.path)
    return {
        "schema_version": SCHEMA_VERSION,
        "memaudit_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "path": str(loaded.path),
            "sha256": sha256_dir(model_path) if model_path.is_dir() else None,
            "kind": meta.get("kind", "external"),
            "arch": meta.get("arch", type(loaded.model).__name__),
            "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "sink_mode": sink_mode,
            "sinks": meta.get("sinks"),
            "trained": {k: meta[k] for k in ("steps", "epochs", "tokens_seen", "seed") if k in meta},
        },
        "data": data_info,
        "suite": {"name": "default", **asdict(config)},
        "counts": {
            "members": sum(1 for r in seqs if r["member"] and r["kind"] != "canary"),
            "nonmembers": sum(1 for r in seqs if not r["member"] and r["kind"] != "canary"),
            "canaries": sum(1 for r in seqs if r["kind"] == "canary"),
            "too_short_for_extraction": short,
            "valid_documents": len(valid),
        },
        "metrics": compute_metrics(seqs, valid, config),
        "sequences": seqs,
    }
