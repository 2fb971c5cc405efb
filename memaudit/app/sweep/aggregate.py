"""The sweep's results document, the one source of truth its views render from: every run with its
metrics (each keeping the bootstrap intervals of its own scan, in its run dir), and per point and
arm the mean and the min-max range over seeds of every metric.

Each seed pair's runs are compared as `memaudit report` compares them (report.compare_runs, against
that seed's standard model), so gap closed, forgetting and degradation mean what they mean in a
report, and against that seed's oracle (report.oracle), paired on the same records."""

from __future__ import annotations

import datetime as dt
import os
import statistics
from pathlib import Path

from memaudit.app.sweep.plan import Plan, Run, code_identity
from memaudit.app.sweep.run import run_dir, status
from memaudit.app.sweep.spec import SweepSpec
from memaudit.common.hardware import cpu_description
from memaudit.report.compare import compare_runs
from memaudit.report.document import is_diagnostic, value
from memaudit.report.oracle import compare_to_oracle, pairing_problem

SCHEMA_VERSION = 1


def _flat(metrics: dict) -> dict[str, float]:
    """Each metric's value, and its value per repeat level as `name[xN]` (`[held-out]` for level 0)."""
    out = {}
    for name, entry in metrics.items():
        v = value(entry)
        if v is not None:
            out[name] = v
        for level, sub in (entry.get("by_repeats") or {}).items():
            v = value(sub)
            if v is not None:
                out[f"{name}[{'held-out' if level == '0' else 'x' + level}]"] = v
    return out


def _seed_runs(out: Path, jobs: Path, the_plan: Plan, runs: list[Run]) -> list[dict]:
    """One seed pair's runs with their metrics: compared with its standard model and its oracle. A run's dir is
    recorded relative to the sweep's folder `out`, wherever the job store `jobs` lies."""
    records, dirs = [], {}
    for r in runs:
        s = status(jobs, r.job) or {"status": "not run"}
        record = {"point": r.point, "data_seed": r.data_seed, "train_seed": r.train_seed, "arm": r.arm}
        record |= {"status": s["status"], **({"error": s["error"]} if s.get("error") else {})}
        if s["status"] == "done":
            dirs[r.arm] = run_dir(jobs, the_plan.jobs[r.job])
            record["run_dir"] = os.path.relpath(dirs[r.arm], out)
        records.append(record)
    if "standard" not in dirs:
        return records
    arms = list(dirs)
    doc = compare_runs([dirs[a] for a in arms], reference=dirs["standard"])
    by_arm = dict(zip(arms, doc["runs"]))
    for record in records:
        run = by_arm.get(record["arm"])
        if run is None:
            continue
        metrics = dict(run["metrics"])
        problem = pairing_problem(run, by_arm["oracle"]) if "oracle" in by_arm else "no oracle run"
        if record["arm"] == "oracle":
            pass
        elif problem:  # e.g. relearn:forget-half scans the members it did not relearn: another audit set
            record["oracle_note"] = f"not compared with the oracle: {problem}"
        else:
            oracle = compare_to_oracle(run, by_arm["oracle"])  # the results compare_runs has read already
            metrics |= oracle["metrics"]
            if _is_removal(record["arm"], run):
                record["verdicts"] = oracle["verdicts"]
        record["label"] = run["label"]
        record["metrics"] = _flat(metrics)
    return records


def _is_removal(arm: str, run: dict) -> bool:
    """Judged against retraining: every arm but the standard model, the oracle (attacked or not) and a diagnostic
    sink mode (memorization switched on)."""
    return arm.partition("@")[0] not in ("standard", "oracle") and not is_diagnostic(run)


def _summary(records: list[dict], points: dict[int, dict]) -> list[dict]:
    """Per point and arm: mean, min, max and count over seeds of every metric measured."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["point"], r["arm"]), []).append(r)
    out = []
    for (point, arm), rs in groups.items():
        done = [r for r in rs if r["status"] == "done" and "metrics" in r]
        names = list(dict.fromkeys(n for r in done for n in r["metrics"]))
        metrics = {}
        for name in names:
            vs = [r["metrics"][name] for r in done if name in r["metrics"]]
            metrics[name] = {"mean": statistics.fmean(vs), "min": min(vs), "max": max(vs), "n": len(vs)}
        verdicts = {}
        for family in dict.fromkeys(f for r in done for f in r.get("verdicts", {})):
            seen = [r["verdicts"][family]["verdict"] for r in done if family in r.get("verdicts", {})]
            verdicts[family] = {v: seen.count(v) for v in dict.fromkeys(seen)}
        out.append(
            {
                "point": point,
                "settings": points[point],
                "arm": arm,
                "seeds": len(done),
                "failed": len(rs) - len(done),
                "metrics": metrics,
                "verdicts": verdicts,
            }
        )
    return out


def _job_seconds(jobs: Path, the_plan: Plan) -> float:
    return sum((status(jobs, key) or {}).get("seconds", 0.0) for key in the_plan.jobs)


def results_document(out: Path, jobs: Path, spec: SweepSpec, the_plan: Plan, timing: dict) -> dict:
    """The aggregated document of everything the sweep has measured so far."""
    by_seed: dict[tuple, list[Run]] = {}
    for r in the_plan.runs:
        by_seed.setdefault((r.point, r.data_seed, r.train_seed), []).append(r)
    records = [rec for runs in by_seed.values() for rec in _seed_runs(out, jobs, the_plan, runs)]
    points = {p.index: p.settings for p in the_plan.points}
    return {
        "document": "memaudit.sweep",
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.to_dict(),
        "source": spec.source,
        "swept": list(spec.grid),
        "code": code_identity(),
        "machine": cpu_description(),
        "points": [{"index": i, "settings": s} for i, s in points.items()],
        "runs": records,
        "summary": _summary(records, points),
        # this invocation's planning, jobs and aggregation, and every job's own seconds, whenever it ran
        "timing": timing | {"all_jobs_seconds": round(_job_seconds(jobs, the_plan), 1)},
    }
