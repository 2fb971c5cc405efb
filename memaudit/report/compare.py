"""`memaudit report`: several scan runs in one comparative document, so memorization and capability
of every model (standard, MemSink, no-repeat oracle, unlearned ...) are read side by side, each
also measured against one reference model, and nothing is compared that was not measured alike."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import secrets
from collections import Counter
from pathlib import Path

from memaudit import __version__
from memaudit.common.errors import MemauditError
from memaudit.probes.inputs import MetricInputs
from memaudit.probes.registry import REPORT_AGAINST, compute_all, get_metric, pareto_axes, report_relative
from memaudit.report.document import SCHEMA_VERSION, attack_suffix, charted_runs, model_label, runs, value
from memaudit.report.run_files import read_results

_SUITE_BOOKKEEPING = {"name", "max_batch_tokens", "bootstrap"}  # change intervals or speed, not values
# What two runs must share for a metric group to be compared, and the groups that depend on it.
COMPARABILITY = (
    ("audit set", lambda r: r.get("data", {}).get("audit_sha256"), ("memorization", "extraction", "privacy")),
    ("data manifest", lambda r: r.get("data", {}).get("manifest_sha256"), ("capability",)),
    (
        "probe suite",
        lambda r: {k: v for k, v in r.get("suite", {}).items() if k not in _SUITE_BOOKKEEPING},
        ("extraction", "privacy"),
    ),
)
_NOT_TEXT = {"kind", "source_file"}  # string fields of a sequence row that are labels or paths, not audit text


def load_run(run_dir: str | Path) -> dict:
    """A scan run dir's results.json, checked as `memaudit report` checks it (run_files)."""
    return read_results(run_dir)


def unique_labels(results: list[dict], run_dirs: list[Path]) -> list[str]:
    """Kind and sink mode; where runs share those, the model dir's name, then the run dir's name;
    an attacked model's attack last (`unlearned unlearn-npo @quant:int4`)."""
    options = []
    for r, d in zip(results, run_dirs):
        base, attack = model_label(r), attack_suffix(r)
        named = f"{base} {Path(r['model']['path']).name}"
        options.append((base + attack, named + attack, f"{named}{attack} [{Path(d).name}]"))
    labels = [o[0] for o in options]
    for step in (1, 2):
        counts = Counter(labels)
        labels = [o[step] if counts[lab] > 1 else lab for o, lab in zip(options, labels)]
    counts, seen = Counter(labels), Counter()
    out = []
    for lab in labels:  # the same run dir given twice
        seen[lab] += 1
        out.append(f"{lab} #{seen[lab]}" if counts[lab] > 1 else lab)
    return out


def relative_metrics(metrics: dict, reference: dict, reference_label: str) -> dict:
    """The registry's relative metrics a report recomputes (gap_closed, forgetting, degradation)
    of one model against the reference's metrics, level by level where both have the level.
    Each names its reference."""
    inputs = MetricInputs(computed=dict(metrics), others=dict.fromkeys(REPORT_AGAINST, reference))
    out = compute_all(inputs, report_relative())
    return {name: {**m, "reference": reference_label} for name, m in out.items()}


def comparability(all_runs: list[dict], baseline: dict) -> tuple[dict[str, list[str]], list[str]]:
    """Per run, the metrics that must not be compared with the baseline's (measured on another
    audit set, data build or probe suite), and one warning line per such run."""
    not_comparable, warnings = {}, []
    for run in all_runs:
        reasons = [(what, groups) for what, key, groups in COMPARABILITY if key(run) != key(baseline)]
        if not reasons:
            continue
        groups = {g for _, gs in reasons for g in gs}
        not_comparable[run["label"]] = sorted(n for n, m in run["metrics"].items() if m.get("group") in groups)
        warnings.append(
            f"{run['label']} was scanned with another {' and '.join(w for w, _ in reasons)} than {baseline['label']}: "
            f"its {', '.join(f'{g}.*' for g in sorted(groups))} metrics are not comparable"
        )
    return not_comparable, warnings


def pareto_front(points: dict[str, tuple[float, float]], higher_is_better: tuple[bool, bool]) -> list[str]:
    """Labels of the points that no other point matches or beats on both axes (beating on one)."""
    signs = [1.0 if h else -1.0 for h in higher_is_better]
    oriented = {lab: (x * signs[0], y * signs[1]) for lab, (x, y) in points.items()}
    return [
        lab
        for lab, p in oriented.items()
        if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in oriented.values())
    ]


