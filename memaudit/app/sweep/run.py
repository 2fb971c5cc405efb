"""Runs a sweep's jobs, through the same functions as the commands, where their files are the only
shared state: each job reads its inputs' dirs and writes its own, JOBS/<key>/out, and a status
file beside it (done or failed, with the error). JOBS, the job store, is OUT/jobs unless `--jobs`
names one that several sweeps share. So any engine that can run a function or a
command can run a sweep: jobs run one at a time in this process by default, or go to submitit
(Slurm, or its local executor) in waves, each wave the jobs whose inputs are done.

A killed sweep continues where it stopped: a done job is never redone, a model whose training was
cut off resumes from its checkpoint. A failed job is recorded with its error, the jobs that need it
are skipped, the others go on; `--rerun-failed` retries the failed ones."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from memaudit.app.demo import oracle_steps, write_halves
from memaudit.app.sweep.plan import Job, Plan, code_identity
from memaudit.common.fileio import read_json, write_json
from memaudit.corpus.audit import write_audit_set
from memaudit.corpus.config import AuditConfig
from memaudit.models.removal import remove_sinks
from memaudit.probes.scan import scan
from memaudit.probes.suite import load_suite
from memaudit.report.render import write_run
from memaudit.report.run_files import read_results
from memaudit.stress.attacks import StressConfig, parse_attack
from memaudit.stress.run import stress
from memaudit.training.config import TrainConfig
from memaudit.training.train import train
from memaudit.unlearning.ablate import ablate
from memaudit.unlearning.config import UnlearnConfig
from memaudit.unlearning.run import unlearn

JOBS_DIR = "jobs"  # the job store under OUT, unless --jobs gives one
STATUS_FILE = "status.json"
JOB_FILE = "job.json"


def job_dir(jobs: Path, key: str) -> Path:
    return Path(jobs) / key


def output_dir(jobs: Path, key: str) -> Path:
    """Where a job's result lies: a data dir, a model dir, a scan run dir, or stress runs."""
    return job_dir(jobs, key) / "out"


def status(jobs: Path, key: str) -> dict | None:
    path = job_dir(jobs, key) / STATUS_FILE
    return read_json(path) if path.is_file() else None


def _resolve(value: Any, inputs: dict[str, Path]) -> Any:
    """`@role/rest` -> the input's output dir joined with rest."""
    if isinstance(value, str) and value.startswith("@"):
        role, _, rest = value[1:].partition("/")
        return str(inputs[role] / rest) if rest else str(inputs[role])
    return value


def _config(cls: type, params: dict, inputs: dict[str, Path], threads: int | None, **given: Any) -> Any:
    """The config `cls` from a job's params (paths resolved, lists as tuples), its threads, and `given` values."""
    known = {f.name for f in fields(cls)}
    values = {k: _resolve(v, inputs) for k, v in params.items() if k in known}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    if "threads" in known:
        values["threads"] = threads
    return cls(**values | given)


def _run_job(job: Job, inputs: dict[str, Path], out: Path, threads: int | None) -> None:
    """The command that makes this job's output, called as the command calls it."""
    p = job.params
    if job.kind == "halves":
        write_halves(p["corpus"], out)
    elif job.kind == "data":
        write_audit_set(_config(AuditConfig, p, inputs, None), out, force=True)
    elif job.kind == "train":
        cfg: TrainConfig = _config(TrainConfig, p, inputs, threads)
        if p.get("equal_epochs"):
            cfg = oracle_steps(cfg, inputs["data"])
        resume = out.with_name(out.name + ".partial").exists()
        train(inputs["data"], out, cfg, resume=resume, progress=False)
    elif job.kind == "remove":
        remove_sinks(inputs["model"], out, force=True)
    elif job.kind == "unlearn":
        unlearn(
            inputs["model"], inputs["data"], out, _config(UnlearnConfig, p, inputs, threads), force=True, progress=False
        )
    elif job.kind == "ablate":
        ablate(inputs["model"], inputs["data"], out, p["ratio"], force=True)
    elif job.kind == "scan":
        reference = read_results(inputs["reference"]) if "reference" in inputs else None
        suite = load_suite(p["suite"])
        results = scan(
            inputs["model"], data_dir=inputs["data"], sinks_mode=p["sinks_mode"], config=suite, reference=reference
        )
        write_run(results, out, force=True)
    elif job.kind == "stress":
        cfg = _config(StressConfig, p, inputs, threads, attacks=(parse_attack(p["attack"]),))
        before = read_results(inputs["before"])
        stress(
            inputs["model"],
            inputs["data"],
            out,
            cfg,
            standard=inputs["standard"],
            before=before,
            force=True,
            progress=False,
        )
    else:
        raise ValueError(f"unknown job kind {job.kind}")


