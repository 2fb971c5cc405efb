"""What deleting the sinks buys at inference: forward throughput of the pruned model against the same model with
its sinks masked (`off` mode), which computes the sink units only to zero them. Forwards alternate between the
two models so drift in machine load hits both alike; the outputs are checked to agree.

    python benchmarks/pruned_inference.py [--reps 30]"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from sink_step_time import bench_config  # same directory: the model both benchmarks time
from transformers import AutoModelForCausalLM

from memaudit.memsinks.config import SinkConfig
from memaudit.memsinks.sinks import Sinks
from memaudit.memsinks.surgery import prune_sink_units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = bench_config(args.seq)
    masked = AutoModelForCausalLM.from_config(config).eval()
    pruned = copy.deepcopy(masked)
    Sinks(masked, SinkConfig()).mode = "off"
    report = prune_sink_units(pruned, Sinks(pruned, SinkConfig()))
    tokens = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    models = {"masked": masked, "pruned": pruned}
    times: dict[str, list[float]] = {name: [] for name in models}
    outputs = {}
    with torch.inference_mode():
        for rep in range(args.warmup + args.reps):
            for name in ("masked", "pruned") if rep % 2 == 0 else ("pruned", "masked"):
                start = time.perf_counter()
                outputs[name] = models[name](tokens).logits
                if rep >= args.warmup:
                    times[name].append(time.perf_counter() - start)
    diff = (outputs["masked"] - outputs["pruned"]).abs().max().item()
    print(f"MLP width {report['units_before']} -> {report['units_after']}; max |logit diff| {diff:.2e}")
    for name, ts in times.items():
        mean = statistics.mean(ts)
        print(f"{name:>6}: {args.batch * args.seq / mean:,.0f} tokens/s (mean {mean:.4f} s per forward)")
    # Medians: on a shared 2-core machine one forward now and then stalls, and a mean follows it.
    speedup = statistics.median(times["masked"]) / statistics.median(times["pruned"])
    print(f"throughput ratio pruned/masked (medians): {speedup:.3f}")


if __name__ == "__main__":
    main()
