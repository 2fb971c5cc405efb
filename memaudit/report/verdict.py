"""The answer a report leads with: which models leak, by the leak rules of the registry's headline
metrics (an exact extraction, a membership attack far from chance on either side, or from the
oracle where a report has one), and which are on a Pareto front of memorization against
capability; and when the membership numbers cannot be taken at face value (the blind baseline).
Every view (HTML, Markdown, terminal) shows the same verdicts and warnings, computed here from the
results document alone."""

from __future__ import annotations

from dataclasses import dataclass

from memaudit.probes.registry import BLIND_WARN_ABOVE, Metric, headline_metrics, known, vs_oracle
from memaudit.report.document import not_a_removal, oracle_label, runs, value


@dataclass(frozen=True)
class Evidence:
    """One headline metric whose leak rule trips for a model."""

    metric: Metric
    entry: dict

    @property
    def low_side(self) -> str:
        """What the value means when it lies below a two-sided rule's safe value (an AUC below
        chance: over-unlearning, a leak, not a success), else ""."""
        leak = self.metric.headline.leak if self.metric.headline else None
        v = value(self.entry)
        below = leak is not None and self.metric.higher_is_better is None and v is not None and v < leak.safe
        return leak.low_side if below else ""  # type: ignore[union-attr]

    def __str__(self) -> str:
        ci = self.entry.get("ci95")
        text = f"{self.metric.name} {value(self.entry):.3f}" + (f" (95% {ci[0]:.3f} – {ci[1]:.3f})" if ci else "")
        return text + (f", {self.low_side}" if self.low_side else "")


@dataclass(frozen=True)
class Verdict:
    label: str
    evidence: tuple[Evidence, ...]  # empty: no leak found
    fronts: tuple[str, ...]  # the memorization axes on whose Pareto front the model is
    excluded: str = ""  # why the model is no removal (the oracle, a diagnostic mode): never on a front
    note: str = ""  # what else a reader must know to read the model's numbers (guard_note)

    @property
    def leaks(self) -> bool:
        return bool(self.evidence)

    @property
    def candidate(self) -> bool:
        """Whether the model may be a removal method, on a front and judged against retraining."""
        return not self.excluded


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


def _replacements() -> dict[str, str]:
    """Leak rules measured against the oracle, each with the rule against a fixed safe value it
    replaces: {`privacy.mia.loss.auc_vs_oracle`: `privacy.mia.loss.auc`}."""
    out = {}
    for m in _leak_metrics():
        other = known(vs_oracle(m.name))
        if other is not None and other.headline and other.headline.leak:
            out[other.name] = m.name
    return out


def leak_rules_for(metrics: dict) -> list[Metric]:
    """The leak rules that judge a model with these metrics: a rule measured against the oracle,
    where measured, replaces the same metric's rule against its fixed safe value (an AUC against
    retraining rather than against chance)."""
    replaced = {base for name, base in _replacements().items() if name in metrics}
    return [m for m in _leak_metrics() if m.name not in replaced]


def leak_rules(doc: dict) -> list[tuple[str, str]]:
    """(metric, the condition under which it says a model leaks), e.g. (`extraction.exact_rate`,
    `above 0`); a rule against the oracle only where some run of `doc` measured it, saying which
    rule it replaces."""
    present = {name for run in runs(doc) for name in run["metrics"]}
    replaces = _replacements()
    rules = []
    for m in _leak_metrics():
        if m.name in replaces and m.name not in present:
            continue
        rule = m.headline.leak.describe(m.higher_is_better)  # type: ignore[union-attr]
        instead = f" (where measured, instead of the rule on {replaces[m.name]})" if m.name in replaces else ""
        rules.append((m.name, rule + instead))
    return rules


def headline_columns(doc: dict) -> list[Metric]:
    """The registry's headline metrics that some run measured, in registry order."""
    present = {name for run in runs(doc) for name in run["metrics"]}
    return [m for m in headline_metrics() if m.name in present]


