"""`memaudit sweep SWEEP.yaml --out DIR`: settings x seeds in one command. The sweep file is read and
every point checked (spec), the work planned as jobs that share what does not depend on a swept
setting (plan), the jobs run locally or through submitit (run), and the results aggregated over
seeds into sweep.json with its CSV, Markdown and HTML views (aggregate, report.sweep_views)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from memaudit.app.sweep.aggregate import results_document
from memaudit.app.sweep.plan import Job, Plan, plan_sweep
from memaudit.app.sweep.run import JOBS_DIR, Progress, pending, run_local, run_submitit, seconds_per_token
from memaudit.app.sweep.spec import SweepSpec, load_spec, parse_sets
from memaudit.common.errors import MemauditError
from memaudit.common.fileio import read_json, write_json
from memaudit.common.hardware import cpu_description
from memaudit.report.sweep_views import write_views

RESULTS_FILE = "sweep.json"  # the results document
SPEC_FILE = "sweep-spec.json"  # the sweep as last run there, written before its first job: it owns the dir
LAUNCHERS = ("local", "submitit")


def check_out(out: Path, spec: SweepSpec) -> None:
    """An output dir is new, empty, or this sweep's (same name): never another sweep's, never something else."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise MemauditError(f"{out} is a file: give --out a folder for the sweep")
    owner = out / SPEC_FILE
    if not owner.is_file():
        raise MemauditError(f"{out} holds files that are not a sweep's (no {SPEC_FILE}): give a new or empty --out")
    other = read_json(owner).get("name")
    if other != spec.name:
        raise MemauditError(f"{out} holds sweep {other!r}, not {spec.name!r}: give each sweep its own --out")


def check_jobs(jobs: Path) -> None:
    """A shared job store is a folder of jobs (new, or one a sweep wrote), never a file or a sweep's own folder."""
    if jobs.exists() and not jobs.is_dir():
        raise MemauditError(f"{jobs} is a file: give --jobs a folder where sweeps keep their jobs")
    if (jobs / SPEC_FILE).is_file():
        raise MemauditError(f"{jobs} is a sweep's folder, not a job store: give --jobs {jobs / JOBS_DIR}")


def describe(the_plan: Plan, spec: SweepSpec, todo: list[Job], failed: list[Job], blocked: list[Job]) -> list[str]:
    """What the sweep will do: its runs, its jobs by kind, what is shared and what is done already (`pending`'s
    three lists)."""
    kinds = Counter(j.kind for j in the_plan.jobs.values())
    uses = Counter(key for r in the_plan.runs for key in _closure(the_plan, r.job))
    shared = sum(1 for k, n in uses.items() if n > 1)
    seeds = len(spec.data_seeds) * len(spec.train_seeds)
    lines = [
        f"sweep {spec.name}: {len(the_plan.points)} points x {seeds} seed pairs x "
        f"{len(the_plan.runs) // max(1, len(the_plan.points) * seeds)} arms = {len(the_plan.runs)} runs",
        f"jobs: {len(the_plan.jobs)} ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
        f"{shared} shared by several runs",
        f"done already: {len(the_plan.jobs) - len(todo) - len(failed) - len(blocked)}; failed: {len(failed)}"
        + (f" (--rerun-failed retries them; {len(blocked)} jobs wait on them)" if failed else "")
        + f"; to run: {len(todo)}",
    ]
    return lines


def _closure(the_plan: Plan, key: str) -> set[str]:
    """A job and every job it reads, transitively."""
    seen, stack = set(), [key]
    while stack:
        k = stack.pop()
        if k not in seen:
            seen.add(k)
            stack += the_plan.jobs[k].inputs.values()
    return seen


def run_sweep(
    spec_path: Path,
    out: Path,
    sets: tuple[str, ...] = (),
    *,
    dry_run: bool = False,
    rerun_failed: bool = False,
    launcher: str = "local",
    executor_options: dict | None = None,
    threads: int | None = None,
    jobs: Path | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Run (or, with `dry_run`, describe) a sweep; returns the exit code: 0 when every run is done, 1 when some failed.
    Its jobs live in `jobs` (default OUT/jobs): sweeps that share one reuse each other's jobs, keyed by what they
    compute, while each keeps its results in its own `out`. Bad input raises MemauditError before anything is
    written."""
    begin = time.perf_counter()
    if launcher not in LAUNCHERS:
        raise MemauditError(f"unknown launcher {launcher!r}; use one of {', '.join(LAUNCHERS)}")
    out = Path(out)
    spec = load_spec(spec_path, parse_sets(sets))
    the_plan = plan_sweep(spec)
    check_out(out, spec)
    jobs = Path(jobs) if jobs is not None else out / JOBS_DIR
    check_jobs(jobs)
    todo, failed, blocked = pending(jobs, the_plan, rerun_failed)
    for line in describe(the_plan, spec, todo, failed, blocked):
        echo(line)
    if dry_run:
        echo(estimate_line(todo))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SPEC_FILE, spec.to_dict() | {"source": spec.source})
    planning = time.perf_counter() - begin
    progress = Progress(len(todo), sum(j.cost for j in todo), print=echo)
    start = time.perf_counter()
    if launcher == "local":
        skipped = run_local(jobs, the_plan, todo, progress, threads)
    else:
        options = dict(executor_options or {})
        skipped = run_submitit(jobs, the_plan, todo, progress, threads, options, logs=out / "submitit")
    jobs_seconds = time.perf_counter() - start
    start = time.perf_counter()
    timing = {"planning_seconds": round(planning, 3), "jobs_seconds": round(jobs_seconds, 3)}
    doc = results_document(out, jobs, spec, the_plan, timing)
    write_views(doc, out)
    doc["timing"]["aggregation_seconds"] = round(time.perf_counter() - start, 3)
    write_json(out / RESULTS_FILE, doc)
    for job in skipped:
        echo(f"skipped {job.label}: an input failed")
    not_done = sum(1 for r in doc["runs"] if r["status"] != "done")
    echo(
        f"results: {out / RESULTS_FILE} (views: sweep.csv, sweep.md, sweep.html); "
        f"{len(doc['runs']) - not_done} runs done"
    )
    if not_done:
        echo(f"{not_done} runs not done (failed, or an input failed): see sweep.html; --rerun-failed retries them")
    return 1 if not_done else 0


def estimate_line(todo: list[Job]) -> str:
    """How long the pending jobs should take here: their work at the speed of a training step measured now."""
    if not todo:
        return "nothing to run"
    rates = {}
    seconds = 0.0
    for job in todo:
        if job.model not in rates:
            rates[job.model] = seconds_per_token(*job.model)
        seconds += job.cost * rates[job.model]
    measured = ", ".join(f"{a} {r * 1e6:.2f} us/token" for (a, *_), r in rates.items())
    return f"estimate: about {seconds / 60:.1f} min on {cpu_description()} (a training step measured here: {measured})"
