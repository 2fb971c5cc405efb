"""Reproduces "Robustness of removal (stress)" in docs/results.md: does removed memorization come
back under weight quantization or a few steps of fine-tuning?

For each seed, `run_demo` trains the demo's models (standard, no-repeats oracle, MemSink, and from
the standard model GA, NPO and a 10% ablation; the MemSink model's sinks removed) and scans them
with the `ci` suite; then every one of the six deployed models (standard, oracle, MemSink with
sinks removed, NPO, GA, ablated) goes through `memaudit stress` with quant:int8, quant:int4,
relearn:forget-half:STEPS and relearn:retain:STEPS, against its seed's standard model. The demo's
scan of each model is its "before". Prints the tables (mean and range over seeds) as Markdown and
the time each phase took; writes a comparative report of the first seed, OUT/report-seed<S>/.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/stress_experiment.py --out reports/stress [--seeds 0,1,2] [--steps 30]

Everything finished is kept: a rerun (or a run after an interruption) continues where it was."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
from seed_table import mean_range  # scripts/ is on the path when a script runs

from memaudit.app.demo import DemoConfig, run_demo
from memaudit.common.hardware import cpu_description
from memaudit.report.compare import compare_runs
from memaudit.report.render import write_report
from memaudit.report.run_files import read_results
from memaudit.stress.attacks import StressConfig
from memaudit.stress.run import stress

MODELS = {  # model dir in the demo's OUT/models/ -> what the tables call it
    "standard": "standard",
    "no-repeats": "no-repeats oracle",
    "memsink-removed": "MemSink, sinks removed",
    "unlearn-npo": "NPO",
    "unlearn-ga": "GA",
    "ablate": "ablated 10%",
}


def demo_config(seed: int) -> DemoConfig:
    """The demo's defaults, with `seed` for training and unlearning, on one thread."""
    base = DemoConfig()
    return replace(
        base,
        train=replace(base.train, seed=seed, threads=1),
        unlearn=replace(base.unlearn, seed=seed, threads=1),
    )


def stress_seed(root: Path, seed: int, steps: int) -> list[dict]:
    """Every model of one seed's demo under every attack; returns the attacked runs' results."""
    attacks = ("quant:int8", "quant:int4", f"relearn:forget-half:{steps}", f"relearn:retain:{steps}")
    config = StressConfig(attacks=attacks, suite=DemoConfig().suite, seed=seed, threads=1)
    results = []
    for model in MODELS:
        runs = stress(
            root / "models" / model,
            root / "data",
            root / "stress" / model,
            config,
            standard=root / "runs" / "standard",
            before=read_results(root / "runs" / model),
            resume=True,
            progress=False,
        )
        results += [r | {"stressed": model} for r in runs]
    return results


def _steps(entries: list[dict]) -> str:
    """Steps to recover over seeds: the recovered ones' mean and range, and how many did not."""
    steps = [e["value"] for e in entries if e.get("within_budget")]
    missed = [e for e in entries if not e.get("within_budget")]
    shown = mean_range(steps, 0) if steps else ""
    if missed:
        shown += f"{'; ' if shown else ''}> {missed[0]['budget']} in {len(missed)} of {len(entries)}"
    return shown


def table(results: list[dict]) -> str:
    """Markdown: one row per model and attack, mean (range) over seeds."""
    head = "| model | attack | gap closed before | after | retained | steps to recover | MIA AUC after | exact x128 after |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    attacks = list(dict.fromkeys(r["attack"]["name"] for r in results))
    for model, name in MODELS.items():
        for attack in attacks:
            rows = [r for r in results if r["stressed"] == model and r["attack"]["name"] == attack]
            gaps = [r["attack"]["gap_closed"] for r in rows]
            kept = [r["metrics"].get(f"robustness.{r['attack']['family']}.gap_closed_retained") for r in rows]
            steps = [r["metrics"]["robustness.relearn_steps_to_recover"] for r in rows if attack.startswith("relearn")]
            auc = [r["metrics"]["privacy.mia.loss.auc"]["value"] for r in rows]
            exact = [r["metrics"]["extraction.exact_rate"]["by_repeats"]["128"]["value"] for r in rows]
            cells = [
                mean_range([g["before"] for g in gaps]),
                mean_range([g["after"] for g in gaps]),
                mean_range([k["value"] for k in kept if k]),
                _steps(steps) if steps else "–",
                mean_range(auc),
                mean_range(exact),
            ]
            lines.append(f"| {name} | `{attack}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=30, help="relearning steps of each relearn attack")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    results, seconds = [], {"demo": 0.0, "stress": 0.0}
    for seed in seeds:
        root = args.out / f"seed{seed}"
        start = time.process_time()  # CPU time: with one thread, the time on an otherwise idle core
        run_demo(root, config=demo_config(seed))
        seconds["demo"] += time.process_time() - start
        start = time.process_time()
        results += [r | {"seed": seed} for r in stress_seed(root, seed, args.steps)]
        seconds["stress"] += time.process_time() - start
    write_report(report_of(args.out / f"seed{seeds[0]}"), args.out / f"report-seed{seeds[0]}", force=True)
    print(f"machine: {cpu_description()}; torch {torch.__version__}, 1 thread")
    print(f"CPU time: demos {seconds['demo'] / 60:.1f} min, stress {seconds['stress'] / 60:.1f} min (this run)")
    print(table(results))


def report_of(root: Path) -> dict:
    """One seed's comparative report: every model before (the demo's scan) and under every attack."""
    before = [root / "runs" / m for m in MODELS]
    attacked = sorted(p for m in MODELS for p in (root / "stress" / m).iterdir() if (p / "results.json").is_file())
    return compare_runs(before + attacked, reference=root / "runs" / "standard")


if __name__ == "__main__":
    main()
