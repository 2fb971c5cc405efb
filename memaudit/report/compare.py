"""`memaudit report`: several scan runs in one comparative document, so memorization and capability
of every model (standard, MemSink, no-repeat oracle, unlearned ...) are read side by side, each
also measured against one reference model and against the oracle (a model retrained without the
members, report/oracle.py), and nothing is compared that was not measured alike."""

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
from memaudit.report.document import (
    ORACLE_KINDS,
    SCHEMA_VERSION,
    attack_suffix,
    charted_runs,
    differences,
    model_label,
    not_a_removal,
    runs,
    value,
)
from memaudit.report.oracle import compare_to_oracle, oracle_document, pairing_problem
from memaudit.report.run_files import read_results

_NOT_TEXT = {"kind", "source_file"}  # string fields of a sequence row that are labels or paths, not audit text


def load_run(run_dir: str | Path) -> dict:
    """A scan run dir's results.json, checked as `memaudit report` checks it (run_files)."""
    return read_results(run_dir)


def unique_labels(results: list[dict], run_dirs: list[Path]) -> list[str]:
    """Kind and sink mode; where runs share those, the model dir's name too (alone where it already
    says the kind: `unlearn-npo`), then the run dir's name; an attacked model's attack last
    (`unlearn-npo @quant:int4`)."""
    options = []
    for r, d in zip(results, run_dirs):
        base, named, attack = model_label(r), model_label(r, named=True), attack_suffix(r)
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
        reasons = differences(run, baseline)
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


def pareto_fronts(all_runs: list[dict], not_comparable: dict[str, list[str]], oracle: str | None = None) -> dict:
    """The front of the registry's capability axis (x) against each of its memorization axes (y),
    over comparable runs of removal candidates (attacked models only where there is nothing else,
    document.charted_runs). The oracle never saw the members: it shows what perfect removal looks
    like and would dominate every front (more natural text per step, no members); a diagnostic
    sink mode has memorization switched on. Neither is a removal: `excluded` says why, by label."""
    x, ys = pareto_axes()
    charted = charted_runs({"runs": all_runs})
    excluded = {run["label"]: why for run in charted if (why := not_a_removal(run, oracle))}
    fronts = {}
    for y in ys:
        points = {
            run["label"]: (value(run["metrics"].get(x)), value(run["metrics"].get(y)))
            for run in charted
            if not {x, y} & set(not_comparable.get(run["label"], [])) and run["label"] not in excluded
        }
        points = {lab: p for lab, p in points.items() if None not in p}
        hib = (get_metric(x).higher_is_better, get_metric(y).higher_is_better)
        fronts[y] = pareto_front(points, hib) if len(points) > 1 else []
    return {"x": x, "fronts": fronts, "excluded_kinds": list(ORACLE_KINDS), "excluded": excluded}


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


def pick_oracle(all_runs: list[dict], dirs: list[Path], oracle: str | Path | None) -> tuple[dict | None, str]:
    """(the oracle run, or None, and how it was chosen or why none was): the run of `oracle` if
    given, else the one run (not attacked) of an oracle kind, the model trained with no_repeats.
    With several, none is taken: which retraining to judge against is the user's call."""
    if oracle is not None:
        return next(run for d, run in zip(dirs, all_runs) if d.resolve() == Path(oracle).resolve()), "--oracle"
    retrained = [run for run in all_runs if run["model"].get("kind") in ORACLE_KINDS and not run.get("attack")]
    if len(retrained) == 1:
        return retrained[0], f"the one run of kind {retrained[0]['model']['kind']}"
    if retrained:
        labels = ", ".join(run["label"] for run in retrained)
        return None, f"several runs of kind no-repeats ({labels}): none is taken as the oracle; pass --oracle RUN"
    return None, ""


def judge_against_oracle(all_runs: list[dict], oracle: dict) -> None:
    """Adds to every other run the metrics measured against the oracle (report/oracle.py), and to
    each removal (not the standard model, the oracle or a diagnostic mode) under `retraining` its
    verdict per family, or why its records could not be paired with the oracle's."""
    for run in all_runs:
        if run is oracle:
            continue
        removal = run["model"].get("kind") != "standard" and not not_a_removal(run, oracle["label"])
        problem = pairing_problem(run, oracle)
        if problem is not None:
            if removal:
                run["retraining"] = {"problem": problem}
            continue
        found = compare_to_oracle(run, oracle)
        run["metrics"] |= found["metrics"]
        if removal:
            run["retraining"] = {"verdicts": found["verdicts"]}


def compare_runs(
    run_dirs: list[str | Path],
    reference: str | Path | None = None,
    redact: bool = False,
    oracle: str | Path | None = None,
) -> dict:
    """The comparative results document of scan run dirs. `reference`: the run every model is
    measured against (gap_closed, forgetting, degradation); default the one standard model, if
    exactly one run is of kind standard (and not attacked: memaudit stress). `oracle`: the run of
    a model retrained without the members that every model is also measured against, paired
    record by record, and each removal judged against (pick_oracle has the default). A reference
    or an oracle not among `run_dirs` is added first."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise MemauditError("report needs at least one run dir (from `memaudit scan model`)")
    for extra in (oracle, reference):  # the reference ends up first, the oracle after it
        if extra is not None and Path(extra).resolve() not in [d.resolve() for d in dirs]:
            dirs.insert(0, Path(extra))
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
    oracle_run, chosen = pick_oracle(all_runs, dirs, oracle)
    if oracle_run is not None:
        judge_against_oracle(all_runs, oracle_run)
    not_comparable, warnings = comparability(all_runs, ref or all_runs[0])
    if ref is None and len(all_runs) > 1:
        warnings.append(
            "no reference model (none or several runs of kind standard): gap_closed, forgetting and degradation "
            "are left out; pass --reference RUN"
        )
    if oracle_run is None and chosen:
        warnings.append(chosen)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "document": "memaudit.report",
        "memaudit_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "reference": ref["label"] if ref else None,
        "oracle": oracle_document(oracle_run, chosen) if oracle_run is not None else None,
        "redacted": False,
        "warnings": warnings,
        "comparability": {"baseline": (ref or all_runs[0])["label"], "not_comparable": not_comparable},
        "pareto": pareto_fronts(all_runs, not_comparable, oracle_run["label"] if oracle_run else None),
        "runs": all_runs,
    }
    return redact_texts(doc) if redact else doc
