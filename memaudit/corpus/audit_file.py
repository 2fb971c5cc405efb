"""Audit sets from outside: the texts a reviewer wants to check on a model they did not
train. A file of texts (jsonl/csv/parquet/txt) with optional `member` and `repeats` columns,
optionally a second file of known non-members, and a file of clean text for capability."""

from __future__ import annotations

from pathlib import Path

from memaudit.corpus.sources import doc_id, load_records
from memaudit.errors import MemauditError


def _as_bool(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "y", "member"}:
        return True
    if text in {"0", "false", "no", "n", "nonmember", "non-member", ""}:
        return False
    raise MemauditError(f"{where}: `member` must be true/false (or 1/0), got {value!r}")


def _rows(path: Path, member_default: bool) -> list[dict]:
    rows = []
    for i, record in enumerate(load_records(path), start=1):
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            continue
        where = f"{path} row {i}"
        member = _as_bool(record["member"], where) if record.get("member") is not None else None
        repeats = record.get("repeats")
        if repeats is not None:
            try:
                repeats = int(repeats)
            except (TypeError, ValueError):
                raise MemauditError(f"{where}: `repeats` must be a whole number, got {repeats!r}") from None
            if repeats < 0:
                raise MemauditError(f"{where}: `repeats` must be >= 0, got {repeats}")
        if member is None:
            member = repeats > 0 if repeats is not None else member_default
        # A member whose count is unknown is counted once: level 1 of the by-repeats tables.
        repeats = (repeats or 1) if member else 0
        kind = record.get("kind") or ("repeated" if member else "heldout")
        rows.append(
            {"doc_id": int(record.get("doc_id") or doc_id(text)), "text": text, "repeats": repeats, "kind": kind}
        )
    if not rows:
        raise MemauditError(f"{path}: no non-empty texts to audit")
    return rows


def load_audit_rows(audit: Path, nonmembers: Path | None = None) -> list[dict]:
    """Rows in the audit.jsonl shape. Without `member`/`repeats` columns every text of the
    audit file is a member; non-members then come from `nonmembers`, or membership metrics
    are left out."""
    rows = _rows(Path(audit), member_default=True)
    if nonmembers is not None:
        held_out = _rows(Path(nonmembers), member_default=False)
        if any(r["repeats"] > 0 for r in held_out):
            raise MemauditError(
                f"{nonmembers}: --nonmembers rows must not be marked as members (member/repeats columns)"
            )
        rows += held_out
    return rows
