"""What MemSinks cost in training: the same GPT-2 trained without sinks, with sinks, and with sinks and the repeats'
loss routed to them (`--route all`: a second backward pass), in one run, the arms' order rotating every step (so
drift in machine load hits them alike), timing everything a trainer does per step, the per-batch mask build
included. Target: sinks/plain step-time ratio <= 1.10. Routing has no target; its ratio is reported.

    python benchmarks/sink_step_time.py [--steps 30] [--warmup 5] [--bf16] [--routed-share 0.4]"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, GPT2Config

from memaudit.memsinks.config import SinkConfig
from memaudit.memsinks.routing import SinkGradients, split_token_loss
from memaudit.memsinks.sinks import Sinks

TARGET = 1.10


def bench_config(seq: int) -> GPT2Config:
    """The model both benchmarks time: GPT-2, 4 layers, d=256, 4k vocabulary (the demo's scale)."""
    return GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=4096, n_positions=seq, bos_token_id=0, eos_token_id=0)


def packed_doc_ids(gen: torch.Generator, universe: torch.Tensor, batch: int, seq: int, docs: int) -> torch.Tensor:
    """Per-token ids of packed rows: each row cut into 4 documents at random points, ids drawn from `docs` ids."""
    chosen = universe[torch.randperm(len(universe), generator=gen)[:docs]]
    cuts = torch.sort(torch.randint(1, seq, (batch, 3), generator=gen), dim=1).values
    segment = (torch.arange(seq)[None, None, :] >= cuts[:, :, None]).sum(1)  # [batch, seq] in 0..3
    picks = chosen[torch.randint(0, docs, (batch, 4), generator=gen)]
    return picks.gather(1, segment)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--docs", type=int, default=40, help="distinct document ids per batch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as the demo trains")
    parser.add_argument("--routed-share", type=float, default=0.4, help="share of the ids whose loss is routed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = bench_config(args.seq)
    plain = AutoModelForCausalLM.from_config(config).train()
    sink_model, routed_model = copy.deepcopy(plain), copy.deepcopy(plain)
    sinks, routed_sinks = Sinks(sink_model, SinkConfig()), Sinks(routed_model, SinkConfig(route="all"))
    routing = SinkGradients(routed_sinks)
    arms = {
        "plain": (plain, None, torch.optim.AdamW(plain.parameters(), lr=1e-3)),
        "sinks": (sink_model, sinks, torch.optim.AdamW(sink_model.parameters(), lr=1e-3)),
        "routed": (routed_model, routed_sinks, torch.optim.AdamW(routed_model.parameters(), lr=1e-3)),
    }
    gen = torch.Generator().manual_seed(0)
    universe = torch.randint(1, 2**62, (2000,), generator=gen)  # content-hash-like ids, reused across batches
    repeated = universe[: int(len(universe) * args.routed_share)]
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for step in range(args.warmup + args.steps):
        tokens = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=gen)
        doc_ids = packed_doc_ids(gen, universe, args.batch, args.seq, args.docs)
        for name in names[step % 3 :] + names[: step % 3]:
            model, arm_sinks, optimizer = arms[name]
            start = time.perf_counter()
            if arm_sinks is not None:
                arm_sinks.set_doc_ids(doc_ids)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                if name == "routed":
                    logits = model(tokens).logits
                    kept, routed = split_token_loss(logits, tokens, torch.isin(doc_ids, repeated))
                    add = routing.of(routed) if routed is not None else (lambda: None)
                    loss = kept
                else:
                    loss = model(tokens, labels=tokens).loss
            loss.backward()
            if name == "routed":
                add()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= args.warmup:
                times[name].append(time.perf_counter() - start)
    for name, ts in times.items():
        print(f"{name:>5}: mean {statistics.mean(ts):.4f} s/step, median {statistics.median(ts):.4f} s/step")
    # Medians: on a shared 2-core machine one step now and then stalls for seconds, and a mean follows it.
    ratio = statistics.median(times["sinks"]) / statistics.median(times["plain"])
    mean_ratio = statistics.mean(times["sinks"]) / statistics.mean(times["plain"])
    verdict = "ok" if ratio <= TARGET else "OVER TARGET"
    print(f"step-time ratio sinks/plain (medians): {ratio:.3f} (means {mean_ratio:.3f}); target <= {TARGET}: {verdict}")
    routed = statistics.median(times["routed"]) / statistics.median(times["plain"])
    over_sinks = statistics.median(times["routed"]) / statistics.median(times["sinks"])
    print(f"step-time ratio routed/plain (medians): {routed:.3f}; routed/sinks: {over_sinks:.3f}")


if __name__ == "__main__":
    main()
