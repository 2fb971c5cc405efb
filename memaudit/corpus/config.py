"""`AuditConfig`, everything that decides a data dir, without the heavy imports of the builder
(memaudit.corpus.audit): the command line checks it before it imports anything heavy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from memaudit.common.errors import MemauditError
from memaudit.common.validation import MAX_COUNT, MAX_REPEATS, SEED, Range, check_ranges, integer

# The role of a row of a data dir or an audit file: natural training text, a planted member, a
# held-out non-member, or a canary (a templated secret).
KINDS = ("natural", "repeated", "heldout", "canary")
# The fields of a data dir row that memaudit writes; `id_field` names another one.
RESERVED_FIELDS = ("text", "doc_id", "repeats", "kind", "secret", "sink_id")


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
    tokenizer: str | None = None  # a model (dir, GGUF file, hub id) whose own tokenizer to use instead of a new BPE
    id_field: str | None = None  # a field of the corpus rows (e.g. user_id) whose owners share sinks (`sink_id`)

    # A repeat level is how often each of its members is written into the training stream (one
    # index per occurrence); the byte-level tokenizer needs its 256 byte tokens and end-of-text.
    REPEAT_LEVEL: ClassVar[Range] = integer(1, MAX_REPEATS)
    RANGES: ClassVar[dict[str, Range]] = {
        "members_per_level": integer(1, MAX_COUNT),
        "canaries_per_level": integer(0, MAX_COUNT),
        "n_valid": integer(0, MAX_COUNT),
        "n_natural": integer(1, MAX_COUNT, optional=True),
        "min_tokens": integer(2, MAX_COUNT),
        "max_tokens": integer(2, MAX_COUNT),
        "vocab_size": integer(257, MAX_COUNT),
        "seed": SEED,
    }

    def __post_init__(self) -> None:
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
