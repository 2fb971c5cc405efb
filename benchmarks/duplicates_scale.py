"""How fast `memaudit scan data` is on a whole corpus (the embedded Austen by default), and what
the vectorized n-gram hashing buys over the naive way: a Python dict keyed by token tuples. Both
count the same repeated n-grams; the script checks that they agree.

    python benchmarks/duplicates_scale.py [--corpus austen] [--reps 3] [--ngram 50]"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections import defaultdict

import numpy as np

from memaudit.corpus.config import ScanDataConfig
from memaudit.corpus.duplicates import scan_corpus, window_hashes
from memaudit.corpus.sources import load_documents, normalize


def naive_cross_document_ngrams(token_lists: list[list[str]], n: int) -> int:
    """n-grams found in 2+ distinct documents, by tuples in a dict."""
    owners: dict[tuple[str, ...], set[int]] = defaultdict(set)
    for d, tokens in enumerate(token_lists):
        for i in range(len(tokens) - n + 1):
            owners[tuple(tokens[i : i + n])].add(d)
    return sum(len(docs) >= 2 for docs in owners.values())


def hashed_cross_document_ngrams(token_lists: list[list[str]], n: int) -> int:
    vocab: dict[str, int] = {}
    ids = [np.array([vocab.setdefault(t, len(vocab)) for t in tokens], dtype=np.int64) for tokens in token_lists]
    hashes, owner = window_hashes(ids, n)
    pairs = np.unique(np.stack([hashes.view(np.int64), owner], axis=1), axis=0)
    _, n_docs = np.unique(pairs[:, 0], return_counts=True)
    return int((n_docs >= 2).sum())


def timed(fn, reps: int):
    times, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="austen")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--ngram", type=int, default=50)
    args = parser.parse_args()

    report, seconds = timed(lambda: scan_corpus(args.corpus, ScanDataConfig(ngram_tokens=args.ngram)), args.reps)
    c = report.counts
    print(
        f"scan_corpus({args.corpus!r}): {c['occurrences']:,} documents, {c['tokens']:,} tokens in {seconds:.2f} s "
        f"(median of {args.reps}): {c['occurrences'] / seconds:,.0f} docs/s, {c['tokens'] / seconds:,.0f} tokens/s"
    )
    print(
        f"  exact: {c['duplicated_documents']} documents occur 2+ times ({c['duplicate_occurrences']} extra copies); "
        f"{args.ngram}-grams in 2+ documents: {c['cross_document_ngrams']}; "
        f"near-duplicate clusters: {c['near_clusters']} ({c['near_duplicate_documents']} documents)"
    )

    token_lists = [re.findall(r"\w+|[^\w\s]", normalize(t)) for t in dict.fromkeys(load_documents(args.corpus))]
    for n in sorted({8, args.ngram}):
        naive, t_naive = timed(lambda n=n: naive_cross_document_ngrams(token_lists, n), args.reps)
        hashed, t_hashed = timed(lambda n=n: hashed_cross_document_ngrams(token_lists, n), args.reps)
        assert naive == hashed, (n, naive, hashed)
        print(
            f"  {n}-grams in 2+ documents: {hashed:,}; dict of tuples {t_naive:.2f} s, "
            f"numpy hashing {t_hashed:.2f} s: {t_naive / t_hashed:.1f}x"
        )


if __name__ == "__main__":
    main()
