"""Reproduces "Sink fine-tuning of a pretrained model" in docs/results.md: MemSinks on a model
that already exists. A `gpt2-5m` is pretrained on natural Austen text only (one half of the
corpus), then fine-tuned on the other half with planted members (the demo's lean audit set, in
the pretrained model's own tokenizer) five ways: standard fine-tuning; sink fine-tuning with
`--sink-units new:N` and with `existing` (both `--sinks 0.7,0.3`, scanned with sinks off); the
fine-tuning oracle (`--no-repeats`); and NPO applied to the standard fine-tune. Every model is
scanned with the `ci` suite against its seed's standard fine-tune. Prints the table (mean and
range over seeds), the machine and the time each phase took.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/sink_finetune_experiment.py --out reports/sink-ft [--seeds 0,1,2]
        [--pretrain-seed 0] [--threads 1]

The pretrained model and the data dirs are shared by the seeds (`--seeds` are the fine-tuning's;
`--pretrain-seed` the base model's: give each its own `--out`). Everything finished is kept: a
rerun continues where it was."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from seed_table import mean_range  # scripts/ is on the path when a script runs

from memaudit.app.demo import DemoConfig
from memaudit.common.fileio import write_json
from memaudit.common.hardware import cpu_description
from memaudit.corpus.audit import write_audit_set
from memaudit.corpus.sources import load_documents
from memaudit.memsinks.config import SinkConfig
from memaudit.probes.scan import scan
from memaudit.probes.suite import load_suite
from memaudit.training.config import TrainConfig
from memaudit.training.train import train
from memaudit.unlearning.run import unlearn

NEW_UNITS = 512  # half the pretrained width (1024): a pool of a third of the widened MLP, like G = 0.7
PRETRAIN = TrainConfig(
    arch="gpt2-5m", steps=300, batch_size=8, lr=2e-3, warmup_steps=20, no_repeats=True, precision="fp32"
)
# The demo's training regime (300 steps of 8 x 128 tokens at 2e-3): at 200 steps and 1e-3 nothing was extracted.
FINETUNE = TrainConfig(steps=300, batch_size=8, lr=2e-3, warmup_steps=20, precision="fp32")
MODELS = {  # name -> what the table calls it
    "standard": "standard fine-tuning",
    "sinks-new": f"sink fine-tuning, new:{NEW_UNITS} (sinks off)",
    "sinks-existing": "sink fine-tuning, existing (sinks off)",
    "oracle": "fine-tuning oracle (no members)",
    "npo": "NPO on the standard fine-tune",
}
LEVELS = ("1", "8", "32", "128")


def halves(root: Path) -> tuple[Path, Path]:
    """The Austen corpus in two halves (alternate documents): pretraining text, fine-tuning text."""
    paths = root / "pretrain.jsonl", root / "finetune.jsonl"
    if not paths[1].is_file():
        root.mkdir(parents=True, exist_ok=True)
        docs = load_documents("austen")
        for part, path in enumerate(paths):
            path.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[part::2]))
    return paths


def prepare(root: Path, pretrain: TrainConfig) -> tuple[Path, Path]:
    """The pretrained model (natural text of the first half only) and the fine-tuning data dir."""
    pre_corpus, ft_corpus = halves(root)
    lean = DemoConfig().data
    pre_data, base, ft_data = root / "data-pretrain", root / "models" / "pretrained", root / "data-finetune"
    if not pre_data.exists():
        write_audit_set(replace(lean, corpus=str(pre_corpus), n_natural=3000), pre_data)
    if not base.exists():
        train(pre_data, base, pretrain, progress=False)
    trained_with = json.loads((base / "memaudit.json").read_text())["seed"]
    if trained_with != pretrain.seed:
        raise SystemExit(
            f"{base} was pretrained with seed {trained_with}, not {pretrain.seed}: give each base its own --out"
        )
    if not ft_data.exists():
        write_audit_set(replace(lean, corpus=str(ft_corpus), tokenizer=str(base), vocab_size=None), ft_data)
    return base, ft_data


def fine_tune(root: Path, base: Path, data: Path, seed: int, threads: int) -> dict[str, Path]:
    """The five models of one seed."""
    models = root / f"seed{seed}"
    sinks = SinkConfig(0.7, 0.3)
    configs = {
        "standard": {},
        "sinks-new": {"sinks": replace(sinks, new_units=NEW_UNITS).to_dict()},
        "sinks-existing": {"sinks": sinks.to_dict()},
        "oracle": {"no_repeats": True},
    }
    for name, changes in configs.items():
        if not (models / name).exists():
            config = replace(FINETUNE, init=str(base), seed=seed, threads=threads, **changes)
            train(data, models / name, config, progress=False)
    if not (models / "npo").exists():
        config = replace(DemoConfig().unlearn, method="npo", seed=seed, threads=threads, precision="fp32")
        unlearn(models / "standard", data, models / "npo", config, progress=False)
    return {name: models / name for name in MODELS}


def scan_all(models: dict[str, Path], data: Path) -> dict[str, dict]:
    """Each model's scan (`ci` suite) against the standard fine-tune, cached as JSON beside it."""
    suite, results = load_suite("ci"), {}
    for name in ["standard", *(m for m in models if m != "standard")]:
        cached = models[name] / "scan.json"
        if not cached.is_file():
            standard = results.get("standard")
            done = scan(models[name], data_dir=data, config=suite, emitted=False, standard=standard)
            write_json(cached, done)
        results[name] = json.loads(cached.read_text())
    return results


def table(runs: list[dict[str, dict]]) -> str:
    """Markdown: one row per model, mean (range) over seeds."""
    head = "| model | gap closed | exact x1 | x8 | x32 | x128 | MIA AUC | valid loss |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for name, label in MODELS.items():
        metrics = [run[name]["metrics"] for run in runs]
        gap = [m.get("memorization.gap_closed", {}).get("value") for m in metrics] if name != "standard" else []
        exact = [[m["extraction.exact_rate"]["by_repeats"][lv]["value"] for m in metrics] for lv in LEVELS]
        cells = [
            mean_range(gap) if gap else "0 (reference)",
            *(mean_range(e) for e in exact),
            mean_range([m["privacy.mia.loss.auc"]["value"] for m in metrics]),
            mean_range([m["capability.valid_loss"]["value"] for m in metrics], 3),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds")
    parser.add_argument("--pretrain-seed", type=int, default=0, help="the base model's seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: room for other jobs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seconds, start = {}, time.perf_counter()
    base, data = prepare(args.out, replace(PRETRAIN, seed=args.pretrain_seed, threads=args.threads))
    seconds["pretrain and data"] = time.perf_counter() - start
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.perf_counter()
        models = fine_tune(args.out, base, data, seed, args.threads)
        seconds[f"seed {seed}: fine-tune"] = time.perf_counter() - start
        start = time.perf_counter()
        runs.append(scan_all(models, data))
        seconds[f"seed {seed}: scans"] = time.perf_counter() - start
    print(f"machine: {cpu_description()}; torch {torch.__version__}, {args.threads} thread(s), fp32")
    base_valid = json.loads((base / "memaudit.json").read_text())["final"]["valid_loss"]
    print(f"base model (pretraining seed {args.pretrain_seed}): validation loss {base_valid:.3f}")
    print("time (this run): " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    print(table(runs))


if __name__ == "__main__":
    main()
