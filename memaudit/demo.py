"""`memaudit demo`: the whole path on the embedded Austen corpus, each step skipped when its
output already exists, so a rerun (or an interrupted run) picks up where it was."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from memaudit.corpus.audit import AuditConfig, write_audit_set
from memaudit.fileio import read_json
from memaudit.models.sinks import SinkConfig
from memaudit.probes.scan import scan
from memaudit.report.console import print_comparison
from memaudit.report.render import write_run
from memaudit.training.loop import TrainConfig, train


@dataclass(frozen=True)
class DemoConfig:
    data: AuditConfig = field(default_factory=AuditConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(arch="gpt2-5m", steps=500, bf16=True))
    sinks: SinkConfig = field(default_factory=SinkConfig)


QUICK = DemoConfig(
    data=AuditConfig(repeats=(1, 8, 32), members_per_level=4, canaries_per_level=2, n_valid=100, n_natural=300),
    train=TrainConfig(arch="gpt2-1m", steps=60, batch_size=8, bf16=False, eval_every=30, checkpoint_every=30),
)

# label -> (training changes, scan sink mode)
MODELS = {
    "standard": ({}, None),
    "no-repeats": ({"no_repeats": True}, None),
    "memsink": ({"sinks": "memsink"}, "off"),
}


def run_demo(out: Path, quick: bool = False, console: Console | None = None) -> dict[str, dict]:
    console = console or Console()
    cfg = QUICK if quick else DemoConfig()
    out = Path(out)
    data_dir = out / "data"
    if not (data_dir / "manifest.json").is_file():
        console.print(f"[bold]1/3[/] building the audit set in {data_dir}")
        write_audit_set(cfg.data, data_dir, force=data_dir.exists())
    runs: dict[str, dict] = {}
    for label, (changes, _) in MODELS.items():
        model_dir = out / "models" / label
        if not (model_dir / "memaudit.json").is_file():
            console.print(f"[bold]2/3[/] training the {label} model ({cfg.train.arch}, {cfg.train.steps} steps)")
            settings = {**changes, "sinks": cfg.sinks.to_dict()} if "sinks" in changes else changes
            train(
                data_dir,
                model_dir,
                replace(cfg.train, **settings),
                resume=model_dir.with_name(label + ".partial").exists(),
            )
    scans = [(label, label, mode) for label, (_, mode) in MODELS.items()] + [("memsink (own)", "memsink", "own")]
    for label, model, mode in scans:
        run_dir = out / "runs" / label.replace(" ", "-").replace("(", "").replace(")", "")
        if not (run_dir / "results.json").is_file():
            console.print(f"[bold]3/3[/] scanning {label}")
            write_run(
                scan(out / "models" / model, data_dir=data_dir, sinks_mode=mode),
                run_dir,
                force=True,
            )
        runs[label] = read_json(run_dir / "results.json")
    print_comparison(runs, console)
    console.print(f"runs in {out / 'runs'}; open {out / 'runs' / 'standard' / 'report.html'}")
    return runs
