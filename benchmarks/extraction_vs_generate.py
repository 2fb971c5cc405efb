"""What the teacher-forced extraction verdict saves: for 1,000 sequences, the exact-extraction
verdict and the greedy run length at prefix 32 / suffix 32 from one scoring pass, against the
naive way, a greedy `generate()` per sequence. The verdicts must be identical; target: the
scoring pass >= 10x faster.

A tiny model is trained on a tiny audit set first (about a minute on 2 cores) unless --model
and --data name existing ones; sequences are 65-token windows of the data dir's documents, so
planted repeats (memorized) and ordinary text (mostly not) are both there.

    python benchmarks/extraction_vs_generate.py [--sequences 1000] [--model DIR --data DIR]"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers

from memaudit.corpus.audit import AuditConfig, AuditSet, write_audit_set
from memaudit.corpus.tokenizer import encode_documents
from memaudit.models.io import load_model
from memaudit.probes.extraction import extraction_verdicts
from memaudit.probes.scoring import score_sequences
from memaudit.training.config import TrainConfig
from memaudit.training.train import train

TARGET = 10.0
PREFIX, SUFFIX = 32, 32
STRIDE = 16  # windows overlap: each start gives a different prefix, hence a different verdict
# the test suite's tiny setting (tests/conftest.py), which memorizes the x64 repeats
DATA = AuditConfig(
    repeats=(1, 8, 64), members_per_level=4, n_valid=40, n_natural=150, min_tokens=64, max_tokens=120, vocab_size=512
)
TRAIN = TrainConfig(arch="gpt2-1m", steps=300, batch_size=8, seq_len=128, lr=3e-3, warmup_steps=10)


def windows(data_dir: Path, tok, n: int) -> list[list[int]]:
    """n windows of PREFIX + SUFFIX + 1 tokens (the first one is the context start), every STRIDE tokens of every
    document."""
    data = AuditSet.load(data_dir)
    texts = [r["text"] for r in data.audit + data.train + data.valid if r["kind"] != "canary"]
    width = PREFIX + SUFFIX + 1
    out = []
    for seq in encode_documents(tok, texts):
        out += [seq[i : i + width] for i in range(0, len(seq) - width + 1, STRIDE)]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} windows of {width} tokens in {data_dir}; lower --sequences")
    return out[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=1000)
    parser.add_argument("--model", type=Path, help="a trained model dir (with --data)")
    parser.add_argument("--data", type=Path, help="the data dir it was trained on")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            args.data, args.model = Path(tmp) / "data", Path(tmp) / "model"
            print(f"training {TRAIN.arch} for {TRAIN.steps} steps on a tiny audit set ...")
            write_audit_set(DATA, args.data)
            train(args.data, args.model, TRAIN, progress=False)
        loaded = load_model(args.model)
        model, pad = loaded.model.eval(), loaded.tokenizer.pad_token_id
        seqs = windows(args.data, loaded.tokenizer, args.sequences)

        start = time.perf_counter()
        scored = score_sequences(model, seqs, pad_id=pad)
        forced = [extraction_verdicts(s, PREFIX, SUFFIX, n=100, p=0.5) for s in scored]
        forced_s = time.perf_counter() - start

        start = time.perf_counter()
        greedy = []
        with torch.inference_mode():
            for seq in seqs:
                ids = torch.tensor([seq[: PREFIX + 1]])
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),  # else generate() masks the boundary token (= pad id)
                    max_new_tokens=SUFFIX,
                    do_sample=False,
                    pad_token_id=pad,
                    eos_token_id=None,
                )
                greedy.append(out[0, PREFIX + 1 :].tolist())
        generate_s = time.perf_counter() - start

    truth = [seq[PREFIX + 1 :] for seq in seqs]
    run = [next((i for i, (a, b) in enumerate(zip(g, t)) if a != b), SUFFIX) for g, t in zip(greedy, truth)]
    same_exact = sum(v["exact"] == (g == t) for v, g, t in zip(forced, greedy, truth))
    same_run = sum(v["prefix_match_len"] == r for v, r in zip(forced, run))
    n = len(seqs)
    print(f"{n} sequences, prefix {PREFIX}, suffix {SUFFIX}; {sum(v['exact'] for v in forced)} extractable")
    print(f"teacher-forced scoring pass: {forced_s:.2f} s")
    print(f"greedy generate() per sequence: {generate_s:.2f} s")
    print(f"identical verdicts: exact {same_exact}/{n}, greedy run length {same_run}/{n}")
    ratio = generate_s / forced_s
    verdict = "ok" if ratio >= TARGET and same_exact == same_run == n else "FAILED"
    print(f"speed ratio generate/scoring: {ratio:.1f}x; target >= {TARGET:g}x with identical verdicts: {verdict}")


if __name__ == "__main__":
    main()
