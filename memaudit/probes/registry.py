"""Every metric memaudit reports, in one place, each with its computation and everything a view
needs: group, direction, meaning, whether it is a headline number (and whether it says a model
leaks), whether it is an axis of the memorization-vs-capability Pareto view, and whether it
compares the model with another one. Scans compute exactly what is registered here, in this
order; the console, HTML, CSV and Markdown views, the Pareto front, the gates, `memaudit metrics`
and docs/metrics.md all read it. Adding a metric is one `@metric` function below.

Names are stable and dotted: `<group>.<name>`, `privacy.mia.<attack>.<statistic>`, the
extraction sweep `extraction.<name>@P<n>` (the same metric from a prefix of n tokens),
`robustness.<attack family>.<name>` (memaudit stress: what survives an attack on the model), and
`<metric>_vs_oracle` (memaudit report: the metric minus the oracle's, on the same records)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache, partial

import numpy as np

from memaudit.common.errors import MemauditError
from memaudit.common.validation import did_you_mean
from memaudit.probes.config import ATTACKS, FAMILIES, GROUPS, ScanConfig
from memaudit.probes.inputs import MetricInputs, difference, relative
from memaudit.probes.stats import Statistic, mean

FPR_LEVELS = {"1%": 0.01, "0.1%": 0.001}  # reported TPRs: `privacy.mia.<attack>.tpr@1%fpr`, ...
# Below about 1 / FPR non-members a TPR at that FPR rests on the one highest non-member score (or on none
# at all): its entry then carries a `note` saying so, and every view warns (report/verdict.py).
MIN_NONMEMBERS = {label: round(1 / fpr) for label, fpr in FPR_LEVELS.items()}
# Who a relative metric is measured against. Reports recompute the first two against their
# reference model; `retrained` needs a model never trained on the members (MUSE's retrained
# model), which only `scan model --reference` can promise.
AGAINST = {
    "reference": "a reference model: scan --reference, or a report's reference",
    "standard": "the standard model (in a report: its reference)",
    "retrained": "a reference never trained on the members (scan --reference)",
    "before": "the model before the attack and the standard model (memaudit stress --standard)",
    "oracle": "the oracle, retrained without the members (memaudit report --oracle RUN, or its one no-repeats run)",
}
REPORT_AGAINST = ("reference", "standard")
ORACLE = "oracle"  # the role of the oracle-relative metrics, computed by reports (report/oracle.py), never by a scan
# How far a membership AUC may lie from where it should be (chance, or the oracle's AUC) before a
# report calls it a leak, or says a removal differs from retraining.
MIA_MARGIN = 0.05
# The margin around the oracle's value within which a report's verdict per family calls a removal's
# difference "like retraining" (report/oracle.py): the exact extraction rate (a share of members),
# every attack's membership AUC, the validation loss (nats, one-sided: 0.05 nats is about 5% perplexity).
ORACLE_MARGINS = {"extraction": 0.05, "membership": MIA_MARGIN, "capability": 0.05}
PARETO_AXES = ("memorization", "capability")

Compute = Callable[[MetricInputs], "dict | None"]  # {value, n, ci95?, by_repeats?}, None = not measured


@dataclass(frozen=True)
class Leak:
    """When a headline value says "this model leaks": it lies more than `margin` beyond `safe`,
    the value of a model that leaks nothing, in the metric's bad direction (either side for a
    closer-to-ideal metric), and, if `significant`, its 95% interval excludes `safe` too.
    `low_side`: for a closer-to-ideal metric, what a value below `safe` means, which a reader
    might otherwise take for a success (an AUC below chance)."""

    safe: float
    margin: float = 0.0
    significant: bool = False
    low_side: str = ""

    def test(self, higher_is_better: bool | None, entry: dict) -> bool:
        v = entry.get("value")
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        off = {True: self.safe - v, False: v - self.safe, None: abs(v - self.safe)}[higher_is_better]
        ci = entry.get("ci95")
        return off > self.margin and not (self.significant and ci and ci[0] <= self.safe <= ci[1])

    def describe(self, higher_is_better: bool | None) -> str:
        """The condition in words: `above 0`, `more than 0.05 away from 0.5 ...`."""
        side = {True: "below", False: "above", None: "away from"}[higher_is_better]
        beyond = f"more than {self.margin:g} {side} {self.safe:g}" if self.margin else f"{side} {self.safe:g}"
        if higher_is_better is None:
            beyond += " (on either side)"
        return beyond + (f" and its 95% interval excludes {self.safe:g}" if self.significant else "")


@dataclass(frozen=True)
class Headline:
    """A metric every summary view shows, under a short `label`. `top_level`: the view shows the
    value at the highest repeat level (where memorization is clearest) instead of the overall one."""

    label: str
    top_level: bool = False
    leak: Leak | None = None


@dataclass(frozen=True)
class Metric:
    """One reported number: what it is (name, group, direction, meaning), how it is computed
    from a scan (`compute`), and the roles views give it."""

    name: str
    group: str
    higher_is_better: bool | None  # None: neither; closer to `ideal` is better (or no direction)
    meaning: str  # one line, shown beside the number in reports
    compute: Compute = field(repr=False, compare=False)
    ideal: float | None = None
    against: str | None = None  # a key of AGAINST: computed only when that model's metrics are given
    headline: Headline | None = None
    pareto: str | None = None  # a key of PARETO_AXES: an axis of the memorization-vs-capability view
    documented_as: str | None = None  # the family name docs/metrics.md lists it under (the sweep)

    @property
    def arrow(self) -> str:
        """The direction as a reader wants it: ↑ higher is better, ↓ lower, →x closer to x."""
        if self.higher_is_better is None:
            return f"→{self.ideal:g}" if self.ideal is not None else "·"
        return "↑" if self.higher_is_better else "↓"

    def entry(self, result: dict) -> dict:
        """A computed result as results.json stores it: value, n, ci95, then the metadata a reader
        of the file needs without this registry, then by_repeats if any level was measured."""
        out = {k: v for k, v in result.items() if k != "by_repeats"}
        out |= {"higher_is_better": self.higher_is_better, "group": self.group}
        if self.ideal is not None:
            out["ideal"] = self.ideal
        if result.get("by_repeats"):
            out["by_repeats"] = result["by_repeats"]
        return out

    def leaks(self, entry: dict) -> bool:
        leak = self.headline.leak if self.headline else None
        return leak is not None and leak.test(self.higher_is_better, entry)


def at_prefix(name: str, prefix_len: int) -> str:
    """A metric (or sequence-row key) at another prefix length of the sweep:
    `extraction.exact_rate@P8`, `exact@P8`. The plain name is the headline at the suite's
    `prefix_len` (default 32), which the sweep does not repeat."""
    return f"{name}@P{prefix_len}"


@dataclass(frozen=True)
class Sweep:
    """The family `<extraction metric>@P<n>`: each swept metric again from a true prefix of n
    tokens, for every n of the suite's `prefix_lens` but the headline `prefix_len`. Its members
    are derived from their base metric, so any n has a name, a direction and a meaning."""

    row_keys: dict[str, str] = field(default_factory=dict)  # swept metric -> the row key it averages

    def derive(self, name: str) -> Metric | None:
        """The member called `name`, None if `name` is not a swept metric at some prefix."""
        base, _, p = name.partition("@P")
        return self._member(base, int(p)) if p.isdigit() and base in self.row_keys else None

    def expand(self, config: ScanConfig) -> list[Metric]:
        """The members a scan with `config` computes, prefix by prefix."""
        return [
            get_metric(at_prefix(base, p))
            for p in config.prefix_lens
            if p != config.prefix_len
            for base in self.row_keys
        ]

    def templates(self) -> list[Metric]:
        """One entry per swept metric, named by the family's pattern, for listings and docs."""
        return [self._member(base, None) for base in self.row_keys]

    def _member(self, base: str, n: int | None) -> Metric:
        """The member at prefix n; n None: the family's template, named by its pattern."""
        m, template = REGISTRY[base], f"{base}@P<n>"
        if n is None:
            name, compute = template, _family_template
        else:
            name, compute = at_prefix(base, n), _mean_over_members(at_prefix(self.row_keys[base], n), extracted_at=n)
        meaning = f"{m.meaning.removesuffix('.')} (prefix of {'n' if n is None else n} tokens)."
        return Metric(name, m.group, m.higher_is_better, meaning, compute, ideal=m.ideal, documented_as=template)


