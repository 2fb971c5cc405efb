"""Rebuild memaudit's embedded Austen corpus from Debian's r-cran-janeaustenr package.

Run-time code never needs apt: this script is how the committed file
`memaudit/corpus/data/austen.jsonl.gz` (and its provenance JSON) was made, so anyone can
check it. It downloads the .deb (no install, which would pull in R), unpacks it, and reads
the R lazy-load database `data/Rdata.rdx` / `Rdata.rdb` with the pure-Python `rdata` package.

    pip install rdata && python scripts/build_austen_corpus.py
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import tempfile
import zlib
from pathlib import Path

import rdata

PACKAGE = "r-cran-janeaustenr"
OUT_DIR = Path(__file__).resolve().parent.parent / "memaudit" / "corpus" / "data"
BOOKS = {  # R object name -> title, in publication order
    "sensesensibility": "Sense & Sensibility",
    "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}


def read_lazyload(rdx: Path, rdb: Path) -> dict[str, list[str]]:
    """An R lazy-load database: a gzip'd index of (offset, length) into zlib'd blobs."""
    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(rdx.read_bytes())))
    blob = rdb.read_bytes()
    books = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[int(offset) : int(offset) + int(length)]
        raw = zlib.decompress(chunk[4:])  # 4-byte big-endian uncompressed size, then zlib
        books[str(name)] = [str(line) for line in rdata.conversion.convert(rdata.parser.parse_data(raw))]
    return books


def is_heading(paragraph: str) -> bool:
    """Chapter titles, 'THE END', '***' and the like: not prose, so not corpus documents."""
    words = paragraph.split()
    if not any(ch.isalpha() for ch in paragraph):
        return True
    return len(words) <= 6 and (paragraph.isupper() or words[0] in {"CHAPTER", "Chapter"})


def paragraphs(lines: list[str]) -> list[str]:
    """Blank-line separated paragraphs, lines joined by one space, headings dropped."""
    out, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            text = " ".join(current)
            current = []
            if not is_heading(text):
                out.append(text)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True)
        deb = next(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        deb_sha256 = hashlib.sha256(deb.read_bytes()).hexdigest()
        subprocess.run(["dpkg-deb", "-x", deb.name, "x"], cwd=tmp, check=True)
        data = Path(tmp, "x/usr/lib/R/site-library/janeaustenr/data")
        books = read_lazyload(data / "Rdata.rdx", data / "Rdata.rdb")
    rows = []
    for key, title in BOOKS.items():
        for i, text in enumerate(paragraphs(books[key])):
            rows.append({"text": text, "book": title, "paragraph": i})
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    # mtime=0 so the same input gives the same bytes.
    (OUT_DIR / "austen.jsonl.gz").write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))
    provenance = {
        "name": "austen",
        "source": f"Debian package {PACKAGE} ({deb.name})",
        "upstream": "https://github.com/juliasilge/janeaustenr (Julia Silge), MIT license; texts public domain",
        "deb_sha256": deb_sha256,
        "books": list(BOOKS.values()),
        "paragraphs": len(rows),
        "characters": sum(len(r["text"]) for r in rows),
        "jsonl_sha256": hashlib.sha256(payload).hexdigest(),
        "rebuild": "python scripts/build_austen_corpus.py",
    }
    (OUT_DIR / "austen.provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
