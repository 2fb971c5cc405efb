"""What the scoring pass costs over a plain forward: `score_sequences` (per-token logp, hit, mu,
sigma, top-k logp, the LM head in chunks) against a raw batched forward of the same model on the
same tokens.

The raw forward is `model(input_ids, attention_mask=mask).logits` under inference mode, in the
batches `score_sequences` makes (equal lengths: `max_batch_tokens // seq` rows each), producing the
full float32 logits of every position and nothing else: what any scorer has to compute before it
reads a single log-prob. Runs alternate (ABBA order) so drift in machine load hits both alike; the
ratio is taken per repetition (raw time / scoring time) and reported as median, min and max.

The statistics cost more where the true token is in the model's top k (the top-k runs only on those
rows), so the tokens come two ways:
- `--tokens random`: uniform random ids, on which a random model ranks almost no token in its top k;
- `--tokens greedy`: the model's own greedy continuation of a random first token, so every token is
  its argmax: every row takes the top-k, the worst case for the pass.

    python benchmarks/scoring_throughput.py [--tokens random|greedy] [--reps 10] [--sequences 64] [--seq 128]"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from memaudit.common.hardware import cpu_description
from memaudit.models.zoo import build_config, build_model
from memaudit.probes.scoring import score_sequences

TARGET = 0.95


def make_tokens(model, kind: str, n: int, seq: int, vocab: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, vocab, (n, seq), generator=gen)
    tokens[:, 0] = 0  # every scored sequence starts with the boundary token
    if kind == "greedy":
        with torch.inference_mode():
            prompt = tokens[:, :2]
            tokens = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=seq - 2,
                min_new_tokens=seq - 2,
                do_sample=False,
                pad_token_id=0,
            )
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence, the boundary token included")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--arch", default="gpt2-5m", help="a memaudit zoo model, randomly initialized")
    parser.add_argument("--tokens", choices=("random", "greedy"), default="random")
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(build_config(args.arch, args.vocab, 0, 0), seed=0).eval()
    tokens = make_tokens(model, args.tokens, args.sequences, args.seq, args.vocab)
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

    scored = score_sequences(model, sequences, pad_id=0, max_batch_tokens=args.max_batch_tokens)
    in_top = sum(int(torch.isfinite(torch.as_tensor(s.topk_logp)).sum()) for s in scored) / sum(map(len, scored))
    hits = sum(int(s.hit.sum()) for s in scored) / sum(map(len, scored))

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
    print(f"CPU: {cpu_description()}; torch threads: {torch.get_num_threads()}")
    print(
        f"{args.arch} ({params / 1e6:.1f}M parameters, vocab {args.vocab}), {args.sequences} x {args.seq} tokens "
        f"({args.tokens}): {in_top:.0%} of tokens in the top-k, {hits:.0%} greedy hits"
    )
    for name, ts in times.items():
        print(f"{name:>13}: median {statistics.median(ts):.4f} s = {n_tokens / statistics.median(ts):,.0f} tokens/s")
    ratios = sorted(r / s for r, s in zip(times["raw forward"], times["scoring pass"]))
    ratio = statistics.median(ratios)
    verdict = "ok" if ratio >= TARGET else "UNDER TARGET"
    print(
        f"throughput ratio scoring/raw: median {ratio:.3f} (min {ratios[0]:.3f}, max {ratios[-1]:.3f}, "
        f"{len(ratios)} paired reps); target >= {TARGET}: {verdict}"
    )


if __name__ == "__main__":
    main()