def verdicts(doc: dict) -> list[Verdict]:
    """One verdict per run, in the document's order. Metrics measured unlike the baseline's (†)
    still count as evidence of a leak: a leak is a leak on any audit set."""
    pareto = doc.get("pareto", {})
    out = []
    for run in runs(doc):
        evidence = tuple(
            Evidence(m, run["metrics"][m.name])
            for m in leak_rules_for(run["metrics"])
            if m.name in run["metrics"] and m.leaks(run["metrics"][m.name])
        )
        fronts = tuple(y for y, front in pareto.get("fronts", {}).items() if run["label"] in front)
        excluded = not_a_removal(run, oracle_label(doc))
        out.append(Verdict(run["label"], evidence, fronts, excluded, guard_note(run)))
    return out


def guard_note(run: dict) -> str:
    """Why an unlearned model can score like its input: its max-degradation guard stopped the run
    and kept the last state within the limit, which may be the input itself ("" otherwise, and
    for an attacked model, memaudit stress: the record is of the model before the attack)."""
    trained = run["model"].get("trained") or {}
    if not trained.get("stopped_early") or run.get("attack"):
        return ""
    kept = trained.get("steps_done") or 0
    state = "the input model unchanged" if kept == 0 else f"the state after {kept} of {trained.get('steps')} steps"
    return f"unlearning was stopped by the max-degradation guard ({trained.get('stop_reason')}); this model is {state}"


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


BLIND = "privacy.blind_baseline_auc"


def shift_warnings(doc: dict) -> list[str]:
    """One line per audit set on which the blind baseline (a classifier of the texts alone) tells
    members from non-members better than BLIND_WARN_ABOVE: the membership numbers of the models
    scanned on it may measure a distribution shift between the two sets, not memorization."""
    flagged: dict[str, tuple[list[str], dict]] = {}
    for run in runs(doc):
        entry = run["metrics"].get(BLIND)
        if (value(entry) or 0.0) > BLIND_WARN_ABOVE:
            audit = run.get("data", {}).get("audit_sha256") or run["label"]
            flagged.setdefault(audit, ([], entry))[0].append(run["label"])
    return [
        f"a model-free bag-of-words classifier tells members from non-members with AUC {entry['value']:.2f}"
        + (" (95% {:.2f} – {:.2f})".format(*entry["ci95"]) if entry.get("ci95") else "")
        + f", above {BLIND_WARN_ABOVE:g}, on the audit set of {', '.join(labels)}: membership scores there may "
        "reflect a distribution shift between the two sets, not memorization (Das et al. 2024)"
        for labels, entry in flagged.values()
    ]


def _pattern(names: list[str]) -> str:
    """Dotted names that differ in one part only, as one pattern: `privacy.mia.*.tpr@1%fpr`."""
    parts = [n.split(".") for n in names]
    if len(names) > 1 and len({len(p) for p in parts}) == 1:
        differ = [i for i in range(len(parts[0])) if len({p[i] for p in parts}) > 1]
        if len(differ) == 1:
            return ".".join("*" if i == differ[0] else part for i, part in enumerate(parts[0]))
    return ", ".join(names)


def note_warnings(doc: dict) -> list[str]:
    """One line per note that metric entries carry (registry: a TPR at a low FPR measured on too
    few non-members), with the models and the metrics it holds for, e.g. `standard, oracle:
    privacy.mia.*.tpr@0.1%fpr: 12 non-members are too few for ...`."""
    found: dict[str, tuple[list[str], list[str]]] = {}
    for run in runs(doc):
        for name, entry in run["metrics"].items():
            note = entry.get("note") if isinstance(entry, dict) else None
            if isinstance(note, str) and note:
                labels, names = found.setdefault(note, ([], []))
                if run["label"] not in labels:
                    labels.append(run["label"])
                if name not in names:
                    names.append(name)
    return [f"{', '.join(labels)}: {_patterns(names)}: {note}" for note, (labels, names) in found.items()]


def _patterns(names: list[str]) -> str:
    """Names grouped by their last part, each group as one pattern: `privacy.mia.*.tpr@1%fpr,
    privacy.mia.*.tpr@1%fpr_vs_oracle`."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    return ", ".join(_pattern(group) for group in groups.values())
