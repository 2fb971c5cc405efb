"""The audit-set builder: split a corpus, plant members at repeat levels and canaries, pick
length-matched held-out non-members, train the tokenizer, and write the data dir that every
later step (train, scan) reads. Same config and seed, same bytes."""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from memaudit import __version__
from memaudit.common.errors import MemauditError
from memaudit.common.fileio import atomic_dir, check_out, iter_jsonl, read_json, sha256_file, write_json, write_jsonl
from memaudit.common.validation import MAX_REPEATS, integer
from memaudit.corpus.config import KINDS, AuditConfig, ScanDataConfig
from memaudit.corpus.sources import (
    EMBEDDED,
    SOURCE_KEYS,
    doc_id,
    embedded_provenance,
    load_documents,
    load_records,
    normalize,
    owner_id,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DATA_FILES = ("train.jsonl", "audit.jsonl", "valid.jsonl")
_ROW_NUMBERS = {"doc_id": integer(1, 2**63 - 1), "repeats": integer(0, MAX_REPEATS), "sink_id": integer(1, 2**63 - 1)}
CANARY_TEMPLATE = "Note to self: the vault combination is {secret}. Do not share it with anyone."
CANARY_DIGITS = 9
_WORD = re.compile(r"(\S+)(\s*)")  # a word and the whitespace after it


@dataclass
class AuditSet:
    """A data dir in memory: the rows of each file and the manifest (and the dir it was loaded from, for messages)."""

    train: list[dict]
    audit: list[dict]
    valid: list[dict]
    manifest: dict = field(default_factory=dict)
    path: Path | None = None

    @staticmethod
    def check(data_dir: Path) -> Path:
        """`data_dir` as a Path if it looks like a data dir (it has a manifest), for an early refusal."""
        data_dir = Path(data_dir)
        if not (data_dir / "manifest.json").is_file():
            raise MemauditError(
                f"{data_dir}: not a memaudit data dir (no manifest.json); make one with `memaudit data build`"
            )
        return data_dir

    @classmethod
    def load(cls, data_dir: Path) -> AuditSet:
        """The data dir's rows; each audit row also says where it is (`source_file`, `source_line`), for triage."""
        data_dir = cls.check(data_dir)
        rows = {name: _data_rows(data_dir / f"{name}.jsonl", name == "audit") for name in ("train", "audit", "valid")}
        return cls(**rows, manifest=read_json(data_dir / "manifest.json"), path=data_dir)


def _data_rows(path: Path, with_source: bool = False) -> list[dict]:
    """The rows of a data dir file, each checked: a hand-edited file must fail here, naming the
    line, and not deep inside training (a huge `repeats` would fill the memory). `with_source`:
    each row also gets its file and line (sources.SOURCE_KEYS)."""
    rows = []
    for line, row in iter_jsonl(path):
        where = f"{path}:{line}"
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            raise MemauditError(f"{where}: 'text' must be a non-blank string, got {row.get('text')!r}")
        for name, rule in _ROW_NUMBERS.items():
            if name == "sink_id" and name not in row:
                continue
            try:
                rule.check(name, row.get(name))
            except MemauditError as e:
                raise MemauditError(f"{where}: {e}") from None
        if row.get("kind") not in KINDS:
            raise MemauditError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {row.get('kind')!r}")
        rows.append(row | dict(zip(SOURCE_KEYS, (str(path), line))) if with_source else row)
    return rows


def sink_id(row: dict) -> int:
    """The id a row's sinks are keyed on: its owner's (`id_field`) when the data dir has owners, else its doc_id."""
    return row.get("sink_id", row["doc_id"])


def resolve_sink_ids(ids: Sequence[int | str], data: AuditSet, name: str = "ids") -> list[int]:
    """The sink ids, sorted, that `ids` name among a data dir's training rows: an owner's (hashed as at `data build
    --id-field`) when the data dir has owners, else a document's, which under `--cluster-ids` is its cluster's. What
    `remove-sinks --ids` deletes and `train --exclude-ids` leaves out; an id no training row has is an error."""
    field = data.manifest.get("config", {}).get("id_field")
    trained = {sink_id(r) for r in data.train}
    if field:
        resolved = {value: owner_id(value, field, name) for value in ids}
    else:
        bad = [v for v in ids if not isinstance(v, int) or isinstance(v, bool)]
        if bad:
            raise MemauditError(
                f"`{name}`: {bad[0]!r} is not a document id (an integer); {data.path} was built without --id-field"
            )
        by_doc = {r["doc_id"]: sink_id(r) for r in data.train}
        resolved = {value: by_doc.get(value) for value in ids}
    unknown = sorted((given for given, sink in resolved.items() if sink not in trained), key=str)
    if unknown:
        shown = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        raise MemauditError(
            f"`{name}`: {len(unknown)} id(s) not among the model's training documents in {data.path}: {shown}"
        )
    return sorted(set(resolved.values()))


def _row(text: str, repeats: int, kind: str, **extra) -> dict:
    return {"doc_id": doc_id(text), "text": text, "repeats": repeats, "kind": kind, **extra}


def _owners(config: AuditConfig) -> dict[str, object]:
    """Normalized text -> the `id_field` value of its row; {} without `id_field`. A text written by two owners is
    refused: deleting either one would have to delete it for both."""
    field = config.id_field
    if field is None:
        return {}
    if config.corpus in EMBEDDED:
        raise MemauditError(
            f"id_field {field!r} needs a local corpus file whose rows carry it; {config.corpus} has none"
        )
    owners: dict[str, object] = {}
    for record in load_records(Path(config.corpus)):
        value = record.fields.get(field)
        owner_id(value, field, record.where)
        key = normalize(record.text)
        if owners.setdefault(key, value) != value:
            raise MemauditError(
                f"{record.where}: this text also belongs to {field} {owners[key]!r}; one text needs one owner"
            )
    return owners


def _add_owner(row: dict, owners: dict[str, object], field: str | None) -> dict:
    """The row with its owner's field and sink id, when its text has an owner (canaries have none)."""
    value = owners.get(normalize(row["text"]))
    if value is not None:
        row[field] = value
        row["sink_id"] = owner_id(value, field, "corpus")
    return row


def _canary(rng: random.Random) -> tuple[str, str]:
    digits = "".join(rng.choice("0123456789") for _ in range(CANARY_DIGITS))
    secret = " ".join(digits[i : i + 3] for i in range(0, CANARY_DIGITS, 3))
    return CANARY_TEMPLATE.format(secret=secret), secret


def edit_words(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    """An edited copy of `text` and its number of edits: each word (a run of non-space), with probability `rate`,
    is deleted or replaced by another word of the text, at even odds (deleted when the text has no other word).
    Whitespace stays as written, so rate 0 gives `text` back; a copy keeps at least one word."""
    indent = text[: len(text) - len(text.lstrip())]
    words = _WORD.findall(text)
    vocab = sorted({word for word, _ in words})
    kept, edits = [], 0
    for word, space in words:
        if rng.random() >= rate:
            kept.append(word + space)
            continue
        edits += 1
        others = [v for v in vocab if v != word]
        if others and rng.random() < 0.5:
            kept.append(rng.choice(others) + space)
    if not kept:  # every word deleted: keep the last one
        kept, edits = [words[-1][0]], edits - 1
    return indent + "".join(kept), edits


def _edited_copies(config: AuditConfig, train: list[dict]) -> tuple[list[dict], dict[str, int | float]]:
    """The training rows with each member of R > 1 repeats written once as it is and R - 1 times as an edited copy
    (`copy_of`: the member's doc_id; an owner's copies stay theirs), each right after it, and what the edits did.
    The member's audit row keeps its text and its level R. Canaries stay exact: their secret is what is measured.
    The edits draw from their own stream of the seed, so the rest of the build is the same at every rate."""
    rng = random.Random(f"edits:{config.seed}")
    rows, copies, edits, words = [], 0, 0, 0
    for row in train:
        if row["kind"] != "repeated" or row["repeats"] == 1:
            rows.append(row)
            continue
        rows.append({**row, "repeats": 1})
        for _ in range(row["repeats"] - 1):
            text, n = edit_words(row["text"], config.edit_rate, rng)
            rows.append({**row, "doc_id": doc_id(text), "text": text, "repeats": 1, "copy_of": row["doc_id"]})
            copies, edits, words = copies + 1, edits + n, words + len(row["text"].split())
    return rows, {"edited_copies": copies, "word_edit_rate": round(edits / max(words, 1), 6)}


def _cluster_ids(config: AuditConfig, train: list[dict], audit: list[dict]) -> int:
    """Every near-duplicate cluster of training texts (MinHash of word 5-grams at `cluster_threshold`, as `scan
    data` clusters) gets one sink id, the doc_id of its first row, on its training rows and on the audit rows of
    the same texts. Returns the number of clusters of two or more distinct texts; with none, one warning line, and
    every document keeps its own id."""
    from memaudit.corpus.duplicates import near_duplicate_clusters  # numpy and pandas: only this option needs them

    root, _ = near_duplicate_clusters(
        [normalize(r["text"]) for r in train], ScanDataConfig().minhash_perm, config.cluster_threshold
    )
    texts: dict[int, set[int]] = {}
    for row, head in zip(train, root.tolist()):
        texts.setdefault(head, set()).add(row["doc_id"])
    clustered = {head for head, ids in texts.items() if len(ids) > 1}
    if not clustered:
        print(
            f"warning: cluster_ids: the training documents hold no near duplicates (Jaccard >= "
            f"{config.cluster_threshold} of word 5-grams); every document keeps its own sink id",
            file=sys.stderr,
        )
        return 0
    sink_of = {row["doc_id"]: train[head]["doc_id"] for row, head in zip(train, root.tolist()) if head in clustered}
    for row in (*train, *audit):
        if row["doc_id"] in sink_of:
            row["sink_id"] = sink_of[row["doc_id"]]
    return len(clustered)


def distinct_texts(corpus: str) -> list[str]:
    """The corpus documents in order, each normalized text once: exact duplicates would blur who is a member."""
    seen, texts = set(), []
    for t in load_documents(corpus):
        key = normalize(t)
        if key not in seen:
            seen.add(key)
            texts.append(t)
    return texts


def _split(config: AuditConfig, texts: list[str], n_members: int) -> tuple[list[str], list[str], list[str]]:
    """(valid, reserve, pool) of the shuffled distinct texts. Held-out non-members (the reserve) are set aside
    before the tokenizer sees any text, so they shape nothing the model is built from. Char bounds around ~4
    chars a token; exact token bounds follow once the tokenizer exists (the unused part of the reserve is dropped)."""
    if len(texts) < config.n_valid + 2 * n_members + 1:
        raise MemauditError(
            f"{config.corpus}: {len(texts)} distinct documents are too few for {config.n_valid} valid + "
            f"{n_members} members + {n_members} held-out; lower members_per_level or n_valid"
        )
    valid, rest = texts[: config.n_valid], texts[config.n_valid :]
    lo, hi = 3 * config.min_tokens, 5 * config.max_tokens
    reserve = [t for t in rest if lo <= len(t) <= hi][: 6 * n_members]
    reserved = set(reserve)
    return valid, reserve, [t for t in rest if t not in reserved]


def _length_matched(
    config: AuditConfig, tokenizer: PreTrainedTokenizerBase, reserve: list[str], pool: list[str], n_members: int
) -> tuple[list[str], list[str]]:
    """(heldout, members): the first reserved texts within the token bounds, and for each the unused pool text
    nearest in token length, so that members and non-members differ in membership, not in length."""

    def counted(texts: list[str]) -> list[tuple[int, str]]:
        """(tokens, text) of the texts within the bounds; one batched call (a call a text was most of a build)."""
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
        return [(n, t) for n, t in zip(lengths, texts) if config.min_tokens <= n <= config.max_tokens]

    heldout = counted(reserve)[:n_members]
    candidates = sorted((n, i, t) for i, (n, t) in enumerate(counted(pool)))
    if len(heldout) < n_members or len(candidates) < n_members:
        raise MemauditError(
            f"{config.corpus}: only {min(len(heldout), len(candidates))} documents have "
            f"{config.min_tokens}-{config.max_tokens} tokens, {n_members} needed; "
            "widen min_tokens/max_tokens or lower members_per_level"
        )
    members = []
    for length, _ in heldout:
        best = min(range(len(candidates)), key=lambda j: (abs(candidates[j][0] - length), candidates[j][1]))
        members.append(candidates.pop(best)[2])
    return [t for _, t in heldout], members


def _plant(
    config: AuditConfig, rng: random.Random, naturals: list[str], members: list[str], heldout: list[str]
) -> tuple[list[dict], list[dict]]:
    """(train, audit) rows: members cycle through the repeat levels, canaries are drawn at every level and at 0
    (never trained: the unseen baseline); a planted row is the same dict in both lists."""
    n_levels = len(config.repeats)
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
    return train, audit


def _manifest(config: AuditConfig, counts: dict[str, int], tokenizer: PreTrainedTokenizerBase) -> dict:
    """What the data dir records about its making, so that a later step (or reader) can tell how it was built."""
    return {
        "memaudit_version": __version__,
        "config": asdict(config) | ({} if config.tokenizer else {"vocab_size": config.bpe_vocab_size}),
        "corpus": embedded_provenance(config.corpus) if config.corpus in EMBEDDED else {"path": config.corpus},
        "counts": counts,
        "canary": {
            "template": CANARY_TEMPLATE,
            "secret_alphabet": "0123456789",
            "secret_digits": CANARY_DIGITS,
            "space_size": 10**CANARY_DIGITS,
        },
        "tokenizer": (
            {"type": "the model's own", "source": config.tokenizer, "vocab_size": len(tokenizer)}
            if config.tokenizer
            else {"type": "byte-level BPE", "vocab_size": len(tokenizer), "trained_on": "natural pool, before planting"}
        ),
    }


def build_audit_set(config: AuditConfig) -> tuple[AuditSet, object]:
    """Returns the rows and the trained tokenizer (not yet written anywhere)."""
    from memaudit.corpus.tokenizer import model_tokenizer, train_tokenizer  # transformers: only building needs it

    rng = random.Random(config.seed)
    owners = _owners(config)
    texts = distinct_texts(config.corpus)
    rng.shuffle(texts)
    n_members = config.members_per_level * len(config.repeats)
    valid, reserve, pool = _split(config, texts, n_members)
    tokenizer = model_tokenizer(config.tokenizer) if config.tokenizer else train_tokenizer(pool, config.bpe_vocab_size)
    heldout, members = _length_matched(config, tokenizer, reserve, pool, n_members)
    member_set = set(members)
    naturals = [t for t in pool if t not in member_set][: config.n_natural]
    train, audit = _plant(config, rng, naturals, members, heldout)
    for row in (*train, *audit):
        _add_owner(row, owners, config.id_field)
    edited = {}
    if config.edit_rate:
        train, edited = _edited_copies(config, train)
    clusters = {"near_clusters": _cluster_ids(config, train, audit)} if config.cluster_ids else {}
    counts = {
        "distinct_documents": len(texts),
        "train_documents": len(train),
        "train_occurrences": sum(r["repeats"] for r in train),
        "members": len(members),
        "heldout": len(heldout),
        "canaries": sum(r["kind"] == "canary" for r in audit),
        "valid": len(valid),
        **edited,
        **clusters,
    }
    manifest = _manifest(config, counts, tokenizer)
    return AuditSet(
        train=train, audit=audit, valid=[_row(t, 0, "natural") for t in valid], manifest=manifest
    ), tokenizer


def write_audit_set(config: AuditConfig, out: Path, force: bool = False) -> AuditSet:
    """`memaudit data build`: build the audit set of `config` and write it to the data dir `out`
    (train/audit/valid JSONL, the tokenizer, manifest.json), whole or not at all. The output is
    checked before the build starts, so a bad `out` costs nothing."""
    check_out(out, force=force, inputs=[config.corpus])  # before the build, not after it
    audit_set, tokenizer = build_audit_set(config)
    with atomic_dir(Path(out), force=force) as tmp:
        for name in DATA_FILES:
            write_jsonl(tmp / name, getattr(audit_set, name.removesuffix(".jsonl")))
        tokenizer.save_pretrained(tmp / "tokenizer")
        audit_set.manifest["files"] = {name: sha256_file(tmp / name) for name in DATA_FILES}
        write_json(tmp / "manifest.json", audit_set.manifest)
    return audit_set
