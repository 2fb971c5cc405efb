"""Audit sets from outside: the texts a reviewer wants to check on a model they did not
train. A file of texts (jsonl/csv/parquet/txt) with optional `member`, `repeats`, `doc_id` and
`kind` columns, optionally a second file of known non-members, and a file of clean text for
capability. Every optional column is checked, never cut or guessed: `repeats: 2.5` is an error,
not 2, and a row that says both "not a member" and "trained 3 times" is an error too. Each row
keeps where it came from (`source_file`, `source_line`: sources.SOURCE_KEYS), for triage."""

from __future__ import annotations

import re
from pathlib import Path

from memaudit.common.errors import MemauditError
from memaudit.corpus.config import KINDS
from memaudit.corpus.sources import SOURCE_KEYS, Record, doc_id, load_records

INT64_MAX = 2**63 - 1
_DIGITS = re.compile(r"\s*[0-9]+\s*")


def _as_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in {"1", "true", "yes", "y", "member"}:
        return True
    if text in {"0", "false", "no", "n", "nonmember", "non-member"}:
        return False
    raise MemauditError(f"{where}: 'member' must be true/false (or 1/0), got {value!r}")


def whole_number(value: object, name: str, where: str, low: int = 0, high: int = INT64_MAX) -> int:
    """A count or an id as a file may hold it: a JSON integer (2.0 is 2), or digits in a CSV
    cell. 2.5, "many", true and numbers out of [low, high] are errors naming the place."""
    if (isinstance(value, float) and value.is_integer()) or (isinstance(value, str) and _DIGITS.fullmatch(value)):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MemauditError(f"{where}: '{name}' must be a whole number from {low} to {high}, got {value!r}")
    return value


def _given(fields: dict, name: str) -> object | None:
    """An optional column's value; an empty CSV cell counts as not given."""
    value = fields.get(name)
    return None if value is None or value == "" else value


def audit_row(record: Record, member_default: bool) -> dict:
    """One row in the audit.jsonl shape from a record of an audit file."""
    fields, where = record.fields, record.where
    member = _given(fields, "member")
    member = None if member is None else _as_bool(member, where)
    repeats = _given(fields, "repeats")
    repeats = None if repeats is None else whole_number(repeats, "repeats", where)
    if member is False and repeats:
        raise MemauditError(f"{where}: 'member' is false but 'repeats' is {repeats}; fix one of them")
    if member is True and repeats == 0:
        raise MemauditError(f"{where}: 'member' is true but 'repeats' is 0; fix one of them")
    if member is None:
        member = repeats > 0 if repeats is not None else member_default
    # A member whose count is unknown is counted once: level 1 of the by-repeats tables.
    repeats = (repeats or 1) if member else 0
    kind = _given(fields, "kind") or ("repeated" if member else "heldout")
    if kind not in KINDS:
        raise MemauditError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    given_id = _given(fields, "doc_id")
    row_id = doc_id(record.text) if given_id is None else whole_number(given_id, "doc_id", where, low=1)
    return {"doc_id": row_id, "text": record.text, "repeats": repeats, "kind": kind}


def _rows(path: Path, member_default: bool) -> list[dict]:
    rows = [
        audit_row(record, member_default) | dict(zip(SOURCE_KEYS, (str(path), record.line)))
        for record in load_records(path)
    ]
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
            raise MemauditError(f"{nonmembers}: non-member rows must not be marked as members (member/repeats columns)")
        rows += held_out
    return rows
