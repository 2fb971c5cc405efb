"""Token frequencies of a local reference corpus, for DC-PDD (membership.dcpdd_score): counted from
texts with the model's tokenizer, or read from a file (`scan model --frequencies FILE`). Nothing is
ever downloaded. Torch-free, so a frequency file is checked before a scan imports torch.

The file is one JSON object (docs/metrics.md, "Membership attacks"):

    {"format": "memaudit-token-frequencies", "version": 1,
     "tokenizer": {"vocab_size": V, "vocab_sha256": "<vocab_sha256(tokenizer)>"},
     "documents": D, "source": "what was counted",
     "counts": [c_0, c_1, ..., c_{V-1}]}

`counts[i]` is how often token id i occurs in the corpus, every occurrence counted, each text
tokenized as memaudit tokenizes audit text (no special tokens, no boundary token, no truncation).
`vocab_sha256` names the tokenizer the ids belong to: a file counted with another tokenizer is
refused. `memaudit.write_frequencies(memaudit.count_frequencies(tokenizer, texts), path)` writes one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import atomic_write_text, read_json

FORMAT = "memaudit-token-frequencies"
VERSION = 1


def vocab_sha256(tokenizer) -> str:
    """A hash of the tokenizer's vocabulary (every token string with its id, added tokens included):
    two tokenizers with the same hash give every text the same ids."""
    pairs = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenFrequencies:
    """How often each token id occurs in a reference corpus, and which tokenizer counted it."""

    counts: np.ndarray  # int64 [vocab size]
    vocab_sha256: str
    documents: int
    source: str

    def probabilities(self) -> np.ndarray:
        """Laplace-smoothed relative frequencies (c_i + 1) / (sum c + V): an unseen token gets a small
        probability, never 0 (as DC-PDD's official code and MIMIR smooth)."""
        counts = self.counts.astype(np.float64)
        return (counts + 1.0) / (counts.sum() + len(counts))

    def check_tokenizer(self, tokenizer, model: str) -> None:
        """Refuses frequencies counted with another tokenizer than the model's."""
        if self.vocab_sha256 != vocab_sha256(tokenizer) or len(self.counts) < len(tokenizer):
            raise MemauditError(
                f"{self.source}: token frequencies counted with another tokenizer than {model}'s "
                f"(vocab_sha256 {self.vocab_sha256[:12]}, the model's {vocab_sha256(tokenizer)[:12]}); "
                "count them with the model's tokenizer (memaudit.count_frequencies)"
            )


def count_frequencies(tokenizer, texts: list[str], source: str = "texts") -> TokenFrequencies:
    """Every token occurrence of `texts`, each tokenized without special tokens."""
    size = len(tokenizer)
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, len(texts), 1024):
        ids = tokenizer(texts[start : start + 1024], add_special_tokens=False)["input_ids"]
        flat = np.fromiter((i for seq in ids for i in seq), dtype=np.int64)
        if len(flat):
            found = np.bincount(flat, minlength=size)
            if len(found) > len(counts):  # ids past len(tokenizer): keep them, the table grows
                counts = np.pad(counts, (0, len(found) - len(counts)))
            counts[: len(found)] += found
    return TokenFrequencies(counts, vocab_sha256(tokenizer), len(texts), source)


def write_frequencies(freqs: TokenFrequencies, path: Path) -> None:
    """The frequency file of `freqs` (the module's format), written atomically."""
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "tokenizer": {"vocab_size": len(freqs.counts), "vocab_sha256": freqs.vocab_sha256},
        "documents": freqs.documents,
        "source": freqs.source,
        "counts": [int(c) for c in freqs.counts],
    }
    atomic_write_text(Path(path), json.dumps(doc) + "\n")


def read_frequencies(path: Path) -> TokenFrequencies:
    """A frequency file, its structure checked (the tokenizer is checked against the model's later,
    TokenFrequencies.check_tokenizer); every problem is one MemauditError naming the file."""
    doc = read_json(Path(path))
    where = str(path)
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise MemauditError(
            f'{where}: not a memaudit token-frequency file (needs "format": "{FORMAT}", "version": {VERSION}; '
            "see docs/metrics.md)"
        )
    tok, counts = doc.get("tokenizer"), doc.get("counts")
    if not isinstance(tok, dict) or not isinstance(tok.get("vocab_sha256"), str):
        raise MemauditError(f"{where}: 'tokenizer' must hold the vocab_sha256 of the tokenizer that counted")
    if not isinstance(counts, list) or not counts:
        raise MemauditError(f"{where}: 'counts' must be a non-empty list, one count per token id")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise MemauditError(f"{where}: 'counts' must hold whole numbers >= 0")
    if tok.get("vocab_size") != len(counts):
        raise MemauditError(f"{where}: 'counts' has {len(counts)} entries but vocab_size is {tok.get('vocab_size')!r}")
    documents = doc.get("documents", 0)
    return TokenFrequencies(
        np.array(counts, dtype=np.int64), tok["vocab_sha256"], documents if isinstance(documents, int) else 0, where
    )
