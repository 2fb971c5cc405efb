"""What chunking the LM head saves with a large vocabulary: peak memory of the scoring pass
(`score_sequences`: the head applied in row chunks, per-token statistics kept, logits dropped)
against the naive way, full `model(input_ids).logits` and one `log_softmax` over all of them,
then the same statistics. Each arm runs in a fresh process and reports its peak resident set
size (getrusage) and the rise over its resident size just before scoring; the two arms' per-token
log-probs are checked to agree.

    python benchmarks/vocab_memory.py [--vocab 49152] [--sequences 16] [--seq 128]"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time

import numpy as np
import torch

from memaudit.models.zoo import build_config, build_model
from memaudit.probes.scoring import TOPK, score_sequences


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@torch.inference_mode()
def unchunked(model, ids: torch.Tensor) -> np.ndarray:
    """The naive pass: every logit of every position, one log_softmax, then the statistics."""
    logp = model(ids, attention_mask=torch.ones_like(ids)).logits[:, :-1].float().log_softmax(-1)
    targets = ids[:, 1:]
    true = logp.gather(-1, targets[..., None]).squeeze(-1)
    probs = logp.exp()
    mu = (probs * logp).sum(-1)
    sigma = (probs * (logp - mu[..., None]).square()).sum(-1).sqrt()
    top = logp.topk(TOPK, dim=-1)
    hit = logp.argmax(-1) == targets
    del probs, top, hit, sigma
    return true.flatten().numpy()


def run_arm(arm: str, args: argparse.Namespace, out: mp.Queue) -> None:
    torch.set_num_threads(args.threads)
    model = build_model(build_config("gpt2-5m", args.vocab, 0, 0), seed=0).eval()
    ids = torch.randint(1, args.vocab, (args.sequences, args.seq), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 0  # the boundary token
    before = rss_mib()
    start = time.perf_counter()
    if arm == "chunked":
        logp = np.concatenate([s.logp for s in score_sequences(model, ids.tolist(), pad_id=0)])
    else:
        logp = unchunked(model, ids)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out.put((arm, before, peak, seconds, logp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    logps, rises = {}, {}
    for arm in ("chunked", "unchunked"):
        queue = ctx.Queue()
        proc = ctx.Process(target=run_arm, args=(arm, args, queue))
        proc.start()
        name, before, peak, seconds, logp = queue.get()
        proc.join()
        logps[name], rises[name] = logp, peak - before
        print(
            f"{name:>9}: peak RSS {peak:,.0f} MiB, +{peak - before:,.0f} MiB over the {before:,.0f} MiB before scoring, "
            f"{seconds:.2f} s"
        )
    logits_mib = args.sequences * (args.seq - 1) * args.vocab * 4 / 2**20
    print(f"vocab {args.vocab}, {args.sequences} x {args.seq} tokens: one fp32 logits tensor is {logits_mib:,.0f} MiB")
    agree = np.allclose(logps["chunked"], logps["unchunked"], atol=1e-3)
    ratio = rises["unchunked"] / max(rises["chunked"], 1.0)
    print(f"log-probs agree: {agree}; memory rise unchunked/chunked: {ratio:.1f}x")


if __name__ == "__main__":
    main()
