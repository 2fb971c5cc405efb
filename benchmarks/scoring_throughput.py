"""What the scoring pass costs over a plain forward: `score_sequences` (per-token logp, hit, mu,
sigma, top-k logp, the LM head in chunks) against a raw batched `model(input_ids).logits` of the
same model on the same tokens, in the same batches, under inference mode. Runs alternate (ABBA
order) so drift in machine load hits both alike. Target: throughput ratio scoring/raw >= 0.85.

    python benchmarks/scoring_throughput.py [--reps 10] [--sequences 64] [--seq 128]"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from memaudit.models.zoo import build_config, build_model
from memaudit.probes.scoring import score_sequences

TARGET = 0.85


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence, the boundary token included")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(build_config("gpt2-5m", args.vocab, 0, 0), seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, args.vocab, (args.sequences, args.seq), generator=gen)
    tokens[:, 0] = 0  # every scored sequence starts with the boundary token
    sequences = tokens.tolist()
    mask = torch.ones_like(tokens)  # the scoring pass passes its (all-ones) mask too
    rows_per_batch = max(1, args.max_batch_tokens // args.seq)  # score_sequences' batches for equal lengths

    @torch.inference_mode()
    def raw() -> None:
        for start in range(0, len(tokens), rows_per_batch):
            batch = slice(start, start + rows_per_batch)
            model(tokens[batch], attention_mask=mask[batch]).logits  # noqa: B018

    def scoring() -> None:
        score_sequences(model, sequences, pad_id=0, max_batch_tokens=args.max_batch_tokens)

    arms = {"raw forward": raw, "scoring pass": scoring}
    times: dict[str, list[float]] = {name: [] for name in arms}
    for rep in range(args.warmup + args.reps):
        for name in list(arms) if rep % 2 == 0 else list(arms)[::-1]:
            start = time.perf_counter()
            arms[name]()
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - start)
    n_tokens = args.sequences * args.seq
    params = sum(p.numel() for p in model.parameters())
    print(f"gpt2-5m ({params / 1e6:.1f}M parameters, vocab {args.vocab}), {args.sequences} x {args.seq} tokens")
    for name, ts in times.items():
        print(f"{name:>13}: median {statistics.median(ts):.4f} s = {n_tokens / statistics.median(ts):,.0f} tokens/s")
    ratio = statistics.median(times["raw forward"]) / statistics.median(times["scoring pass"])
    verdict = "ok" if ratio >= TARGET else "UNDER TARGET"
    print(f"throughput ratio scoring/raw (medians): {ratio:.3f}; target >= {TARGET}: {verdict}")


if __name__ == "__main__":
    main()
