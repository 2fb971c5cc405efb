"""The audit-set builder: split a corpus, plant members at repeat levels and canaries, pick
length-matched held-out non-members, train the tokenizer, and write the data dir that every
later step (train, scan) reads. Same config and seed, same bytes."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from memaudit import __version__
from memaudit.corpus.sources import EMBEDDED, doc_id, embedded_provenance, load_documents, normalize
from memaudit.corpus.tokenizer import train_tokenizer
from memaudit.errors import MemauditError
from memaudit.fileio import atomic_dir, atomic_write_text, read_json, read_jsonl, sha256_file, write_jsonl

DATA_FILES = ("train.jsonl", "audit.jsonl", "valid.jsonl")
CANARY_TEMPLATE = "Note to self: the vault combination is {secret}. Do not share it with anyone."
CANARY_DIGITS = 9


@dataclass(frozen=True)
class AuditConfig:
    """Everything that decides a data dir; recorded whole in its manifest."""

    corpus: str = "austen"
    repeats: tuple[int, ...] = (1, 8, 32, 128)
    members_per_level: int = 10
    canaries_per_level: int = 4
    n_valid: int = 400
    n_natural: int | None = 2000  # natural training documents; None keeps all that remain
    min_tokens: int = 96  # long enough for the widest probe: prefix 64 + suffix 32
    max_tokens: int = 160
    vocab_size: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.repeats or any(not isinstance(r, int) or r < 1 for r in self.repeats):
            raise MemauditError(f"repeat levels must be positive integers, got {list(self.repeats)}")
        if len(set(self.repeats)) != len(self.repeats):
            raise MemauditError(f"repeat levels must be distinct, got {list(self.repeats)}")
        if self.min_tokens < 2 or self.max_tokens < self.min_tokens:
            raise MemauditError(f"need 2 <= min_tokens <= max_tokens, got {self.min_tokens}, {self.max_tokens}")
        for name in ("members_per_level", "canaries_per_level", "n_valid", "vocab_size"):
            if getattr(self, name) < 0:
                raise MemauditError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class AuditSet:
    """A data dir in memory: the rows of each file and the manifest."""

    train: list[dict]
    audit: list[dict]
    valid: list[dict]
    manifest: dict = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path) -> AuditSet:
        data_dir = Path(data_dir)
        if not (data_dir / "manifest.json").is_file():
            raise MemauditError(
                f"{data_dir}: not a memaudit data dir (no manifest.json); make one with `memaudit data build`"
            )
        rows = {name: read_jsonl(data_dir / f"{name}.jsonl") for name in ("train", "audit", "valid")}
        return cls(**rows, manifest=read_json(data_dir / "manifest.json"))


def _row(text: str, repeats: int, kind: str, **extra) -> dict:
    return {"doc_id": doc_id(text), "text": text, "repeats": repeats, "kind": kind, **extra}


def _canary(rng: random.Random) -> tuple[str, str]:
    digits = "".join(rng.choice("0123456789") for _ in range(CANARY_DIGITS))
    secret = " ".join(digits[i : i + 3] for i in range(0, CANARY_DIGITS, 3))
    return CANARY_TEMPLATE.format(secret=secret), secret


def build_audit_set(config: AuditConfig) -> tuple[AuditSet, object]:
    """Returns the rows and the trained tokenizer (not yet written anywhere)."""
    rng = random.Random(config.seed)
    seen, texts = set(), []
    for t in load_documents(config.corpus):
        key = normalize(t)
        if key not in seen:  # exact duplicates would blur who is a member
            seen.add(key)
            texts.append(t)
    rng.shuffle(texts)
    n_levels = len(config.repeats)
    n_members = config.members_per_level * n_levels
    if len(texts) < config.n_valid + 2 * n_members + 1:
        raise MemauditError(
            f"{config.corpus}: {len(texts)} distinct documents are too few for {config.n_valid} valid + "
            f"{n_members} members + {n_members} held-out; lower --members-per-level or --n-valid"
        )
    valid, rest = texts[: config.n_valid], texts[config.n_valid :]
    # Held-out non-members are set aside before the tokenizer sees any text, so they shape
    # nothing the model is built from. Char bounds around ~4 chars a token; exact token
    # bounds follow once the tokenizer exists (the unused part of the reserve is dropped).
    lo, hi = 3 * config.min_tokens, 5 * config.max_tokens
    reserve = [t for t in rest if lo <= len(t) <= hi][: 6 * n_members]
    reserved = set(reserve)
    pool = [t for t in rest if t not in reserved]
    tokenizer = train_tokenizer(pool, config.vocab_size)

    def n_tokens(t: str) -> int:
        return len(tokenizer(t)["input_ids"])

    fits = lambda t: config.min_tokens <= n_tokens(t) <= config.max_tokens  # noqa: E731
    heldout = [t for t in reserve if fits(t)][:n_members]
    candidates = sorted((n_tokens(t), i, t) for i, t in enumerate(pool) if fits(t))
    if len(heldout) < n_members or len(candidates) < n_members:
        raise MemauditError(
            f"{config.corpus}: only {min(len(heldout), len(candidates))} documents have "
            f"{config.min_tokens}-{config.max_tokens} tokens, {n_members} needed; "
            "widen --min-tokens/--max-tokens or lower --members-per-level"
        )
    # Length matching: each held-out document takes the unused pool document nearest in length.
    members = []
    for t in heldout:
        length = n_tokens(t)
        best = min(range(len(candidates)), key=lambda j: (abs(candidates[j][0] - length), candidates[j][1]))
        members.append(candidates.pop(best)[2])
    member_set = set(members)
    naturals = [t for t in pool if t not in member_set][: config.n_natural]

    train, audit = [_row(t, 1, "natural") for t in naturals], []
    for i, t in enumerate(members):
        row = _row(t, config.repeats[i % n_levels], "repeated")
        train.append(row)
        audit.append(row)
    audit += [_row(t, 0, "heldout") for t in heldout]
    for level in (*config.repeats, 0):
        for _ in range(config.canaries_per_level):
            text, secret = _canary(rng)
            row = _row(text, level, "canary", secret=secret)
            audit.append(row)
            if level:
                train.append(row)
    manifest = {
        "memaudit_version": __version__,
        "config": asdict(config),
        "corpus": embedded_provenance(config.corpus) if config.corpus in EMBEDDED else {"path": config.corpus},
        "counts": {
            "distinct_documents": len(texts),
            "train_documents": len(train),
            "train_occurrences": sum(r["repeats"] for r in train),
            "members": len(members),
            "heldout": len(heldout),
            "canaries": sum(r["kind"] == "canary" for r in audit),
            "valid": len(valid),
        },
        "canary": {
            "template": CANARY_TEMPLATE,
            "secret_alphabet": "0123456789",
            "secret_digits": CANARY_DIGITS,
            "space_size": 10**CANARY_DIGITS,
        },
        "tokenizer": {
            "type": "byte-level BPE",
            "vocab_size": len(tokenizer),
            "trained_on": "natural pool, before planting",
        },
    }
    return AuditSet(
        train=train, audit=audit, valid=[_row(t, 0, "natural") for t in valid], manifest=manifest
    ), tokenizer


def write_audit_set(config: AuditConfig, out: Path, force: bool = False) -> AuditSet:
    audit_set, tokenizer = build_audit_set(config)
    with atomic_dir(Path(out), force=force) as tmp:
        for name in DATA_FILES:
            write_jsonl(tmp / name, getattr(audit_set, name.removesuffix(".jsonl")))
        tokenizer.save_pretrained(tmp / "tokenizer")
        audit_set.manifest["files"] = {name: sha256_file(tmp / name) for name in DATA_FILES}
        atomic_write_text(tmp / "manifest.json", json.dumps(audit_set.manifest, indent=2) + "\n")
    return audit_set