def _family_template(x: MetricInputs) -> None:
    """A family's template stands for its members in listings and docs; it is never measured."""
    return None


REGISTRY: dict[str, Metric] = {}  # every concrete metric, with the default sweep's members
_ITEMS: list[Metric | Sweep] = []  # registration order: the order scans compute and views list
SWEEP = Sweep()


def register(m: Metric) -> Metric:
    """Adds a metric; its name, group and roles are checked here, once, at import."""
    checks = [
        (m.group in GROUPS, f"unknown group {m.group!r}"),
        (m.name.startswith(f"{m.group}."), f"the name must start with its group {m.group!r}"),
        (m.name not in REGISTRY, "registered twice"),
        (m.against in (None, *AGAINST), f"against must be one of {', '.join(AGAINST)}"),
        (m.pareto in (None, *PARETO_AXES), f"pareto must be one of {', '.join(PARETO_AXES)}"),
    ]
    for ok, problem in checks:
        if not ok:
            raise ValueError(f"metric {m.name}: {problem}")
    REGISTRY[m.name] = m
    _ITEMS.append(m)
    return m


def metric(
    name: str, group: str, higher_is_better: bool | None, meaning: str, **options
) -> Callable[[Compute], Compute]:
    """Registers the decorated function as the computation of metric `name` (options: the other
    fields of `Metric`)."""

    def add(compute: Compute) -> Compute:
        register(Metric(name, group, higher_is_better, meaning, compute, **options))
        return compute

    return add


