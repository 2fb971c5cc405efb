"""A sweep as jobs: every data build, model, removal, scan and stress attack it needs, each once.

A job's key hashes what it computes: its kind, its settings and the keys of the jobs it reads, with
memaudit's code and the torch version. Equal work has one key, so what does not depend on a swept
setting is shared (one data build per data setting and data seed, one standard model and one
oracle per data setting and seed), a finished job is never redone, and a changed setting or new
code makes a new job rather than silently reusing an old one. Paths never enter a key: a job names
its inputs by role (`@data`, `@base/pretrain.jsonl`) and gets their dirs when it runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import memaudit
from memaudit.app.demo import DemoConfig
from memaudit.app.sweep.spec import BOOKKEEPING, SINK_ARM, Point, SweepSpec
from memaudit.common.errors import MemauditError
from memaudit.corpus.config import AuditConfig
from memaudit.memsinks.config import DEFAULT_EVAL_MODE
from memaudit.stress.attacks import StressConfig, parse_attack
from memaudit.training.config import TrainConfig

SOURCE_SUFFIXES = (".py", ".yaml", ".j2")


@dataclass
class Job:
    kind: str  # data, halves, train, remove, unlearn, ablate, scan, stress
    label: str  # what a person calls it: "train memsink (point 1, seeds 0/2)"
    params: dict[str, Any]  # what the runner needs besides its inputs (JSON, no paths)
    inputs: dict[str, str] = field(default_factory=dict)  # role -> key of the job whose output it reads
    cost: float = 0.0  # tokens processed, for the time estimates (a scan's forward counts a third of a step's)
    # (arch, vocab, batch, seq, precision) of the model it works on: what its speed is measured on
    model: tuple = field(default=(), compare=False)
    key: str = ""

    def __post_init__(self) -> None:
        if self.key:  # read back from its job.json by a worker: the key it was planned under
            return
        ident = {k: v for k, v in self.params.items() if k not in BOOKKEEPING}
        text = json.dumps([self.kind, _clean(ident), sorted(self.inputs.items()), code_identity()], sort_keys=True)
        self.key = f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Run:
    """One row of the results: an arm of a point under one pair of seeds, and the scan job that measures it."""

    point: int
    data_seed: int
    train_seed: int
    arm: str
    job: str  # key of its scan (or stress) job


@dataclass
class Plan:
    jobs: dict[str, Job]  # in an order where every job's inputs come before it
    runs: list[Run]
    points: list[Point]


def _clean(value: Any) -> Any:
    """JSON-ready settings without bookkeeping (threads) at any depth."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in BOOKKEEPING}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


@cache
def code_identity() -> dict[str, str]:
    """memaudit's version, a hash of its source files, and torch's version: new code is a new job."""
    import torch

    root = Path(memaudit.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in SOURCE_SUFFIXES):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return {"memaudit": memaudit.__version__, "source": digest.hexdigest()[:16], "torch": torch.__version__}


def _train_tokens(cfg: TrainConfig) -> float:
    return float(cfg.steps * cfg.batch_size * cfg.seq_len)


def _scan_tokens(data: AuditConfig) -> float:
    """A third of a training step's work per token, over the audit records and validation texts."""
    planted = len(data.repeats) * (data.members_per_level * 2 + data.canaries_per_level)
    return (planted + data.n_valid) * data.max_tokens / 3


