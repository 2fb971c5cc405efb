"""Membership-inference attacks (docs/metrics.md): a score per sequence from the scoring pass, and
how well each score separates members from non-members.

Convention: every score here is oriented so that HIGHER means "more likely a member", so one
ROC code path serves all attacks and an AUC of 0.5 always means no leak. Compared with the
usual definitions, `loss` and `zlib` are negated and `ref` is NLL(reference) - NLL(model)."""

from __future__ import annotations

import zlib

import numpy as np
from scipy.stats import rankdata

from memaudit.probes.scoring import ScoredSequence


def _lowest_mean(values: np.ndarray, k: float) -> float:
    """Mean of the lowest fraction k of the values (at least one)."""
    n = max(1, int(k * len(values)))
    return float(np.partition(values.astype(np.float64), n - 1)[:n].mean())


def attack_scores(
    scored: ScoredSequence, text: str, k: float, attacks: tuple[str, ...], ref_loss: float | None = None
) -> dict[str, float]:
    """Scores of one sequence, higher = more member-like:
    - loss: -mean token NLL;
    - zlib: -(total NLL in nats over all text tokens) / (zlib-compressed UTF-8 bytes of the text),
      so text that is easy to compress needs a lower loss to look like a member;
    - mink: mean of the lowest k fraction of token log-probs (Min-K%);
    - minkpp: the same over (logp - mu) / sigma, calibrated by the model's own next-token
      distribution (Min-K%++);
    - ref: reference model's mean NLL minus this model's, only when `ref_loss` is given."""
    logp = scored.logp.astype(np.float64)
    sigma = np.maximum(scored.sigma.astype(np.float64), 1e-8)  # a one-hot distribution has sigma 0
    compute = {
        "loss": lambda: float(logp.mean()),
        "zlib": lambda: float(logp.sum() / len(zlib.compress(text.encode("utf-8")))),
        "mink": lambda: _lowest_mean(logp, k),
        "minkpp": lambda: _lowest_mean((logp - scored.mu) / sigma, k),
        "ref": lambda: float(ref_loss + logp.mean()),
    }
    return {a: compute[a]() for a in attacks if a != "ref" or ref_loss is not None}


def auc(members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray | float:
    """ROC-AUC of members (positives) against non-members, ties counted half, over the last axis
    (a stats.Statistic: leading axes are bootstrap resamples).

    Equal to sklearn's roc_auc_score (the tests check it) via the Mann-Whitney rank identity,
    which is far cheaper than a call to sklearn."""
    ranks = rankdata(np.concatenate([members, nonmembers], axis=-1), axis=-1)
    n1, n0 = members.shape[-1], nonmembers.shape[-1]
    return (ranks[..., :n1].sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> np.ndarray | float:
    """Largest true-positive rate of a threshold rule `score > t` whose false-positive rate is at
    most `fpr` (the point on sklearn's roc_curve; with few non-members this means none at all),
    over the last axis (a stats.Statistic)."""
    allowed = int(np.floor(fpr * nonmembers.shape[-1] + 1e-9))
    if allowed >= nonmembers.shape[-1]:
        return np.ones(nonmembers.shape[:-1])
    threshold = -np.sort(-nonmembers, axis=-1)[..., allowed]  # the (allowed + 1)-th highest non-member score
    return np.mean(members > np.expand_dims(threshold, -1), axis=-1)