@cache
def _derived(name: str) -> Metric | None:
    """A sweep member by name (one object per name), None for any other name."""
    return SWEEP.derive(name)


def get_metric(name: str) -> Metric:
    """A registered metric; sweep names (`<extraction metric>@P<n>`) for any n are derived here."""
    m = REGISTRY.get(name) or _derived(name)
    if m is not None:
        return m
    hint = did_you_mean(name, REGISTRY, cutoff=0.5) or f"known metrics: {', '.join(sorted(REGISTRY))}"
    raise MemauditError(f"unknown metric {name!r}; {hint}")


def known(name: str) -> Metric | None:
    """The registry's entry, None for a metric this version does not know (a newer scan's)."""
    try:
        return get_metric(name)
    except MemauditError:
        return None


def is_swept(name: str) -> bool:
    return _derived(name) is not None


def listed() -> Iterator[Metric]:
    """Every metric as docs and listings show it: registration order, the sweep as its templates."""
    for item in _ITEMS:
        yield from item.templates() if isinstance(item, Sweep) else [item]


def headline_metrics() -> list[Metric]:
    return [m for m in REGISTRY.values() if m.headline]


def pareto_axes() -> tuple[str, tuple[str, ...]]:
    """(capability metric on x, memorization metrics on y) of the Pareto view."""
    (x,) = [name for name, m in REGISTRY.items() if m.pareto == "capability"]
    return x, tuple(name for name, m in REGISTRY.items() if m.pareto == "memorization")


def report_relative() -> list[Metric]:
    """The metrics a comparative report recomputes against its reference model."""
    return [m for m in REGISTRY.values() if m.against in REPORT_AGAINST]


def vs_oracle(name: str) -> str:
    """The name of a metric's difference from the oracle's: `privacy.mia.loss.auc_vs_oracle`."""
    return f"{name}_vs_oracle"


def oracle_relative() -> list[Metric]:
    """The metrics a report computes of a model against the oracle (report/oracle.py)."""
    return [m for m in REGISTRY.values() if m.against == ORACLE]


def compute_all(inputs: MetricInputs, metrics: list[Metric] | None = None) -> dict[str, dict]:
    """Every metric (default: all a scan with `inputs.config` computes) that `inputs` measure, in
    registry order. One whose inputs are absent (a model it is measured against, canaries,
    validation text, an attack or a sweep prefix the suite did not run) is left out."""
    if metrics is None:
        metrics = [m for item in _ITEMS for m in (item.expand(inputs.config) if isinstance(item, Sweep) else [item])]
    out = {}
    for m in metrics:
        if m.against is not None and m.against not in inputs.others:
            continue
        result = m.compute(inputs)
        if result is not None:
            out[m.name] = inputs.computed[m.name] = m.entry(result)
    return out


# The metrics ---------------------------------------------------------------------------------
# Each computation reads MetricInputs (inputs.py): `x.members`, `x.nonmembers`, `x.text` (both),
# `x.canaries`, `x.valid`, `x.computed` (earlier metrics), `x.others[<against>]`.


def _mean_over_members(key: str, extracted_at: int | None = None) -> Compute:
    """The mean of a row key over members, with its by-level means. `extracted_at`: a sweep
    prefix, measured only if the scan ran extraction at it."""

    def compute(x: MetricInputs) -> dict | None:
        if extracted_at is not None and not any(at_prefix("exact", extracted_at) in r for r in x.text):
            return None
        return x.mean_by_level(key, x.members)

    return compute


def _relative_to(base: str, f: Callable[[float, float], float], against: str) -> Compute:
    """f(this model's `base`, the other model's `base`)."""

    def compute(x: MetricInputs) -> dict | None:
        other = x.others[against]
        return relative(x.computed[base], other[base], f) if base in x.computed and base in other else None

    return compute


_ABOVE_ZERO = Leak(safe=0.0)


@metric(
    "memorization.member_loss",
    "memorization",
    True,
    "Mean token NLL on planted member sequences (higher: less memorized).",
    headline=Headline("member loss"),
    pareto="memorization",
)
def _member_loss(x: MetricInputs) -> dict:
    return x.mean_by_level("loss", x.members)


@metric(
    "memorization.nonmember_loss",
    "memorization",
    None,
    "Mean token NLL on length-matched held-out sequences never trained on.",
)
def _nonmember_loss(x: MetricInputs) -> dict:
    return x.mean_by_level("loss", x.nonmembers, by_level=False)