def seconds_per_token(arch: str, vocab: int, batch: int, seq: int, precision: str, steps: int = 3) -> float:
    """A training step of `arch` measured here (AdamW, the precision training would use), per token: what the
    time estimates scale the jobs' work by. One warm-up step is left out."""
    import torch

    from memaudit.common.precision import resolve_precision
    from memaudit.models.zoo import build_config, build_model

    model = build_model(build_config(arch, vocab, 0, 0), seed=0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(1, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    dtype = resolve_precision(precision, "cpu").torch_dtype()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return min(times[1:]) / (batch * seq)


def stress_run_dir(jobs: Path, key: str) -> Path:
    """The scan run dir a stress job wrote (one attack: one run dir under its output)."""
    found = sorted(p.parent for p in output_dir(jobs, key).glob("*/results.json"))
    return found[0] if found else output_dir(jobs, key)


def run_dir(jobs: Path, job: Job) -> Path:
    """The scan run dir of a scan or stress job."""
    return stress_run_dir(jobs, job.key) if job.kind == "stress" else output_dir(jobs, job.key)


def write_job(jobs: Path, job: Job) -> Path:
    """The job's settings beside its output (what a worker reads, and what a person checks); returns its folder."""
    folder = job_dir(jobs, job.key)
    folder.mkdir(parents=True, exist_ok=True)
    saved = {"kind": job.kind, "label": job.label, "params": job.params, "inputs": job.inputs, "code": code_identity()}
    write_json(folder / JOB_FILE, saved)
    return folder


def execute(jobs: Path, job: Job, threads: int | None = None) -> dict:
    """Run one job whose inputs are done; returns (and writes) its status. Never raises for the job's own failure:
    the error is recorded, so that the rest of the sweep goes on."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    folder = write_job(jobs, job)
    inputs = {role: output_dir(jobs, key) for role, key in job.inputs.items()}
    start = time.perf_counter()
    try:
        _run_job(job, inputs, output_dir(jobs, job.key), threads)
        result = {"status": "done"}
    except Exception as e:  # a failed run is a result of the sweep, not the end of it
        (folder / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        result = {"status": "failed", "error": f"{type(e).__name__}: {e}".strip()}
    result |= {"seconds": round(time.perf_counter() - start, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(folder / STATUS_FILE, result)
    return result


def execute_key(jobs: str, key: str, threads: int | None = None) -> dict:
    """One job by its key, from the plan that `memaudit sweep` saved: what a launcher's worker calls."""
    saved = read_json(job_dir(Path(jobs), key) / JOB_FILE)
    job = Job(saved["kind"], saved["label"], saved["params"], saved["inputs"], key=key)
    return execute(Path(jobs), job, threads)


@dataclass
class Progress:
    """A line per finished job, with the time left: the jobs' estimated work (tokens) at the speed measured so far."""

    total: int
    work_left: float
    print: Any = print
    done: int = 0
    seconds: float = 0.0
    work_done: float = 0.0
    failed: list[str] = field(default_factory=list)

    def finished(self, job: Job, result: dict) -> None:
        self.done += 1
        self.seconds += result["seconds"]
        self.work_done += job.cost
        self.work_left -= job.cost
        left = ""
        if self.work_done > 0 and self.work_left > 0:
            left = f" · about {_duration(self.seconds / self.work_done * self.work_left)} left"
        state = "" if result["status"] == "done" else f" FAILED: {result['error']}"
        if state:
            self.failed.append(job.key)
        self.print(f"[{self.done}/{self.total}] {job.label}: {result['seconds']:.0f} s{state}{left}")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def pending(jobs: Path, the_plan: Plan, rerun_failed: bool) -> tuple[list[Job], list[Job], list[Job]]:
    """The jobs to run (not done; failed ones only with `rerun_failed`), the failed ones left as they are, and the
    jobs that cannot run because one of their inputs failed."""
    todo, failed, blocked = [], [], []
    bad: set[str] = set()
    for job in the_plan.jobs.values():  # inputs come first
        s = status(jobs, job.key)
        if s is not None and s["status"] == "done":
            continue
        if s is not None and not rerun_failed:
            failed.append(job)
            bad.add(job.key)
        elif bad & set(job.inputs.values()):
            blocked.append(job)
            bad.add(job.key)
        else:
            todo.append(job)
    return todo, failed, blocked


def _blocked(jobs: Path, job: Job, the_plan: Plan) -> bool:
    """An input failed (or was skipped for that reason): this job cannot run."""
    for key in job.inputs.values():
        s = status(jobs, key)
        if s is None or s["status"] != "done":
            return True
    return False


def run_local(jobs: Path, the_plan: Plan, todo: list[Job], progress: Progress, threads: int | None) -> list[Job]:
    """Every job in `todo`, in order, in this process; returns the jobs skipped because an input failed."""
    skipped = []
    for job in todo:
        if _blocked(jobs, job, the_plan):
            skipped.append(job)
            continue
        progress.finished(job, execute(jobs, job, threads))
    return skipped


def run_submitit(
    jobs: Path,
    the_plan: Plan,
    todo: list[Job],
    progress: Progress,
    threads: int | None,
    executor_options: dict,
    logs: Path,
) -> list[Job]:
    """The jobs through submitit, in waves: each wave every job whose inputs are done, submitted at once. The
    engine's own files (logs, pickles) go to `logs`."""
    import submitit

    cluster = executor_options.pop("cluster", None)
    executor = submitit.AutoExecutor(folder=logs, cluster=cluster)
    executor.update_parameters(**executor_options)
    remaining, skipped = list(todo), []
    for job in remaining:  # workers read the job from its file
        write_job(jobs, job)
    while remaining:
        waiting = {j.key for j in remaining}
        ready = [j for j in remaining if waiting.isdisjoint(j.inputs.values())]
        runnable = [j for j in ready if not _blocked(jobs, j, the_plan)]
        skipped += [j for j in ready if j not in runnable]
        with executor.batch():
            submitted = [(j, executor.submit(execute_key, str(jobs), j.key, threads)) for j in runnable]
        for job, handle in submitted:
            try:
                result = handle.result()
            except Exception as e:  # the engine lost the job (killed, timed out): recorded like a failure
                result = {"status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": 0.0}
                write_json(job_dir(jobs, job.key) / STATUS_FILE, result)
            progress.finished(job, result)
        remaining = [j for j in remaining if j not in ready]
    return skipped
