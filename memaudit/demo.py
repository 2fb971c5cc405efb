"""`memaudit demo`: the whole path on the embedded Austen corpus. Build the audit set; train a
standard, a no-repeats (oracle) and a MemSink model; remove the sinks; unlearn the standard
model (GA, NPO) and ablate it; scan everything; write one comparative report. Each step is
skipped when its output already exists, so a rerun (or an interrupted run) picks up where it was."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from memaudit.corpus.audit import AuditConfig, write_audit_set
from memaudit.fileio import read_json
from memaudit.models.sinks import SinkConfig
from memaudit.models.surgery import remove_sinks
from memaudit.probes.scan import scan
from memaudit.probes.suite import load_suite
from memaudit.report.compare import compare_runs
from memaudit.report.console import print_report
from memaudit.report.render import write_report, write_run
from memaudit.training.config import TrainConfig
from memaudit.training.loop import train
from memaudit.unlearning.ablate import ablate
from memaudit.unlearning.run import UnlearnConfig, unlearn


@dataclass(frozen=True)
class DemoConfig:
    data: AuditConfig = field(default_factory=AuditConfig)
    # ~1.7 epochs of the default audit set: the regime where memorization (and MemSinks' effect)
    # shows (MEMSINKS.md), in ~2 minutes a model on 2 cores with bf16 autocast; three models and
    # the rest fit the 10-minute budget of the demo.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(arch="gpt2-5m", steps=360))
    sinks: SinkConfig = field(default_factory=SinkConfig)
    # Method defaults (lr, beta), 60 steps with bf16 autocast and fewer, smaller evaluations: the
    # max-degradation guard still checks validation loss every 20 steps.
    unlearn: UnlearnConfig = field(default_factory=lambda: UnlearnConfig(steps=60, eval_every=20, eval_docs=32))
    unlearn_methods: tuple[str, ...] = ("ga", "npo")
    ablate_ratio: float = 0.1  # at 1% this model barely changes (measured: exact rate x128 stays 1.0)
    suite: str = "ci"  # the headline probes; `memaudit scan model --suite full` for the rest


QUICK = DemoConfig(  # tiny settings that show the whole path in about a minute, not the effect at scale
    data=AuditConfig(
        repeats=(1, 8, 64),
        members_per_level=4,
        canaries_per_level=1,
        n_valid=40,
        n_natural=150,
        min_tokens=64,
        max_tokens=120,
        vocab_size=512,
    ),
    train=TrainConfig(arch="gpt2-1m", steps=300, batch_size=8, lr=3e-3, warmup_steps=10),
    unlearn=UnlearnConfig(steps=30, lr=1e-3, warmup_steps=3, eval_every=10),  # a 1M model takes a larger step
    suite="ci",
)


class _Steps:
    """Runs each step unless its output exists, timing what it ran."""

    def __init__(self, console: Console):
        self.console, self.seconds, self.n = console, {}, 0

    def __call__(self, name: str, done: Path, work: Callable[[], object]) -> None:
        self.n += 1
        if done.exists():
            self.console.print(f"[dim]{self.n:>2}. {name}: done already ({done.parent})[/]")
            return
        self.console.print(f"[bold]{self.n:>2}. {name}[/]")
        start = time.perf_counter()
        work()
        self.seconds[name] = time.perf_counter() - start


def run_demo(out: Path, quick: bool = False, console: Console | None = None, config: DemoConfig | None = None) -> dict:
    """Returns the comparative report document (also written to OUT/report/). `config` replaces
    the defaults (e.g. more training steps, the full probe suite)."""
    console = console or Console()
    cfg = config or (QUICK if quick else DemoConfig())
    out = Path(out)
    data, models, runs = out / "data", out / "models", out / "runs"
    step = _Steps(console)
    begin = time.perf_counter()

    step("build the audit set", data / "manifest.json", lambda: write_audit_set(cfg.data, data, force=True))
    trained = {"standard": {}, "no-repeats": {"no_repeats": True}, "memsink": {"sinks": cfg.sinks.to_dict()}}
    for name, changes in trained.items():
        model = models / name
        resume = model.with_name(name + ".partial").exists()
        step(
            f"train the {name} model ({cfg.train.arch}, {cfg.train.steps} steps)",
            model / "memaudit.json",
            lambda m=model, c=changes, r=resume: train(data, m, replace(cfg.train, **c), resume=r),
        )
    step(
        "remove the sinks",
        models / "memsink-removed" / "memaudit.json",
        lambda: remove_sinks(models / "memsink", models / "memsink-removed", force=True),
    )
    for method in cfg.unlearn_methods:
        step(
            f"unlearn the standard model with {method}",
            models / f"unlearn-{method}" / "memaudit.json",
            lambda m=method: unlearn(
                models / "standard", data, models / f"unlearn-{m}", replace(cfg.unlearn, method=m), force=True
            ),
        )
    step(
        f"ablate the standard model's top {cfg.ablate_ratio:.0%} member-specific MLP units",
        models / "ablate" / "memaudit.json",
        lambda: ablate(models / "standard", data, models / "ablate", cfg.ablate_ratio, force=True),
    )

    suite = load_suite(cfg.suite)

    def _scan(run: str, model: str, mode: str | None = None, reference: dict | None = None) -> None:
        results = scan(models / model, data_dir=data, sinks_mode=mode, config=suite, reference=reference)
        write_run(results, runs / run, force=True)

    # The oracle never saw the members: the reference of the `ref` membership attack.
    step("scan the no-repeats oracle", runs / "no-repeats" / "results.json", lambda: _scan("no-repeats", "no-repeats"))
    oracle = read_json(runs / "no-repeats" / "results.json")
    scans = {"standard": ("standard", None), "memsink-off": ("memsink", "off"), "memsink-own": ("memsink", "own")}
    scans |= {"memsink-removed": ("memsink-removed", None), "ablate": ("ablate", None)}
    scans |= {f"unlearn-{m}": (f"unlearn-{m}", None) for m in cfg.unlearn_methods}
    for run, (model, mode) in scans.items():
        step(
            f"scan {run}",
            runs / run / "results.json",
            lambda r=run, m=model, s=mode: _scan(r, m, s, reference=oracle),
        )

    order = ["standard", "no-repeats", *[r for r in scans if r != "standard"]]
    doc = compare_runs([runs / r for r in order], reference=runs / "standard")
    write_report(doc, out / "report", force=True)
    print_report(doc, console)
    ran = ", ".join(f"{name.split(' (')[0]} {s:.0f}s" for name, s in step.seconds.items())
    console.print(f"took {time.perf_counter() - begin:.0f}s ({ran or 'everything was done already'})")
    console.print(f"report: {out / 'report' / 'report.html'}")
    return doc