@metric(
    "memorization.loss_gap",
    "memorization",
    False,
    "Non-member loss minus member loss: 0 means no memorization signal.",
)
def _loss_gap(x: MetricInputs) -> dict:
    gap: Statistic = lambda non, mem: mean(non) - mean(mem)  # noqa: E731
    held_out = x.values(x.nonmembers, "loss")
    return {
        **x.summary([held_out, x.values(x.members, "loss")], gap),
        "by_repeats": {
            str(lv): x.summary([held_out, x.values(x.at_level(x.members, lv), "loss")], gap)
            for lv in x.levels
            if lv > 0
        },
    }


metric(
    "memorization.forgetting",
    "memorization",
    True,
    "Member loss minus the reference model's member loss: with the pre-unlearning model as reference, "
    "how much fit was removed.",
    against="reference",
)(_relative_to("memorization.member_loss", lambda v, r: v - r, "reference"))


@metric(
    "memorization.gap_closed",
    "memorization",
    None,
    "Fraction of the standard model's loss gap removed: (member_loss - standard member_loss) / standard loss_gap.",
    ideal=1.0,
    against="standard",
    headline=Headline("gap closed"),
)
def _gap_closed(x: MetricInputs) -> dict | None:
    member, nonmember, standard = "memorization.member_loss", "memorization.nonmember_loss", x.others["standard"]
    if member not in x.computed or member not in standard or nonmember not in standard:
        return None
    held_out = standard[nonmember]["value"]
    closed = lambda v, r: (v - r) / (held_out - r) if held_out != r else math.nan  # noqa: E731
    return relative(x.computed[member], standard[member], closed)


def _extraction(name: str, row_key: str, meaning: str, **options) -> None:
    """An extraction metric: the mean of a sequence-row verdict over members, also swept."""
    metric(name, "extraction", False, meaning, **options)(_mean_over_members(row_key))
    SWEEP.row_keys[name] = row_key


# Extraction: S = suffix_len tokens after a true prefix of P = prefix_len tokens (32 and 32 by
# default), members only in the headline value; by_repeats["0"] is the held-out baseline.
_extraction(
    "extraction.exact_rate",
    "exact",
    "Fraction of members whose suffix greedy decoding reproduces exactly from the true prefix.",
    headline=Headline("exact @top", top_level=True, leak=_ABOVE_ZERO),
    pareto="memorization",
)


@metric(
    vs_oracle("extraction.exact_rate"),
    "extraction",
    None,
    "extraction.exact_rate minus the oracle's on the same members (paired bootstrap); 0 = like retraining; "
    f"a report's extraction verdict: within ±{ORACLE_MARGINS['extraction']:g} matches retraining.",
    ideal=0.0,
    against=ORACLE,
)
def _exact_rate_vs_oracle(x: MetricInputs) -> dict | None:
    mine, oracle = x.paired_values(ORACLE, "exact", member=True)
    return x.summary([mine], mean, minus=[oracle]) if len(mine) else None


_extraction(
    "extraction.token_match",
    "token_match",
    "Mean fraction of suffix tokens that greedy decoding gets right (teacher-forced).",
)
_extraction(
    "extraction.prefix_match_len",
    "prefix_match_len",
    "Mean number of suffix tokens greedy decoding reproduces right after the prefix, before its first miss.",
)
_extraction(
    "extraction.strength",
    "strength",
    "Mean 1 - (smallest offset from which greedy decoding reproduces the rest of the suffix) / suffix length.",
)
_extraction(
    "extraction.np_discoverable",
    "np_discoverable",
    "Fraction of members that n top-k samples would reproduce exactly with probability >= p (defaults 100, 0.5, k=40).",
)


@metric(
    "extraction.sampling_rate",
    "extraction",
    False,
    "Fraction of members for which at least one of n sampled continuations (top-k 40, temperature 1) "
    "is the exact suffix.",
)
def _sampling_rate(x: MetricInputs) -> dict | None:
    # Not swept: it needs real sampling (generation), so it runs at the headline prefix only.
    return x.mean_by_level("sampled_exact", x.members) if any("sampled_exact" in r for r in x.members) else None


_ITEMS.append(SWEEP)
# The default sweep's members, so that REGISTRY names every metric a default scan can report.
REGISTRY.update({at_prefix(b, p): get_metric(at_prefix(b, p)) for p in ScanConfig.prefix_lens for b in SWEEP.row_keys})


def too_few_nonmembers(n: int, label: str) -> str:
    """The note of a TPR at `label` FPR measured on only `n` non-members."""
    return (
        f"{n:,} non-members are too few for a true-positive rate at {label} false positives to mean anything "
        f"(it needs about {MIN_NONMEMBERS[label]:,} or more)"
    )


