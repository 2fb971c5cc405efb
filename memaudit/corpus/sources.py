"""Where documents come from: the embedded Austen corpus, or a user's local file. A document is
just its text; ids and roles are given later.

Texts are read exactly as written: JSON with the json module, one line at a time; CSV with the
csv module (every cell a string); Parquet with pyarrow, whose `text` column must hold strings. A
`text` that is not a string (a number, a list, null) or is missing is an error naming the file,
the line (or row) and the field, never coerced to a string; a blank text is skipped, and the
count of skipped rows is printed. Nothing here touches the network or imports torch."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import iter_jsonl, read_text, read_text_lines

EMBEDDED = {"austen": "austen.jsonl.gz"}
LOCAL_FORMATS = (".jsonl", ".json", ".txt", ".parquet", ".csv")
# Where an audit row came from, kept on its per-sequence row (probes/metrics.py) for triage (sequences.csv, SARIF):
# the file as given and the record's 1-based line (its row or item number in Parquet or a JSON array; Record.line).
SOURCE_KEYS = ("source_file", "source_line")


def normalize(text: str) -> str:
    """The form that identity is decided on: NFC, whitespace runs folded to one space."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def doc_id(text: str) -> int:
    """A stable content hash: a positive int64, never 0, equal for equal (normalized) text.

    MemSinks keys each document's sink mask on this id, so exact duplicates share sinks."""
    digest = hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF or 1


def owner_id(value: object, field: str, where: str) -> int:
    """The sink id of a row's owner (`data build --id-field`): every record of one person shares sinks, so deleting
    that person's sinks deletes what the model memorized of them alone. An integer or a string, hashed as its text
    (42 in JSON and "42" in a CSV cell are one person) to a positive int64 that the sink hash accepts."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
        raise MemauditError(f"{where}: '{field}' must be an integer or a non-blank string, got {_describe(value)}")
    digest = hashlib.blake2b(f"owner:{str(value).strip()}".encode(), digest_size=8).digest()
    sink = int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF
    return sink if sink % 2**48 else 1  # 0 and multiples of 2**48 would switch every sink on


def parse_ids(value: str) -> list[int | str]:
    """Comma-separated ids as the command line takes them ("123,alice"): digits are a document id (an
    integer), anything else an owner's id (a string, for a data dir built with `--id-field`)."""
    return [int(v) if v.strip().isdigit() else v.strip() for v in value.split(",")]


def embedded_provenance(name: str = "austen") -> dict:
    path = resources.files("memaudit.corpus") / "data" / f"{name}.provenance.json"
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Record:
    """One row of a local file: its fields as the file holds them (`text` is a non-blank
    string), and where it is, for error messages about its other fields and for triage."""

    where: str  # "FILE:LINE" (JSONL, CSV, TXT), "FILE item N" (a JSON array), "FILE row N" (Parquet)
    fields: dict[str, Any]
    # 1-based: the line the record starts on (JSONL, CSV: its first physical line, TXT: the paragraph's first
    # line); a JSON array's item number and a Parquet file's row number, which have no lines of their own.
    line: int = 0

    @property
    def text(self) -> str:
        return self.fields["text"]


def load_documents(corpus: str) -> list[str]:
    """Texts of an embedded corpus (by name) or of a local file (`load_texts`)."""
    if corpus in EMBEDDED:
        raw = (resources.files("memaudit.corpus") / "data" / EMBEDDED[corpus]).read_bytes()
        texts = [json.loads(line)["text"] for line in gzip.decompress(raw).decode("utf-8").splitlines()]
        return [t for t in texts if t.strip()]
    if not Path(corpus).exists():
        raise MemauditError(f"{corpus}: no such file (give a local file or an embedded corpus: {', '.join(EMBEDDED)})")
    texts = load_texts(Path(corpus))
    if not texts:
        raise MemauditError(f"{corpus}: the corpus has no non-empty documents")
    return texts


def load_texts(path: Path) -> list[str]:
    """The texts of a local file, exactly as written (`load_records`)."""
    return [r.text for r in load_records(path)]


def load_records(path: Path) -> list[Record]:
    """Rows of a local .jsonl/.json/.csv/.parquet (each with a string `text` field) or .txt (one
    row per blank-line separated paragraph, its lines joined by a space). Rows whose text is
    blank are skipped and counted on stderr; any other bad row is an error naming its place."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise MemauditError(f"{path}: no such file")
    if suffix not in LOCAL_FORMATS:
        raise MemauditError(f"{path}: unsupported format {suffix!r}; use one of {', '.join(LOCAL_FORMATS)}")
    reader = {".jsonl": _jsonl, ".json": _json, ".csv": _csv, ".parquet": _parquet, ".txt": _txt}[suffix]
    records, blank = [], []
    for where, line, fields in reader(path):
        if "text" not in fields:
            raise MemauditError(f"{where}: no 'text' field (fields: {', '.join(map(str, fields)) or 'none'})")
        text = fields["text"]
        if not isinstance(text, str):
            raise MemauditError(
                f"{where}: 'text' must be a string, got {_describe(text)}; write it as a string, or remove the row"
            )
        if text.strip():
            records.append(Record(where, fields, line))
        else:
            blank.append(where)
    if blank:
        print(f"note: {path}: skipped {len(blank)} rows with a blank 'text' (first: {blank[0]})", file=sys.stderr)
    return records


def _jsonl(path: Path) -> Iterator[tuple[str, int, dict]]:
    for line, row in iter_jsonl(path):
        yield f"{path}:{line}", line, row


def _json(path: Path) -> Iterator[tuple[str, int, dict]]:
    """A JSON array of objects, or (like `datasets`) JSON Lines under a .json name."""
    text = read_text(path)
    if not text.lstrip().startswith("["):
        yield from _jsonl(path)
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise MemauditError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise MemauditError(f"{path} item {i}: expected a JSON object, got {_describe(item)}")
        yield f"{path} item {i}", i, item


def _csv(path: Path) -> Iterator[tuple[str, int, dict]]:
    """Rows by the header line; every cell stays the string it is in the file."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        start = reader.line_num + 1
        for row in reader:
            line, where = start, f"{path}:{start}"
            start = reader.line_num + 1
            if not row:
                continue
            if len(row) != len(header):
                raise MemauditError(f"{where}: {len(row)} cells, but the header has {len(header)}; check the quoting")
            yield where, line, dict(zip(header, row))
    except csv.Error as e:
        raise MemauditError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None


def _parquet(path: Path) -> Iterator[tuple[str, int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise MemauditError(f"{path}: could not read as parquet ({' '.join(str(e).split())})") from None
    if "text" in table.column_names:
        kind = table.schema.field("text").type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise MemauditError(f"{path}: column 'text' holds {kind}, not strings; store the texts as strings")
    for i, row in enumerate(table.to_pylist(), start=1):
        yield f"{path} row {i}", i, row


def _txt(path: Path) -> Iterator[tuple[str, int, dict]]:
    """One row per blank-line separated paragraph, its lines joined by a space."""
    current, first = [], 0
    for i, line in enumerate([*read_text_lines(path), ""], start=1):
        if line.strip():
            first = first or i
            current.append(line.strip())
        elif current:
            yield f"{path}:{first}", first, {"text": " ".join(current)}
            current, first = [], 0


def _describe(value: object) -> str:
    """A value as an error message shows it: its JSON type, and a glimpse of it."""
    if value is None:
        return "null"
    kind = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
    text = json.dumps(value, default=str)
    return f"{kind.get(type(value), type(value).__name__)} {text if len(text) <= 40 else text[:37] + '...'}"
