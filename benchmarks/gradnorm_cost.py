"""What GradNorm's batched per-sample gradients cost over a plain batched forward and backward of
the same texts (issue 20's target: at most 1.3x).

- GradNorm: `plan_gradnorm` + `gradient_norms` (memaudit/probes/gradnorm.py), texts per backward as
  the plan gives them (at most MAX_CHUNK), per-text norms out;
- plain: the same texts in the same chunks, right-padded to the chunk's longest, one forward of the
  batch with the mean token NLL over the batch's text tokens, one `loss.backward()` into `.grad`,
  then the gradients zeroed (`zero_grad(set_to_none=True)`): what any training step costs.

Runs alternate (ABBA) so drift in machine load hits both alike; the ratio is taken per repetition
(GradNorm time / plain time) and reported as median, min and max, with the CPU beside it.

    python benchmarks/gradnorm_cost.py [--arch gpt2-1m] [--texts 64] [--min-len 64] [--max-len 128] [--reps 7]"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from memaudit.common.hardware import cpu_description
from memaudit.models.zoo import build_config, build_model
from memaudit.probes.gradnorm import gradient_norms, plan_gradnorm

TARGET = 1.3


def plain_step(model, sequences: list[list[int]], pad_id: int, chunk: int) -> None:
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    for start in range(0, len(order), chunk):
        batch = order[start : start + chunk]
        width = len(sequences[batch[0]])
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(sequences[i])] = torch.as_tensor(sequences[i])
            mask[row, : len(sequences[i])] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logp = logits.log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]
        scored = mask[:, 1:].to(logp.dtype)
        loss = -(logp * scored).sum() / scored.sum()
        loss.backward()
        model.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="gpt2-1m")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--min-len", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model(build_config(args.arch, vocab_size=args.vocab, bos_token_id=0, eos_token_id=0), seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(args.min_len, args.max_len + 1, (args.texts,), generator=gen).tolist()
    seqs = [[0] + torch.randint(1, args.vocab, (n - 1,), generator=gen).tolist() for n in lengths]
    chunk = plan_gradnorm(model, max(lengths)).chunk

    def gradnorm() -> None:
        gradient_norms(model, seqs, pad_id=0, chunk=chunk)

    def plain() -> None:
        plain_step(model, seqs, 0, chunk)

    for f in (gradnorm, plain):  # warm-up
        f()
    times = {"gradnorm": [], "plain": []}
    for rep in range(args.reps):
        for name in ("gradnorm", "plain") if rep % 2 == 0 else ("plain", "gradnorm"):
            begin = time.perf_counter()
            (gradnorm if name == "gradnorm" else plain)()
            times[name].append(time.perf_counter() - begin)
    ratios = [g / p for g, p in zip(times["gradnorm"], times["plain"])]
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.arch} ({n_params / 1e6:.2f}M parameters), {args.texts} texts of {args.min_len}-{args.max_len} tokens, "
        f"{chunk} texts per backward, torch {torch.__version__} threads {torch.get_num_threads()}; CPU {cpu_description()}"
    )
    print(
        f"gradnorm {statistics.median(times['gradnorm']):.3f}s  plain forward+backward "
        f"{statistics.median(times['plain']):.3f}s (medians of {args.reps})"
    )
    print(
        f"ratio gradnorm / plain: median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f}); "
        f"target <= {TARGET}x: {'met' if statistics.median(ratios) <= TARGET else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