def _mia(attack: str, fpr: float | None) -> Compute:
    """AUC (fpr None) or TPR at `fpr` of the attack's member scores against the non-members', by
    member level against all non-members. Scores are oriented higher = more member-like. A TPR on
    fewer non-members than MIN_NONMEMBERS asks for carries a `note` (too_few_nonmembers)."""

    def compute(x: MetricInputs) -> dict | None:
        # membership.py imports the scoring pass (torch): loaded only when a scan computes.
        from memaudit.probes.membership import auc, tpr_at_fpr

        key = f"mia_{attack}"
        members, nonmembers = x.values(x.members, key), x.values(x.nonmembers, key)
        if attack not in x.config.mia_attacks or not len(members) or not len(nonmembers):
            return None  # `ref` without a reference
        stat: Statistic = auc if fpr is None else partial(tpr_at_fpr, fpr=fpr)
        levels = sorted({r["repeats"] for r in x.members})
        label = next((lab for lab, f in FPR_LEVELS.items() if f == fpr), None)
        few = label is not None and len(nonmembers) < MIN_NONMEMBERS[label]
        return {
            **x.summary([members, nonmembers], stat),
            **({"note": too_few_nonmembers(len(nonmembers), label)} if few else {}),
            "by_repeats": {
                str(lv): x.summary([x.values(x.at_level(x.members, lv), key), nonmembers], stat) for lv in levels
            },
        }

    return compute


def _mia_vs_oracle(attack: str, fpr: float | None) -> Compute:
    """AUC (fpr None) or TPR at `fpr` of the attack minus the oracle's, on the records both models
    scored (members against non-members), with a paired interval: each bootstrap resample draws
    the same records for both models."""

    def compute(x: MetricInputs) -> dict | None:
        from memaudit.probes.membership import auc, tpr_at_fpr

        key = f"mia_{attack}"
        (members, oracle_members), (nonmembers, oracle_nonmembers) = (
            x.paired_values(ORACLE, key, member) for member in (True, False)
        )
        if not len(members) or not len(nonmembers):
            return None
        stat: Statistic = auc if fpr is None else partial(tpr_at_fpr, fpr=fpr)
        label = next((lab for lab, f in FPR_LEVELS.items() if f == fpr), None)
        few = label is not None and len(nonmembers) < MIN_NONMEMBERS[label]
        return {
            **x.summary([members, nonmembers], stat, minus=[oracle_members, oracle_nonmembers]),
            **({"note": too_few_nonmembers(len(nonmembers), label)} if few else {}),
        }

    return compute


# Membership inference, one family per attack (membership.py and the modules beside it compute each score).
@dataclass(frozen=True)
class AttackDoc:
    """A membership attack as docs/metrics.md defines it: `meaning` completes "by ..." in its
    metrics' one-line meanings; `score` is its formula (oriented higher = more member-like);
    `parameters`, `inputs` (what it reads besides the scoring pass), `runs` (which suites) and
    `source` (the paper, the implementation followed, and where memaudit differs)."""

    meaning: str
    score: str
    parameters: str = "none"
    inputs: str = "the scoring pass"
    runs: str = "every suite (the one scoring pass)"
    source: str = ""