class _Planner:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.model: tuple = ()  # the current point's, for the jobs' speed

    def add(self, job: Job) -> str:
        job.model = job.model or self.model
        self.jobs.setdefault(job.key, job)
        return job.key

    def seed_jobs(self, point: Point, d: int, t: int, arms: tuple[str, ...]) -> dict[str, str]:
        """The jobs of one point and seed pair; returns each arm's scan job key (standard and oracle always)."""
        cfg: DemoConfig = point.config
        tag = f"(point {point.index}, seeds {d}/{t})"
        data_cfg = replace(cfg.data, seed=d)
        train = cfg.train
        self.model = (train.arch, cfg.data.bpe_vocab_size, train.batch_size, train.seq_len, train.precision)
        base_inputs: dict[str, str] = {}
        if cfg.pretrain is not None:
            halves = self.add(Job("halves", f"split the corpus in halves {tag}", {"corpus": cfg.data.corpus}))
            natural = replace(data_cfg, corpus="@halves/pretrain.jsonl", n_natural=cfg.pretrain.n_natural)
            pre_data = self.add(Job("data", f"build the pretraining set {tag}", asdict(natural), {"halves": halves}))
            pre_cfg = replace(cfg.pretrain.train, seed=t, no_repeats=True, sinks=None)
            base = self.add(
                Job(
                    "train",
                    f"pretrain the base {tag}",
                    _train_params(pre_cfg),
                    {"data": pre_data},
                    _train_tokens(pre_cfg),
                )
            )
            base_inputs = {"base": base}
            data_cfg = replace(data_cfg, corpus="@halves/finetune.jsonl", tokenizer="@base", vocab_size=None)
            data = self.add(
                Job("data", f"build the audit set {tag}", asdict(data_cfg), {"halves": halves, "base": base})
            )
        else:
            data = self.add(Job("data", f"build the audit set {tag}", asdict(data_cfg)))
        standard_cfg = replace(cfg.train, seed=t, no_repeats=False, sinks=None, init="@base" if base_inputs else None)
        models: dict[str, str] = {}

        def model(name: str, train_cfg: TrainConfig, **params: Any) -> str:
            job = Job(
                "train",
                f"train {name} {tag}",
                _train_params(train_cfg) | params,
                {"data": data} | base_inputs,
                _train_tokens(train_cfg),
            )
            return self.add(job)

        models["standard"] = model("standard", standard_cfg)
        # The oracle sees the natural text as many epochs as the standard model: fewer steps, set when the data
        # exists (demo.training_plan).
        models["oracle"] = model("the no-repeats oracle", replace(standard_cfg, no_repeats=True), equal_epochs=True)
        scan_tokens = _scan_tokens(cfg.data)
        suite = {"suite": cfg.suite}

        def scan(name: str, model_key: str, mode: str | None, reference: bool = True) -> str:
            inputs = {"model": model_key, "data": data} | ({"reference": scans["oracle"]} if reference else {})
            return self.add(Job("scan", f"scan {name} {tag}", suite | {"sinks_mode": mode}, inputs, scan_tokens))

        scans: dict[str, str] = {}
        scans["oracle"] = scan("oracle", models["oracle"], None, reference=False)
        scans["standard"] = scan("standard", models["standard"], None)
        sink_cfg = cfg.sinks[SINK_ARM]
        for arm in dict.fromkeys(a.partition("@")[0] for a in arms):
            if arm in scans:
                continue
            if arm.startswith(f"{SINK_ARM}-"):
                if SINK_ARM not in models:
                    models[SINK_ARM] = model(SINK_ARM, replace(standard_cfg, sinks=sink_cfg))
                mode = arm.removeprefix(f"{SINK_ARM}-")
                if mode == "removed":
                    removed = self.add(Job("remove", f"remove the sinks {tag}", {}, {"model": models[SINK_ARM]}))
                    scans[arm] = scan(arm, removed, None)
                else:
                    scans[arm] = scan(arm, models[SINK_ARM], mode)
            elif arm.startswith("unlearn-"):
                ucfg = replace(cfg.unlearn, method=arm.removeprefix("unlearn-"), seed=t)
                tokens = ucfg.steps * ucfg.batch_size * 2 * cfg.data.max_tokens
                inputs = {"model": models["standard"], "data": data}
                unlearned = self.add(Job("unlearn", f"{arm} {tag}", asdict(ucfg), inputs, tokens))
                scans[arm] = scan(arm, unlearned, None)
            elif arm == "ablate":
                ratio = cfg.ablate_ratio if cfg.ablate_ratio is not None else 0.1
                inputs = {"model": models["standard"], "data": data}
                ablated = self.add(Job("ablate", f"ablate {tag}", {"ratio": ratio}, inputs, scan_tokens))
                scans[arm] = scan(arm, ablated, None)
        for arm in arms:
            name, _, attack = arm.partition("@")
            if attack:
                scans[arm] = self.stress_job(arm, point.stress, t, scans, name, attack, data, tag, scan_tokens)
        return scans

    def stress_job(
        self,
        arm: str,
        stress: dict[str, Any],
        t: int,
        scans: dict,
        name: str,
        attack: str,
        data: str,
        tag: str,
        tokens: float,
    ) -> str:
        """The attack on the deployed model of arm `name`: the model its scan read, sink mode `off` for a sink model."""
        scan_job = self.jobs[scans[name]]
        if scan_job.params["sinks_mode"] not in (None, DEFAULT_EVAL_MODE):
            raise MemauditError(f"{arm}: a stress attack runs on a deployed model; use {SINK_ARM}-off or -removed")
        parsed = parse_attack(attack)
        cfg = StressConfig(attacks=(parsed,), seed=t, **stress)
        params = {k: v for k, v in asdict(cfg).items() if k != "attacks"} | {"attack": attack}
        relearn = (parsed.steps or 0) * cfg.relearn_batch_size * 128
        inputs = {"model": scan_job.inputs["model"], "data": data, "standard": scans["standard"], "before": scans[name]}
        return self.add(Job("stress", f"stress {arm} {tag}", params, inputs, 2 * tokens + relearn))


def _train_params(cfg: TrainConfig) -> dict[str, Any]:
    params = asdict(cfg)
    params["sinks"] = cfg.sinks.to_dict() if cfg.sinks is not None else None
    return params


def plan_sweep(spec: SweepSpec) -> Plan:
    """Every job of the sweep, once, in dependency order, and the runs that read them."""
    planner, runs = _Planner(), []
    points = spec.points
    for point in points:
        for d in spec.data_seeds:
            for t in spec.train_seeds:
                scans = planner.seed_jobs(point, d, t, spec.arms)
                runs += [Run(point.index, d, t, arm, scans[arm]) for arm in _run_arms(spec.arms)]
    return Plan(planner.jobs, runs, points)


def _run_arms(arms: tuple[str, ...]) -> list[str]:
    """The arms measured: the standard model and the oracle always (every comparison needs them), then the rest."""
    return list(dict.fromkeys(["standard", "oracle", *arms]))
