"""MemSink on a GPU, measured in one run: `gpt2-20m` trained on the lean demo's audit set with
`precision="auto"` (bf16 where the GPU runs it natively), standard and with sinks (paper
defaults G=0.7, P=0.3) on the same batches, then both scanned with the `ci` suite, the model
placed by `device_map="auto"` (what `memaudit scan model` does on a GPU).

It prints and writes OUT/gpu_sinks.json: the GPU, torch, the precision `auto` chose and why,
each model's training tokens/s, the sink overhead (standard tokens/s over MemSink tokens/s, the
same steps and batches), scan seconds and the headline metrics of both models.

    python benchmarks/gpu_sinks.py --out OUT [--steps 600] [--batch-size 32] [--arch gpt2-20m]

Without CUDA it refuses, unless --allow-cpu: a dry run of the same path (e.g. --arch gpt2-1m
--steps 20) that checks the script, not the GPU."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers

from memaudit.app.demo import DemoConfig, training_plan
from memaudit.common.hardware import cpu_description
from memaudit.corpus.audit import write_audit_set
from memaudit.probes.scan import scan
from memaudit.probes.suite import load_suite
from memaudit.training.train import train

HEADLINE = ("memorization.member_loss", "extraction.exact_rate", "privacy.mia.loss.auc", "capability.valid_loss")


def device_description() -> dict:
    if not torch.cuda.is_available():
        return {"device": cpu_description()}
    props = torch.cuda.get_device_properties(0)
    return {
        "device": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "bf16": torch.cuda.is_bf16_supported(),
        "cuda": torch.version.cuda,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", default="gpt2-20m")
    parser.add_argument("--steps", type=int, default=600, help="training steps per model (the demo's lr schedule)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step (the demo's 8 starve a GPU)")
    parser.add_argument("--allow-cpu", action="store_true", help="a dry run of the path without CUDA")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        sys.exit("gpu_sinks.py: no CUDA device here; run it on a GPU machine, or pass --allow-cpu for a dry run")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    demo = DemoConfig()
    data = args.out / "data"
    if not data.exists():
        write_audit_set(demo.data, data)
    cfg = replace(demo.train, arch=args.arch, steps=args.steps, batch_size=args.batch_size, precision="auto")
    plan = training_plan(replace(demo, train=cfg), data)
    record: dict = {
        **device_description(),
        "torch": torch.__version__,
        "arch": args.arch,
        "batch": f"{cfg.batch_size}x{cfg.seq_len}",
        "steps": args.steps,
        "models": {},
    }
    for name in ("standard", "memsink"):
        start = time.perf_counter()
        result = train(data, args.out / "models" / name, plan[name], progress=False, force=True)
        meta = json.loads((result.path / "memaudit.json").read_text())
        record["precision"] = meta["precision"]
        record["models"][name] = {
            "train_seconds": round(time.perf_counter() - start, 1),
            "tokens_per_s": round(result.tokens_per_s),
        }
        print(
            f"train {name}: {result.tokens_per_s:,.0f} tokens/s ({meta['precision']['name']}, {meta['precision']['reason']})"
        )
    models = record["models"]
    record["sink_overhead"] = round(models["standard"]["tokens_per_s"] / models["memsink"]["tokens_per_s"], 3)
    print(f"sink overhead: MemSink steps take {record['sink_overhead']:.3f}x the standard model's")

    suite = load_suite(demo.suite)
    for name in ("standard", "memsink"):
        start = time.perf_counter()
        doc = scan(args.out / "models" / name, data_dir=data, config=suite)
        models[name]["scan_seconds"] = round(time.perf_counter() - start, 1)
        models[name]["scan_precision"] = doc["model"]["precision"]
        models[name]["metrics"] = {m: doc["metrics"][m]["value"] for m in HEADLINE if m in doc["metrics"]}
        print(f"scan {name}: {models[name]['scan_seconds']} s, {models[name]['metrics']}")

    (args.out / "gpu_sinks.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