_Z = "Z(x) = the byte length of zlib.compress(UTF-8 of x) (default level), x the text that was scored: the decoded scored tokens when the text was cut to the model's context"
ATTACK_DOCS = {
    "loss": AttackDoc(
        "mean token NLL",
        "-(1/n) sum_i NLL_i, over the n text tokens, each predicted from the boundary token and the text before it",
        source="Yeom et al. 2018; equal to MIMIR's and OpenUnlearning's loss attack on the same token ids.",
    ),
    "zlib": AttackDoc(
        "mean token NLL over zlib-compressed bytes",
        f"-((1/n) sum_i NLL_i) / Z(x); {_Z}",
        source="Carlini et al. 2021 (the perplexity's log over the zlib entropy), as MIMIR and OpenUnlearning compute it. "
        "Its numerator is a mean and its denominator grows with the text, so it also ranks by length: `zlib_total` "
        "is the length-free ratio.",
    ),
    "zlib_total": AttackDoc(
        "total NLL over zlib-compressed bytes",
        f"-(sum_i NLL_i) / Z(x); {_Z}",
        source="memaudit's `zlib` before it followed the literature, kept under its own name: the model's code length "
        "(nats) over zlib's (bytes), free of the text's length, and what earlier runs and gates called `zlib`.",
    ),
    "mink": AttackDoc(
        "Min-K% (mean of the lowest k% token log-probs, k = 20% by default)",
        "the mean of the lowest max(1, floor(k n)) of the n token log-probs log p_i",
        "k = `mink_k` (0.2)",
        source="Shi et al. 2024 (Min-K% Prob).",
    ),
    "minkpp": AttackDoc(
        "Min-K%++ (lowest k% of log-probs standardized by the model's own distribution)",
        "the mean of the lowest max(1, floor(k n)) of (log p_i - mu_i) / sigma_i, mu_i and sigma_i the mean and "
        "standard deviation of log p under the model's next-token distribution at i",
        "k = `mink_k` (0.2)",
        source="Zhang et al. 2024 (Min-K%++).",
    ),
    "dcpdd": AttackDoc(
        "DC-PDD (token probabilities calibrated by token frequencies in a reference corpus)",
        "(1/|F|) sum_{i in F} min(p_i log(1 / f(t_i)), a), F the first occurrence of each distinct token of the text, "
        "p_i the model's probability of token t_i, f(t) = (c_t + 1) / (sum_t c_t + V) the token's Laplace-smoothed "
        "frequency in the reference corpus (counts c, vocabulary size V)",
        "a = `dcpdd_a` (0.01, MIMIR's default)",
        "token counts of a local reference corpus in the model's tokenizer, never downloaded: by default the data "
        "dir's natural training text (train.jsonl rows of kind natural; with --audit, the --valid texts), or "
        "`scan model --frequencies FILE` (the file format below); not measured without either",
        source="Zhang et al., EMNLP 2024, as MIMIR's `dc_pdd.py` computes it (first occurrences, the cap a, Laplace "
        "smoothing). Differences: MIMIR downloads 15 C4 shards and counts each text tokenized with special tokens "
        "and cut at 1,024 tokens; memaudit counts a local corpus without special tokens or truncation.",
    ),
    "ref": AttackDoc(
        "NLL minus a reference model's NLL",
        "NLL_ref(x) - NLL(x), both mean token NLLs",
        inputs="`scan model --reference MODEL`, scanned on the same audit set first",
        runs="every suite, when a reference is given",
        source="Carlini et al. 2021 (reference-model calibration).",
    ),
    "rmia": AttackDoc(
        "RMIA (likelihood ratio against reference models, compared with population texts)",
        "(1/|Z|) sum_{z in Z} 1[LR(x) / LR(z) > gamma], LR(x) = Pr(x|theta) / Pr(x), Pr(x|theta) = exp(-mean NLL(x)) "
        "(the geometric-mean token probability, as privacy-meter scores LMs), Pr(x) = ((1 + a) mean_r Pr(x|theta_r) "
        "+ (1 - a)) / 2 over the reference models r (the offline approximation); Z the population texts",
        "gamma = `rmia_gamma` (1), a = `rmia_offline_a` (0.3): privacy-meter's `run_rmia` defaults (the paper tunes a "
        "on a pair of reference models); a = 1 uses the references' likelihood as it is",
        "one or more reference models with the model's tokenizer that never saw the members (`scan model "
        "--rmia-reference MODEL`, repeatable), and population texts that are neither scored member nor non-member: "
        "the data dir's validation texts (with --audit, the --valid texts), less any audited text",
        "every suite, when reference models are given (`rmia` is in `mia_attacks` by default)",
        "Zarifzadeh et al., ICML 2024, offline, as privacy-meter's `modules/mia/attacks/rmia.py` computes it. Train a "
        "reference with memaudit on the same data dir without the members: `memaudit train --data DATA --no-repeats "
        "--seed 1 --out models/rmia-ref`. It must not be the oracle a report judges against (the no-repeats model "
        "scanned beside the others), or the oracle is measured with itself.",
    ),
    "recall": AttackDoc(
        "ReCaLL (the change in log-likelihood after a prefix of known non-members)",
        "LL(x | P) / LL(x) = NLL(x | P) / NLL(x), both mean NLLs over the same text tokens, the text (with its "
        "boundary token) after a prefix P: the last R tokens of known non-member texts, each as [boundary] + tokens, "
        "R = the model's context - the longest audited sequence; one P for every text",
        inputs="known non-member text that is not audited: the data dir's validation texts (with --audit, the --valid "
        "texts); a scan is refused when the context leaves no room for any prefix",
        runs="the `full` suite, or a suite that lists it: a forward pass of its own (P's key-value cache reused)",
        source="Xie et al., EMNLP 2024. MIMIR joins whole non-member texts (shots) as strings; memaudit joins their "
        "tokens with the boundary token, as documents are packed in training, and fills the context from the end.",
    ),
    "gradnorm": AttackDoc(
        "GradNorm (the gradient norm of the text's loss)",
        "-(1/|T|) sum_{t in T} ||dL(x)/dt||_2, L(x) the mean token NLL, T the model's parameter tensors, in the "
        "weights' dtype",
        "p = 2 (OpenUnlearning's; MIMIR's default is p = inf)",
        inputs="the model's gradients: a MemSink model in sink mode `own` is refused",
        runs="the `full` suite, or a suite that lists it: per-text gradients (torch.func vmap over grad, in chunks); "
        "refused before the scan when one text's gradient does not fit in memory",
        source="as OpenUnlearning defines it (`mia/gradnorm.py`): the mean over parameter tensors of each tensor's "
        "gradient norm, negated.",
    ),
}
assert set(ATTACK_DOCS) == set(ATTACKS)
# The attack MIMIR has that memaudit does not, and why (docs/metrics.md).
ABSENT_ATTACKS = {
    "neighbourhood": "the neighbourhood attack (Mattern et al. 2023) compares a text's loss with that of 25 or more "
    "neighbours made by a second, mask-filling model (MIMIR uses T5 or BERT), each neighbour scored by the model "
    "too. A scan reads causal language models only, so there is no mask-filling model to make neighbours with "
    "offline; it is left out rather than run with a stand-in.",
}
_ATTACK_MEANINGS = {name: doc.meaning for name, doc in ATTACK_DOCS.items()}
# Two-sided: an AUC far below chance is no success. Members then stand out by being fitted *worse*
# than comparable text, the mark of over-unlearning, and an attacker who flips the score reads
# membership just as well (OpenUnlearning issue #167).
_MIA_LEAK = Leak(
    safe=0.5,
    margin=MIA_MARGIN,
    significant=True,
    low_side="below chance: over-unlearning, members stand out by their unusually high loss",
)
# Against the oracle: an AUC as far from the oracle's as _MIA_LEAK allows from chance, on either side.
_MIA_VS_ORACLE_LEAK = Leak(
    safe=0.0,
    margin=MIA_MARGIN,
    significant=True,
    low_side="below the oracle: members are fitted worse than retraining fits them (over-unlearning)",
)
for _attack in ATTACKS:
    _by = _ATTACK_MEANINGS[_attack]
    metric(
        f"privacy.mia.{_attack}.auc",
        "privacy",
        None,
        f"ROC-AUC of members vs held-out non-members by {_by}; 0.5 = no leak.",
        ideal=0.5,
        # the loss attack is the headline: every scan has it (ref needs a reference)
        headline=Headline("MIA AUC", leak=_MIA_LEAK) if _attack == "loss" else None,
    )(_mia(_attack, None))
    for _label, _fpr in FPR_LEVELS.items():
        metric(
            f"privacy.mia.{_attack}.tpr@{_label}fpr",
            "privacy",
            False,
            f"Members flagged by {_by} at {_label} false positives; chance level is {_fpr:g}.",
        )(_mia(_attack, _fpr))
    metric(
        vs_oracle(f"privacy.mia.{_attack}.auc"),
        "privacy",
        None,
        f"privacy.mia.{_attack}.auc minus the oracle's on the same records (paired bootstrap); 0 = like retraining; "
        f"a report's membership verdict: every attack within ±{ORACLE_MARGINS['membership']:g} matches retraining.",
        ideal=0.0,
        against=ORACLE,
        # with an oracle, the loss attack's leak rule is measured against retraining instead of chance
        headline=Headline("AUC vs oracle", leak=_MIA_VS_ORACLE_LEAK) if _attack == "loss" else None,
    )(_mia_vs_oracle(_attack, None))
    for _label, _fpr in FPR_LEVELS.items():
        metric(
            vs_oracle(f"privacy.mia.{_attack}.tpr@{_label}fpr"),
            "privacy",
            None,
            f"privacy.mia.{_attack}.tpr@{_label}fpr minus the oracle's on the same records (paired bootstrap); "
            "0 = like retraining.",
            ideal=0.0,
            against=ORACLE,
        )(_mia_vs_oracle(_attack, _fpr))


