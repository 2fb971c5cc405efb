"""Membership-inference attacks (docs/metrics.md): a score per sequence from the scoring pass, and
how well each score separates members from non-members.

Convention: every score here is oriented so that HIGHER means "more likely a member", so one
ROC code path serves all attacks and an AUC of 0.5 always means no leak. Compared with the
usual definitions, `loss`, `zlib` and `zlib_total` are negated and `ref` is NLL(reference) -
NLL(model). The attacks that need more than the one scoring pass live beside this module:
recall.py (ReCaLL, a forward pass with a prefix), gradnorm.py (GradNorm, per-text gradients) and
rmia.py (RMIA, reference models and population text); registry.ATTACK_DOCS defines them all."""

from __future__ import annotations

import zlib

import numpy as np
from scipy.stats import rankdata

from memaudit.probes.scoring import ScoredSequence


def _lowest_mean(values: np.ndarray, k: float) -> float:
    """Mean of the lowest fraction k of the values (at least one)."""
    n = max(1, int(k * len(values)))
    return float(np.partition(values.astype(np.float64), n - 1)[:n].mean())


def zlib_bytes(text: str) -> int:
    """The length in bytes of the text's UTF-8 encoding compressed by zlib (default level)."""
    return len(zlib.compress(text.encode("utf-8")))


def dcpdd_score(logp: np.ndarray, tokens: np.ndarray, frequencies: np.ndarray, a: float) -> float:
    """DC-PDD (Zhang et al., EMNLP 2024): over the first occurrence of each distinct token of the
    text, the mean of min(p_i * log(1 / f(t_i)), a), where p_i is the model's probability of the
    token and f its (smoothed) relative frequency in a reference corpus (frequencies.py)."""
    _, first = np.unique(np.asarray(tokens), return_index=True)
    first.sort()
    alpha = np.exp(logp[first].astype(np.float64)) * -np.log(frequencies[np.asarray(tokens)[first]])
    return float(np.minimum(alpha, a).mean())


def attack_scores(
    scored: ScoredSequence,
    text: str,
    k: float,
    attacks: tuple[str, ...],
    ref_loss: float | None = None,
    *,
    tokens: np.ndarray | list[int] | None = None,
    frequencies: np.ndarray | None = None,
    dcpdd_a: float = 0.01,
) -> dict[str, float]:
    """Scores of one sequence from its scoring pass, higher = more member-like (the attacks of
    `attacks` that need nothing else, or whose input is given):
    - loss: -mean token NLL;
    - zlib: -(mean token NLL) / zlib_bytes(text), Carlini et al. 2021's ratio as MIMIR and
      OpenUnlearning compute it (the perplexity's log over the zlib entropy), where `text` is the
      text that was scored (the decoded scored tokens when the text was cut to the context);
    - zlib_total: -(total NLL in nats over the scored tokens) / zlib_bytes(text), memaudit's former `zlib`
      (the model's code length over zlib's: no length in it, unlike `zlib`'s mean over a length);
    - mink: mean of the lowest k fraction of token log-probs (Min-K%);
    - minkpp: the same over (logp - mu) / sigma, calibrated by the model's own next-token
      distribution (Min-K%++);
    - dcpdd: dcpdd_score with cap `dcpdd_a`, only when `tokens` (the scored token ids, one per
      log-prob) and `frequencies` (a probability per vocabulary id) are given;
    - ref: reference model's mean NLL minus this model's, only when `ref_loss` is given."""
    logp = scored.logp.astype(np.float64)
    sigma = np.maximum(scored.sigma.astype(np.float64), 1e-8)  # a one-hot distribution has sigma 0
    compute = {
        "loss": lambda: float(logp.mean()),
        "zlib": lambda: float(logp.mean() / zlib_bytes(text)),
        "zlib_total": lambda: float(logp.sum() / zlib_bytes(text)),
        "mink": lambda: _lowest_mean(logp, k),
        "minkpp": lambda: _lowest_mean((logp - scored.mu) / sigma, k),
        "dcpdd": lambda: dcpdd_score(logp, np.asarray(tokens), frequencies, dcpdd_a),
        "ref": lambda: float(ref_loss + logp.mean()),
    }
    given = {"ref": ref_loss is not None, "dcpdd": tokens is not None and frequencies is not None}
    return {a: compute[a]() for a in attacks if a in compute and given.get(a, True)}


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
