"""The shape every report view reads: a list of labelled runs. A scan's results.json is one run;
a comparative document (`memaudit report`) holds several. Views, plots and gates go through
`runs()` so one code path serves both."""

from __future__ import annotations

import json
import math
from pathlib import Path

from memaudit.common.errors import MemauditError
from memaudit.probes.registry import GROUPS

SCHEMA_VERSION = 1  # of the comparative document; each run keeps its scan's own schema_version
# Models trained without the members (`memaudit train --no-repeats` records this kind in its
# memaudit.json, and a scan copies it to results.json's `model.kind`): what perfect removal looks
# like, so the oracle a report judges removals against, never a removal method itself.
ORACLE_KINDS = ("no-repeats",)
# Sink modes that switch a MemSink model's memorization on (memsinks/config.py EVAL_MODES: `own`
# gives each document its own training sinks): a diagnostic of where memorization went, not a
# model anyone would deploy, so never a removal.
DIAGNOSTIC_SINK_MODES = ("own",)
# What two runs must share for a metric group to be compared, and the groups that depend on it.
_SUITE_BOOKKEEPING = {"name", "max_batch_tokens", "bootstrap"}  # change intervals or speed, not values
COMPARABILITY = (
    ("audit set", lambda r: r.get("data", {}).get("audit_sha256"), ("memorization", "extraction", "privacy")),
    ("data manifest", lambda r: r.get("data", {}).get("manifest_sha256"), ("capability",)),
    (
        "probe suite",
        lambda r: {k: v for k, v in r.get("suite", {}).items() if k not in _SUITE_BOOKKEEPING},
        ("extraction", "privacy"),
    ),
)


def differences(run: dict, baseline: dict) -> list[tuple[str, tuple[str, ...]]]:
    """What `run` was measured with unlike `baseline` (audit set, data manifest, probe suite),
    each with the metric groups that difference makes incomparable. Compared as JSON, so a
    document fresh from a scan (tuples) matches the same one read back (lists)."""
    return [(what, groups) for what, key, groups in COMPARABILITY if _as_json(key(run)) != _as_json(key(baseline))]


def _as_json(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def model_label(results: dict, named: bool = False) -> str:
    """What a reader calls a model: its kind (its name if external), and the sink mode scanned in.
    `named`: the model dir's name too, after the kind, or alone where it already says the kind
    (`unlearn-ga`, not `unlearned unlearn-ga`)."""
    model = results["model"]
    kind = model.get("kind") or "external"
    name = Path(model["path"]).name
    if kind == "external":  # a model memaudit did not train: its name
        shown = name
    elif named:
        shown = name if _says_kind(name, kind) else f"{kind} {name}"
    else:
        shown = kind
    mode = model.get("sink_mode")
    return f"{shown}{f' (sinks {mode})' if mode else ''}"


def _says_kind(name: str, kind: str) -> bool:
    """Whether a model dir's name already names its kind: it holds the stem of each word of the kind
    (`unlearn` of `unlearned`, `ablat` of `ablated`; `memsink` and `remov` of `memsink-removed`, so
    `memsink-routed-removed` says it), ignoring case."""
    return all(word.removesuffix("ed").lower() in name.lower() for word in kind.split("-"))


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


def oracle_label(doc: dict) -> str | None:
    """The label of the run a comparative document judges removals against, if any."""
    return (doc.get("oracle") or {}).get("label")


def is_oracle(run: dict, oracle: str | None) -> bool:
    """The report's oracle, or any model of an oracle kind (a second retraining, or one attacked)."""
    return run["label"] == oracle or run["model"].get("kind") in ORACLE_KINDS


def is_diagnostic(run: dict) -> bool:
    return run["model"].get("sink_mode") in DIAGNOSTIC_SINK_MODES


def not_a_removal(run: dict, oracle: str | None) -> str:
    """Why a run is no removal method (so neither on a Pareto front of removals nor judged
    against retraining), "" for one that may be."""
    if is_oracle(run, oracle):
        return "the oracle: the target, not a removal method"
    if is_diagnostic(run):
        return f"a diagnostic mode (sinks {run['model']['sink_mode']}: memorization switched on), not a removal"
    return ""


def not_comparable(doc: dict, label: str) -> set[str]:
    return set(doc.get("comparability", {}).get("not_comparable", {}).get(label, []))


def level_name(level: str) -> str:
    return "held-out" if level == "0" else f"×{level}"