BLIND_WARN_ABOVE = 0.6  # a blind baseline above this: the member and non-member texts differ (Das et al. 2024)


@metric(
    "privacy.blind_baseline_auc",
    "privacy",
    None,
    "ROC-AUC of a model-free bag-of-words classifier (logistic regression, cross-validated) telling members "
    f"from held-out texts; above {BLIND_WARN_ABOVE:g} the two sets differ, and membership AUCs may measure that shift.",
    ideal=0.5,
)
def _blind_baseline(x: MetricInputs) -> dict | None:
    """From each text's out-of-fold score `blind` (blind.py): no model is involved."""
    from memaudit.probes.membership import auc

    members, nonmembers = x.values(x.members, "blind"), x.values(x.nonmembers, "blind")
    return x.summary([members, nonmembers], auc) if len(members) and len(nonmembers) else None


@metric(
    "privacy.privleak",
    "privacy",
    None,
    "MUSE PrivLeak: (AUC - reference AUC) / reference AUC x 100 for the suite's privleak attack; "
    "0 = like the reference.",
    ideal=0.0,
    against="retrained",
)
def _privleak(x: MetricInputs) -> dict | None:
    name = f"privacy.mia.{x.config.privleak_attack}.auc"
    return _relative_to(name, lambda v, r: (v - r) / r * 100, "retrained")(x)


