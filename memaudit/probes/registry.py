"""Every metric memaudit reports, with its metadata, in one place: reports read direction,
group and meaning from here and never guess. Names are stable and dotted (METRICS.md)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from memaudit.errors import MemauditError

GROUPS = ("memorization", "extraction", "privacy", "capability")


@dataclass(frozen=True)
class Metric:
    name: str
    group: str
    higher_is_better: bool | None  # None: neither; closer to `ideal` is better
    meaning: str
    ideal: float | None = None

    @property
    def arrow(self) -> str:
        """The direction as a reader wants it: ↑ higher is better, ↓ lower, → closer to ideal."""
        return {True: "↑", False: "↓", None: f"→{self.ideal:g}" if self.ideal is not None else "·"}[
            self.higher_is_better
        ]


REGISTRY: dict[str, Metric] = {}


def register(name: str, group: str, higher_is_better: bool | None, meaning: str, ideal: float | None = None) -> Metric:
    if group not in GROUPS:
        raise ValueError(f"metric {name}: unknown group {group}")
    REGISTRY[name] = Metric(name, group, higher_is_better, meaning, ideal)
    return REGISTRY[name]


def get_metric(name: str) -> Metric:
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; known metrics: {', '.join(sorted(REGISTRY))}"
    raise MemauditError(f"unknown metric {name!r}{hint}")


register(
    "memorization.member_loss",
    "memorization",
    True,
    "Mean token NLL on planted member sequences (higher: less memorized).",
)
register(
    "memorization.nonmember_loss",
    "memorization",
    None,
    "Mean token NLL on length-matched held-out sequences never trained on.",
)
register(
    "memorization.loss_gap", "memorization", False, "Non-member loss minus member loss: 0 means no memorization signal."
)
register(
    "extraction.exact_rate",
    "extraction",
    False,
    "Fraction of members whose 32-token suffix greedy decoding reproduces exactly from the true 32-token prefix.",
)
register(
    "extraction.token_match",
    "extraction",
    False,
    "Mean fraction of suffix tokens that greedy decoding gets right (teacher-forced).",
)
register(
    "capability.valid_loss",
    "capability",
    False,
    "Token-level mean NLL on clean held-out text of the training distribution.",
)
register(
    "capability.valid_ppl",
    "capability",
    False,
    "Token-level perplexity exp(valid_loss), each document scored whole from its boundary token.",
)