# The oracle never saw the members: it shows what perfect removal looks like, it is not a
# removal method, and it would dominate every front (more natural text per step, no members).
NOT_CANDIDATES = ("no-repeats",)


def pareto_fronts(all_runs: list[dict], not_comparable: dict[str, list[str]]) -> dict:
    """The front of the registry's capability axis (x) against each of its memorization axes (y),
    over comparable runs of candidate models (every kind but the no-repeats oracle; attacked
    models only where there is nothing else, document.charted_runs)."""
    x, ys = pareto_axes()
    fronts = {}
    for y in ys:
        points = {
            run["label"]: (value(run["metrics"].get(x)), value(run["metrics"].get(y)))
            for run in charted_runs({"runs": all_runs})
            if not {x, y} & set(not_comparable.get(run["label"], [])) and run["model"].get("kind") not in NOT_CANDIDATES
        }
        points = {lab: p for lab, p in points.items() if None not in p}
        hib = (get_metric(x).higher_is_better, get_metric(y).higher_is_better)
        fronts[y] = pareto_front(points, hib) if len(points) > 1 else []
    return {"x": x, "fronts": fronts, "excluded_kinds": list(NOT_CANDIDATES)}


def _short_hash(text: str, key: bytes) -> str:
    return "#" + hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:10]


def redact_texts(doc: dict, key: bytes | None = None) -> dict:
    """Every text of every sequence row (prefix, suffix, emitted, secrets, any string but `kind`
    and the path `source_file`) and its doc_id (a content hash of the text) become a short keyed
    hash, in place. The key is random per report and never written: an unkeyed hash of a 9-digit
    canary is brute-forced in minutes. Equal texts within one report still share a hash (emitted
    == suffix stays visible)."""
    key = key or secrets.token_bytes(32)
    for run in runs(doc):
        for row in run.get("sequences", []):
            for k, v in row.items():
                if k == "doc_id" or (isinstance(v, str) and k not in _NOT_TEXT):
                    row[k] = _short_hash(str(v), key)
    doc["redacted"] = True
    return doc


def compare_runs(run_dirs: list[str | Path], reference: str | Path | None = None, redact: bool = False) -> dict:
    """The comparative results document of scan run dirs. `reference`: the run every model is
    measured against (gap_closed, forgetting, degradation); default the one standard model, if
    exactly one run is of kind standard (and not attacked: memaudit stress). A reference not
    among `run_dirs` is added first."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise MemauditError("report needs at least one run dir (from `memaudit scan model`)")
    if reference is not None and Path(reference).resolve() not in [d.resolve() for d in dirs]:
        dirs.insert(0, Path(reference))
    loaded = [load_run(d) for d in dirs]
    all_runs = [
        {**copy.deepcopy(r), "label": lab, "run_dir": str(d)}
        for r, lab, d in zip(loaded, unique_labels(loaded, dirs), dirs)
    ]
    if reference is not None:
        ref = next(run for d, run in zip(dirs, all_runs) if d.resolve() == Path(reference).resolve())
    else:
        standard = [run for run in all_runs if run["model"].get("kind") == "standard" and not run.get("attack")]
        ref = standard[0] if len(standard) == 1 else None
    if ref is not None:
        ref_metrics = copy.deepcopy(ref["metrics"])
        for run in all_runs:
            run["metrics"] |= relative_metrics(run["metrics"], ref_metrics, ref["label"])
    not_comparable, warnings = comparability(all_runs, ref or all_runs[0])
    if ref is None and len(all_runs) > 1:
        warnings.append(
            "no reference model (none or several runs of kind standard): gap_closed, forgetting and degradation "
            "are left out; pass --reference RUN"
        )
    doc = {
        "schema_version": SCHEMA_VERSION,
        "document": "memaudit.report",
        "memaudit_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "reference": ref["label"] if ref else None,
        "redacted": False,
        "warnings": warnings,
        "comparability": {"baseline": (ref or all_runs[0])["label"], "not_comparable": not_comparable},
        "pareto": pareto_fronts(all_runs, not_comparable),
        "runs": all_runs,
    }
    return redact_texts(doc) if redact else doc
