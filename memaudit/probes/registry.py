"""Every metric memaudit reports, with its metadata, in one place: reports read direction,
group and meaning from here and never guess. Names are stable and dotted (METRICS.md)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from memaudit.errors import MemauditError

GROUPS = ("memorization", "extraction", "privacy", "capability")
ATTACKS = ("loss", "zlib", "mink", "minkpp", "ref")  # membership inference: `privacy.mia.<attack>.*`
FPR_LEVELS = {"1%": 0.01, "0.1%": 0.001}  # reported TPRs: `privacy.mia.<attack>.tpr@1%fpr`, ...


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


def at_prefix(name: str, prefix_len: int) -> str:
    """A metric (or sequence-row key) at another prefix length of the sweep:
    `extraction.exact_rate@P8`, `exact@P8`. The plain name is the headline at the suite's
    `prefix_len` (default 32), which the sweep does not repeat."""
    return f"{name}@P{prefix_len}"


def _register_sweep(name: str) -> Metric | None:
    """Derives `<extraction metric>@P<n>` from its headline metric (None if `name` is not one)."""
    base, _, p = name.partition("@P")
    if not p.isdigit() or base not in SWEPT:
        return None
    m = REGISTRY[base]
    return register(
        name, m.group, m.higher_is_better, f"{m.meaning.removesuffix('.')} (prefix of {int(p)} tokens).", m.ideal
    )


def get_metric(name: str) -> Metric:
    """A registered metric; sweep names (`<extraction metric>@P<n>`) for any n are derived here."""
    if name in REGISTRY:
        return REGISTRY[name]
    swept = _register_sweep(name)
    if swept is not None:
        return swept
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
    "memorization.forgetting",
    "memorization",
    True,
    "Member loss minus the reference model's member loss: with the pre-unlearning model as reference, how much fit was removed.",
)
register(
    "memorization.gap_closed",
    "memorization",
    None,
    "Fraction of the standard model's loss gap removed: (member_loss - standard member_loss) / standard loss_gap.",
    ideal=1.0,
)

# Extraction: S = suffix_len tokens after a true prefix of P = prefix_len tokens (32 and 32 by
# default), members only in the headline value; by_repeats["0"] is the held-out baseline.
register(
    "extraction.exact_rate",
    "extraction",
    False,
    "Fraction of members whose suffix greedy decoding reproduces exactly from the true prefix.",
)
register(
    "extraction.token_match",
    "extraction",
    False,
    "Mean fraction of suffix tokens that greedy decoding gets right (teacher-forced).",
)
register(
    "extraction.prefix_match_len",
    "extraction",
    False,
    "Mean number of suffix tokens greedy decoding reproduces right after the prefix, before its first miss.",
)
register(
    "extraction.strength",
    "extraction",
    False,
    "Mean 1 - (smallest offset from which greedy decoding reproduces the rest of the suffix) / suffix length.",
)
register(
    "extraction.np_discoverable",
    "extraction",
    False,
    "Fraction of members that n top-k samples would reproduce exactly with probability >= p (defaults 100, 0.5, k=40).",
)
SWEPT = tuple(name for name, m in REGISTRY.items() if m.group == "extraction")
# Not swept: it needs real sampling (generation), so it runs at the headline prefix only.
register(
    "extraction.sampling_rate",
    "extraction",
    False,
    "Fraction of members for which at least one of n sampled continuations (top-k 40, temperature 1) is the exact suffix.",
)
for _p in (8, 16, 32, 64):  # the default sweep, so reports read its meanings from REGISTRY
    for _name in SWEPT:
        _register_sweep(at_prefix(_name, _p))

# Membership inference: every attack score is oriented higher = more member-like (membership.py).
_ATTACK_MEANINGS = {
    "loss": "mean token NLL",
    "zlib": "total NLL over zlib-compressed bytes",
    "mink": "Min-K% (mean of the lowest k% token log-probs, k = 20% by default)",
    "minkpp": "Min-K%++ (lowest k% of log-probs standardized by the model's own distribution)",
    "ref": "NLL minus a reference model's NLL",
}
for _attack in ATTACKS:
    _what = _ATTACK_MEANINGS[_attack]
    register(
        f"privacy.mia.{_attack}.auc",
        "privacy",
        None,
        f"ROC-AUC of members vs held-out non-members by {_what}; 0.5 = no leak.",
        ideal=0.5,
    )
    for _label, _fpr in FPR_LEVELS.items():
        register(
            f"privacy.mia.{_attack}.tpr@{_label}fpr",
            "privacy",
            False,
            f"Members flagged by {_what} at {_label} false positives; chance level is {_fpr:g}.",
        )
register(
    "privacy.privleak",
    "privacy",
    None,
    "MUSE PrivLeak: (AUC - reference AUC) / reference AUC x 100 for the suite's privleak attack; 0 = like the reference.",
    ideal=0.0,
)
register(
    "privacy.exposure",
    "privacy",
    False,
    "Mean canary exposure in bits, log2|R| - log2(rank), over trained canaries; level 0 = never-trained canaries.",
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
register(
    "capability.degradation",
    "capability",
    False,
    "valid_loss minus the reference model's valid_loss: capability lost (e.g. to unlearning).",
)
