"""`AuditConfig`, everything that decides a data dir, and `ScanDataConfig`, how `memaudit scan
data` measures a corpus's duplication, without the heavy imports of the builder and the scanner
(memaudit.corpus.audit, memaudit.corpus.duplicates): the command line takes its defaults from
them and checks them before it imports anything heavy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from memaudit.common.errors import MemauditError
from memaudit.common.validation import MAX_COUNT, MAX_REPEATS, SEED, Range, check_flag, check_ranges, integer, number

# The role of a row of a data dir or an audit file: natural training text, a planted member, a
# held-out non-member, or a canary (a templated secret).
KINDS = ("natural", "repeated", "heldout", "canary")
# The fields of a data dir row that memaudit writes; `id_field` names another one.
RESERVED_FIELDS = ("text", "doc_id", "repeats", "kind", "secret", "sink_id", "copy_of")
DEFAULT_VOCAB_SIZE = 4096  # of the byte-level BPE tokenizer a data dir trains on its corpus
NEAR_THRESHOLD = 0.8  # Jaccard similarity (word 5-grams) at which two documents are near duplicates


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
    vocab_size: int | None = None  # the BPE tokenizer's size; None: DEFAULT_VOCAB_SIZE (refused with `tokenizer`)
    seed: int = 0
    tokenizer: str | None = None  # a model (dir, GGUF file, hub id) whose own tokenizer to use instead of a new BPE
    id_field: str | None = None  # a field of the corpus rows (e.g. user_id) whose owners share sinks (`sink_id`)
    # Every near-duplicate cluster of the training rows (MinHash, as `scan data` finds them) shares one sink id,
    # so that edited copies of a record share their sinks; cluster_threshold is the clusters' Jaccard similarity.
    cluster_ids: bool = False
    cluster_threshold: float = NEAR_THRESHOLD
    # Each repeat of a member after its first occurrence is a copy with about this share of its words edited
    # (deleted or replaced): near duplicates, for experiments on id noise and cluster ids. 0: exact repeats.
    edit_rate: float = 0.0

    # A repeat level is how often each of its members is written into the training stream (one
    # index per occurrence); the byte-level tokenizer needs its 256 byte tokens and end-of-text.
    REPEAT_LEVEL: ClassVar[Range] = integer(1, MAX_REPEATS)
    VOCAB_SIZE: ClassVar[Range] = integer(257, MAX_COUNT)
    RANGES: ClassVar[dict[str, Range]] = {
        "members_per_level": integer(1, MAX_COUNT),
        "canaries_per_level": integer(0, MAX_COUNT),
        "n_valid": integer(0, MAX_COUNT),
        "n_natural": integer(1, MAX_COUNT, optional=True),
        "min_tokens": integer(2, MAX_COUNT),
        "max_tokens": integer(2, MAX_COUNT),
        "seed": SEED,
        "cluster_threshold": number(0, 1, low_open=True),
        "edit_rate": number(0, 1),
    }

    def __post_init__(self) -> None:
        if self.tokenizer is not None and self.vocab_size is not None:
            raise MemauditError(
                "vocab_size sizes the BPE tokenizer trained on the corpus; with `tokenizer` the model's own "
                "tokenizer is used as it is: drop one of the two"
            )
        if not isinstance(self.corpus, str) or not self.corpus.strip():
            raise MemauditError(f"corpus must be an embedded corpus name or a file path, got {self.corpus!r}")
        levels = self.repeats
        rule = f"distinct integers from 1 to {MAX_REPEATS}, at least one"
        try:
            levels = tuple(self.REPEAT_LEVEL.check("repeats", r) for r in levels)
        except (MemauditError, TypeError):  # TypeError: not a list at all
            raise MemauditError(f"repeats must be {rule}, got {levels!r}") from None
        if isinstance(self.repeats, (str, bytes)) or not levels or len(set(levels)) != len(levels):
            raise MemauditError(f"repeats must be {rule}, got {levels!r}")
        object.__setattr__(self, "repeats", levels)
        check_ranges(self, self.RANGES)
        if self.vocab_size is not None:
            object.__setattr__(self, "vocab_size", self.VOCAB_SIZE.check("vocab_size", self.vocab_size))
        for name in ("tokenizer", "id_field"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise MemauditError(f"{name} must be a non-blank string or None, got {value!r}")
        if self.id_field in RESERVED_FIELDS:
            raise MemauditError(
                f"id_field {self.id_field!r} is a field memaudit writes itself; rename that column of the corpus"
            )
        if self.max_tokens < self.min_tokens:
            raise MemauditError(f"min_tokens must be <= `max_tokens`, got {self.min_tokens} > {self.max_tokens}")
        if check_flag("cluster_ids", self.cluster_ids) and self.id_field is not None:
            raise MemauditError(
                "cluster_ids keys sinks on near-duplicate clusters and `id_field` on owners; a row has one sink id: "
                "drop one of the two"
            )

    @property
    def bpe_vocab_size(self) -> int:
        """The size of the BPE tokenizer a build trains: `vocab_size`, or DEFAULT_VOCAB_SIZE. The
        manifest records it (a build with `tokenizer` trains none, and records the default)."""
        return DEFAULT_VOCAB_SIZE if self.vocab_size is None else self.vocab_size


@dataclass(frozen=True)
class ScanDataConfig:
    """How `memaudit scan data` (memaudit.corpus.duplicates.scan_corpus) measures a corpus's
    duplication, and which repeated documents it emits as an audit file (emit_audit)."""

    ngram_tokens: int = 50  # length in tokens of the shared sequences to count
    minhash_perm: int = 128  # MinHash permutations of a document's word 5-grams
    near_threshold: float = NEAR_THRESHOLD  # Jaccard similarity (word 5-grams) of a near duplicate
    top: int = 20  # how many of the most repeated sequences to list
    emit_min_tokens: int = 0  # only emit sequences at least this long (64 = long enough for extraction probes)

    def __post_init__(self) -> None:
        if self.ngram_tokens < 1 or self.minhash_perm < 1 or self.top < 1:
            raise MemauditError(
                f"ngram_tokens (--ngram), minhash_perm and top (--top) must be positive, got {self.ngram_tokens}, "
                f"{self.minhash_perm}, {self.top}"
            )
        if not 0 < self.near_threshold <= 1:
            raise MemauditError(f"near_threshold (--near) is a Jaccard similarity in (0, 1], got {self.near_threshold}")
