"""Training throughput, measured in one run on the machine it runs on.

1. memaudit's whole training path (`memaudit.training.train.train`: accelerate, the packed data
   stream, LR schedule, clipping, the per-step reduction and progress bar) vs a plain PyTorch
   loop on the same Hugging Face model, batches and AdamW, with no accelerate and no hooks.
   Rounds alternate the two arms, so drift in machine load hits both alike. Target: >= 0.95.
2. A precision table: memaudit's training tokens/s in fp32, bf16 autocast and `auto` (with
   what `auto` chose and why), beside the CPU's model, kernel capability and cores.

    python benchmarks/train_throughput.py [--steps 20] [--rounds 3] [--arch gpt2-5m] [--threads N]
                                          [--batch-size B] [--vocab-size V]"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers

from memaudit.app.demo import DemoConfig
from memaudit.common.hardware import cpu_description
from memaudit.common.precision import resolve_precision
from memaudit.corpus.audit import AuditSet, write_audit_set
from memaudit.corpus.tokenizer import load_tokenizer
from memaudit.models.zoo import build_config, build_model
from memaudit.training.config import TrainConfig
from memaudit.training.train import train, training_stream

TARGET = 0.95


def memaudit_tokens_per_s(data: Path, root: Path, cfg: TrainConfig) -> float:
    """Tokens/s of `train()` as it reports them: every step but the first, evaluation excluded."""
    out = root / f"m{time.perf_counter_ns()}"
    return train(data, out, cfg, progress=False).tokens_per_s


def plain_tokens_per_s(data: Path, cfg: TrainConfig) -> float:
    """The same model, batches and optimizer in the plainest loop; timed over the same steps."""
    tok = load_tokenizer(data / "tokenizer")
    stream = training_stream(AuditSet.load(data), tok, cfg)  # the very batches train() takes
    model = build_model(build_config(cfg.arch, len(tok), tok.bos_token_id, tok.eos_token_id), cfg.seed).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    bf16 = resolve_precision(cfg.precision, "cpu").name == "bf16"
    tokens, seconds = 0, 0.0
    for step in range(cfg.steps):
        start = time.perf_counter()
        batch = torch.from_numpy(stream.batch(step * cfg.batch_size, cfg.batch_size)[0])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # as in train(): the first step pays for warm-up allocations
            tokens += batch.numel()
            seconds += time.perf_counter() - start
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating memaudit/plain rounds")
    parser.add_argument("--arch", default="gpt2-5m")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--table-steps", type=int, default=6, help="steps per precision in the table")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the demo's")
    parser.add_argument("--vocab-size", type=int, default=None, help="default: the demo's")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    demo = DemoConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        vocab = {"vocab_size": args.vocab_size} if args.vocab_size else {}
        write_audit_set(replace(demo.data, **vocab), data)
        cfg = replace(
            demo.train,
            arch=args.arch,
            steps=args.steps,
            batch_size=args.batch_size or demo.train.batch_size,
            precision="fp32",
            threads=args.threads,
            eval_every=args.steps,
            checkpoint_every=args.steps,
            eval_docs=1,
        )
        print(f"CPU: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"{args.arch}, batch {cfg.batch_size}x{cfg.seq_len}, {args.steps} steps per measurement, fp32\n")
        ours, plain = [], []
        for r in range(args.rounds):
            ours.append(memaudit_tokens_per_s(data, root, cfg))
            plain.append(plain_tokens_per_s(data, cfg))
            print(f"round {r + 1}: memaudit {ours[-1]:,.0f} tokens/s, plain loop {plain[-1]:,.0f} tokens/s")
        ratio = statistics.median(ours) / statistics.median(plain)
        verdict = "meets" if ratio >= TARGET else "MISSES"
        print(f"memaudit / plain loop (medians): {ratio:.3f}, {verdict} the target >= {TARGET}\n")

        print("| precision | chose | tokens/s | vs fp32 |\n|---|---|---|---|")
        fp32 = None
        for precision in ("fp32", "bf16", "auto"):
            chosen = resolve_precision(precision, "cpu")
            tps = memaudit_tokens_per_s(data, root, replace(cfg, precision=precision, steps=args.table_steps))
            fp32 = fp32 or tps
            print(f"| {precision} | {chosen.name} ({chosen.reason}) | {tps:,.0f} | {tps / fp32:.2f}x |")


if __name__ == "__main__":
    main()
