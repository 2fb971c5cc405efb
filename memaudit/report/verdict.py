"""The answer a report leads with: which models leak, by the leak rules of the registry's headline
metrics (an exact extraction, a membership attack far from chance), and which are on a Pareto
front of memorization against capability. Every view (HTML, Markdown, terminal) shows the same
verdicts, computed here from the results document alone."""

from __future__ import annotations

from dataclasses import dataclass

from memaudit.probes.registry import Metric, headline_metrics, known
from memaudit.report.document import runs, value


@dataclass(frozen=True)
class Evidence:
    """One headline metric whose leak rule trips for a model."""

    metric: Metric
    entry: dict

    def __str__(self) -> str:
        ci = self.entry.get("ci95")
        return f"{self.metric.name} {value(self.entry):.3f}" + (f" (95% {ci[0]:.3f} – {ci[1]:.3f})" if ci else "")


@dataclass(frozen=True)
class Verdict:
    label: str
    evidence: tuple[Evidence, ...]  # empty: no leak found
    fronts: tuple[str, ...]  # the memorization axes on whose Pareto front the model is
    candidate: bool  # False for the no-repeats oracle: drawn as the target, never on a front

    @property
    def leaks(self) -> bool:
        return bool(self.evidence)


def headline_entry(metrics: dict, m: Metric) -> dict | None:
    """The entry a headline view shows: the metric, or its highest repeat level if the registry
    says so (the clearest memorization signal)."""
    entry = metrics.get(m.name)
    if entry is None or not (m.headline and m.headline.top_level):
        return entry
    levels = entry.get("by_repeats", {})
    return levels[max(levels, key=int)] if levels else None


def _leak_metrics() -> list[Metric]:
    return [m for m in headline_metrics() if m.headline and m.headline.leak]


def leak_rules() -> list[tuple[str, str]]:
    """(metric, the condition under which it says a model leaks), e.g. (`extraction.exact_rate`, `above 0`)."""
    return [(m.name, m.headline.leak.describe(m.higher_is_better)) for m in _leak_metrics()]  # type: ignore[union-attr]


def headline_columns(doc: dict) -> list[Metric]:
    """The registry's headline metrics that some run measured, in registry order."""
    present = {name for run in runs(doc) for name in run["metrics"]}
    return [m for m in headline_metrics() if m.name in present]


def verdicts(doc: dict) -> list[Verdict]:
    """One verdict per run, in the document's order. Metrics measured unlike the baseline's (†)
    still count as evidence of a leak: a leak is a leak on any audit set."""
    pareto = doc.get("pareto", {})
    excluded = set(pareto.get("excluded_kinds", []))
    out = []
    for run in runs(doc):
        evidence = tuple(
            Evidence(m, run["metrics"][m.name])
            for m in _leak_metrics()
            if m.name in run["metrics"] and m.leaks(run["metrics"][m.name])
        )
        fronts = tuple(y for y, front in pareto.get("fronts", {}).items() if run["label"] in front)
        out.append(Verdict(run["label"], evidence, fronts, run["model"].get("kind") not in excluded))
    return out


def axis_label(name: str) -> str:
    """A Pareto axis as the verdict names it: its headline label, else its name."""
    m = known(name)
    return m.headline.label if m and m.headline else name


def front_sentences(doc: dict) -> list[str]:
    """`valid loss vs member loss: a, b` for each front with models on it."""
    pareto = doc.get("pareto", {})
    return [
        f"{axis_label(pareto['x'])} vs {axis_label(y)}: {', '.join(front)}"
        for y, front in pareto.get("fronts", {}).items()
        if front
    ]
