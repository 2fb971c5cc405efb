"""Extraction verdicts from the scoring pass, with no generation (docs/metrics.md).

Greedy decoding from the true prefix emits the true suffix token t iff every earlier suffix
token was emitted too and `hit[t]` (the argmax of the teacher-forced distribution is the true
token). So the greedy run, its length and the offset from which the rest of the suffix is
reproduced all follow from the `hit` slice of the suffix; the chance that sampling reproduces
the suffix follows from the renormalized top-k log-probs (`topk_logp`)."""

from __future__ import annotations

import math

import numpy as np

from memaudit.probes.scoring import ScoredSequence


def prefix_match_len(hits: np.ndarray) -> int:
    """Tokens greedy decoding reproduces right after the prefix, before its first miss."""
    misses = np.flatnonzero(~hits)
    return int(misses[0]) if len(misses) else len(hits)


def strength(hits: np.ndarray) -> float:
    """1 - (smallest offset o from which greedy decoding, given the true text up to o,
    reproduces the rest of the suffix) / S: the length of the trailing run of hits over S."""
    misses = np.flatnonzero(~hits)
    tail = len(hits) - 1 - int(misses[-1]) if len(misses) else len(hits)
    return tail / len(hits)


def np_probability(topk_logp: np.ndarray, n: int) -> float:
    """Probability that n samples (top-k, temperature 1) contain the exact suffix at least once:
    1 - (1 - q)^n with q the product of the true tokens' top-k probabilities (0 outside the top k)."""
    q = math.exp(float(np.sum(topk_logp, dtype=np.float64)))
    return -math.expm1(n * math.log1p(-q)) if q < 1 else 1.0


def extraction_verdicts(scored: ScoredSequence, prefix_len: int, suffix_len: int, n: int, p: float) -> dict | None:
    """Every extraction verdict for one sequence at one prefix length; None when the sequence
    has fewer than prefix_len + suffix_len text tokens."""
    if len(scored) < prefix_len + suffix_len:
        return None
    window = slice(prefix_len, prefix_len + suffix_len)
    hits = scored.hit[window]
    prob = np_probability(scored.topk_logp[window], n)
    return {
        "exact": bool(hits.all()),
        "token_match": float(hits.mean()),
        "prefix_match_len": prefix_match_len(hits),
        "strength": strength(hits),
        "np_prob": prob,
        "np_discoverable": prob >= p,
    }
