"""Where documents come from: the embedded Austen corpus, or a user's local file loaded with
`datasets` (offline). A document is just its text; ids and roles are given later."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import unicodedata
from importlib import resources
from pathlib import Path

from memaudit.errors import MemauditError
from memaudit.fileio import read_text_lines

EMBEDDED = {"austen": "austen.jsonl.gz"}
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".txt": "text", ".parquet": "parquet", ".csv": "csv"}


def normalize(text: str) -> str:
    """The form that identity is decided on: NFC, whitespace runs folded to one space."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def doc_id(text: str) -> int:
    """A stable content hash: a positive int64, never 0, equal for equal (normalized) text.

    MemSinks keys each document's sink mask on this id, so exact duplicates share sinks."""
    digest = hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF or 1


def embedded_provenance(name: str = "austen") -> dict:
    path = resources.files("memaudit.corpus") / "data" / f"{name}.provenance.json"
    return json.loads(path.read_text(encoding="utf-8"))


def load_documents(corpus: str) -> list[str]:
    """Texts of an embedded corpus (by name) or of a local file; empty texts dropped."""
    if corpus in EMBEDDED:
        raw = (resources.files("memaudit.corpus") / "data" / EMBEDDED[corpus]).read_bytes()
        texts = [json.loads(line)["text"] for line in gzip.decompress(raw).decode("utf-8").splitlines()]
    else:
        texts = [r["text"] for r in load_records(Path(corpus))]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise MemauditError(f"{corpus}: the corpus has no non-empty documents")
    return texts


def load_records(path: Path) -> list[dict]:
    """Rows of a local .jsonl/.json/.csv/.parquet (which must have a `text` column) or .txt
    (one `{"text": paragraph}` row per blank-line separated paragraph), read offline."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        names = ", ".join(EMBEDDED)
        raise MemauditError(f"{path}: no such file (give a local file, or for a corpus an embedded one: {names})")
    if suffix not in LOCAL_FORMATS:
        raise MemauditError(f"{path}: unsupported format {suffix!r}; use one of {', '.join(LOCAL_FORMATS)}")
    if suffix == ".txt":
        return [{"text": t} for t in _paragraphs(read_text_lines(path))]
    # Text formats are decoded first: that names the first non-UTF-8 line, and an empty file
    # gets a plain answer instead of a `datasets` StopIteration.
    if suffix in {".jsonl", ".json", ".csv"} and not any(line.strip() for line in read_text_lines(path)):
        return []
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(LOCAL_FORMATS[suffix], data_files=str(path), split="train")
    except Exception as e:  # datasets raises many types for malformed files
        raise MemauditError(f"{path}: could not read as {suffix[1:]} ({type(e).__name__}: {e})") from None
    if "text" not in ds.column_names:
        raise MemauditError(f"{path}: no 'text' column (columns: {', '.join(ds.column_names)})")
    return ds.to_list()


def _paragraphs(lines: list[str]) -> list[str]:
    """One document per blank-line separated paragraph, its lines joined by a space."""
    docs, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            docs.append(" ".join(current))
            current = []
    return docs