@metric(
    "privacy.exposure",
    "privacy",
    False,
    "Mean canary exposure in bits, log2|R| - log2(rank), over trained canaries; level 0 = never-trained canaries.",
    headline=Headline("exposure"),
)
def _exposure(x: MetricInputs) -> dict | None:
    if not x.canaries:
        return None
    levels = sorted({r["repeats"] for r in x.canaries})
    return {
        **x.summary([x.values([r for r in x.canaries if r["member"]], "exposure")], mean),
        "by_repeats": {str(lv): x.summary([x.values(x.at_level(x.canaries, lv), "exposure")], mean) for lv in levels},
    }


@metric(
    "capability.valid_loss",
    "capability",
    False,
    "Token-level mean NLL on clean held-out text of the training distribution.",
    headline=Headline("valid loss"),
    pareto="capability",
)
def _valid_loss(x: MetricInputs) -> dict | None:
    """Pooled over tokens; the bootstrap resamples whole documents."""
    if not x.valid:
        return None
    nll, tokens = (np.array(column) for column in zip(*x.valid))

    def pooled(idx: np.ndarray) -> np.ndarray | float:
        docs = idx.astype(int)
        return nll[docs].sum(axis=-1) / tokens[docs].sum(axis=-1)

    return x.summary([np.arange(len(x.valid))], pooled)


@metric(
    "capability.valid_ppl",
    "capability",
    False,
    "Token-level perplexity exp(valid_loss), each document scored whole from its boundary token.",
)
def _valid_ppl(x: MetricInputs) -> dict | None:
    loss = x.computed.get("capability.valid_loss")
    if loss is None:
        return None
    out = {"value": math.exp(loss["value"]), "n": loss["n"]}
    if "ci95" in loss:
        out["ci95"] = [math.exp(v) for v in loss["ci95"]]
    return out


metric(
    "capability.degradation",
    "capability",
    False,
    "valid_loss minus the reference model's valid_loss: capability lost (e.g. to unlearning).",
    against="reference",
    headline=Headline("Δ valid"),
)(_relative_to("capability.valid_loss", lambda v, r: v - r, "reference"))


@metric(
    vs_oracle("capability.valid_loss"),
    "capability",
    False,
    "valid_loss minus the oracle's (nats; below 0: better than retraining); the interval treats the two "
    "losses as independent (a report keeps no per-document validation losses to pair); a report's capability "
    f"verdict: at most +{ORACLE_MARGINS['capability']:g} matches retraining (one-sided: better is no failure).",
    against=ORACLE,
)
def _valid_loss_vs_oracle(x: MetricInputs) -> dict | None:
    name, oracle = "capability.valid_loss", x.others[ORACLE]
    return difference(x.computed[name], oracle[name]) if name in x.computed and name in oracle else None


# Robustness (memaudit stress): what an attack on the model leaves of a removal. `x.attack` is the
# attack's record; `x.others["before"]` holds the metrics of the model before the attack and
# `x.others["standard"]` the standard model's, both on the rows the attacked model was scanned on
# (for relearn:forget-half, the members it did not relearn).
MIN_CLOSED = 0.05  # a model that closed less of the gap than this before the attack has nothing to retain
_GAP = "memorization.gap_closed"


def _retained(family: str) -> Compute:
    """Gap closed after the attack over gap closed before it, overall and level by level."""

    def compute(x: MetricInputs) -> dict | None:
        before = x.others["before"].get(_GAP)
        if (x.attack or {}).get("family") != family or before is None or _GAP not in x.computed:
            return None
        kept = relative(x.computed[_GAP], before, lambda a, b: a / b if b >= MIN_CLOSED else math.nan)
        if not math.isfinite(kept["value"]):
            return None
        return {**kept, "before": before["value"], "after": x.computed[_GAP]["value"]}

    return compute


for _family, _what in FAMILIES.items():
    metric(
        f"robustness.{_family}.gap_closed_retained",
        "robustness",
        True,
        f"Share of the gap closed (against the standard model) that survives {_what}: gap closed after / before; "
        f"1 = all of it, 0 = memorization fully back; not measured below {MIN_CLOSED:g} closed before.",
        against="before",
    )(_retained(_family))


@metric(
    "robustness.relearn_steps_to_recover",
    "robustness",
    True,
    "Relearning steps until member loss (of the members not relearned) is back within recover_margin (0.1) of the "
    "standard model's loss gap of its member loss; null, shown > STEPS, when not within the budget.",
    against="before",
)
def _steps_to_recover(x: MetricInputs) -> dict | None:
    """The first evaluation point of the relearning curve at or below the target loss."""
    attack, standard = x.attack or {}, x.others.get("standard", {})
    member, held_out = (standard.get(f"memorization.{k}_loss", {}).get("value") for k in ("member", "nonmember"))
    if not attack.get("curve") or member is None or held_out is None:
        return None
    target = member + attack["recover_margin"] * (held_out - member)
    step = next((p["step"] for p in attack["curve"] if p["member_loss"] <= target), None)
    budget = attack["curve"][-1]["step"]
    return {"value": step, "n": attack["measured_members"], "within_budget": step is not None, "budget": budget}
