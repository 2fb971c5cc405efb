"""The shape every report view reads: a list of labelled runs. A scan's results.json is one run;
a comparative document (`memaudit report`) holds several. Views, plots and gates go through
`runs()` so one code path serves both."""

from __future__ import annotations

import math
from pathlib import Path

from memaudit.common.errors import MemauditError
from memaudit.probes.registry import GROUPS

SCHEMA_VERSION = 1  # of the comparative document; each run keeps its scan's own schema_version


def model_label(results: dict) -> str:
    """What a reader calls a model: its kind (its name if external), and the sink mode scanned in."""
    model = results["model"]
    kind = model.get("kind") or "external"
    name = Path(model["path"]).name if kind == "external" else kind  # a model memaudit did not train: its name
    mode = model.get("sink_mode")
    return f"{name}{f' (sinks {mode})' if mode else ''}"


def attack_suffix(results: dict) -> str:
    """` @quant:int4` for the scan of an attacked model (memaudit stress), else ""."""
    attack = results.get("attack")
    return f" @{attack['name']}" if attack else ""


def default_label(results: dict) -> str:
    """The model's label, and the attack it went through, if any."""
    return model_label(results) + attack_suffix(results)


def is_comparison(doc: dict) -> bool:
    return "runs" in doc


def runs(doc: dict) -> list[dict]:
    """The labelled runs of a scan's results or of a comparative document."""
    if is_comparison(doc):
        return doc["runs"]
    if "metrics" not in doc or "model" not in doc:
        raise MemauditError("not a memaudit results document (no `metrics` or `model`)")
    return [{**doc, "label": doc.get("label") or default_label(doc)}]


def charted_runs(doc: dict) -> list[dict]:
    """The runs the memorization-vs-capability views compare (charts, Pareto fronts): the models
    as they are, leaving out scans of attacked models (memaudit stress), which the robustness
    section shows; in a document of attacked models only, all of them (one attack's runs compared)."""
    everything = runs(doc)
    unattacked = [run for run in everything if not run.get("attack")]
    return unattacked or everything


def value(entry: dict | None) -> float | None:
    """A metric entry's value, None where it is missing or not a finite number."""
    v = None if entry is None else entry.get("value")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def beyond_budget(entry: dict | None) -> str | None:
    """`> N` for an entry whose value lies past what was measured (a relearning that did not
    bring memorization back within its N steps), None for any other entry."""
    if entry is not None and entry.get("within_budget") is False:
        return f"> {entry['budget']}"
    return None


def metric_names(doc: dict) -> list[str]:
    """Every metric of any run, by group (the registry's order), then in the order scans report them."""
    group: dict[str, str] = {}
    for run in runs(doc):
        for name, m in run["metrics"].items():
            group.setdefault(name, m.get("group", ""))
    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(group, key=lambda n: order.get(group[n], len(GROUPS)))


def levels(doc: dict) -> list[str]:
    """Repeat levels of any run's by_repeats, numerically ("0" = held-out non-members)."""
    found = {lv for run in runs(doc) for m in run["metrics"].values() for lv in m.get("by_repeats", {})}
    return sorted(found, key=int)


def not_comparable(doc: dict, label: str) -> set[str]:
    return set(doc.get("comparability", {}).get("not_comparable", {}).get(label, []))


def level_name(level: str) -> str:
    return "held-out" if level == "0" else f"×{level}"
