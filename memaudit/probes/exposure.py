"""Canary exposure (Carlini et al. 2019, "The Secret Sharer"), docs/metrics.md.

A canary is a template with a random secret drawn from a known space R. Its exposure is
log2|R| - log2(rank), rank = 1 + the number of secrets in R whose full text the model finds
more likely (lower total NLL). R is far too large to score (10^9 for 9 digits), so the rank is
estimated from a seeded sample of candidate secrets; a canary that beats every sampled
candidate gets its rank from a skew-normal fitted to the candidates' scores, which is what
lets exposure reach past log2(sample size)."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
from scipy.stats import FitError, skewnorm

from memaudit.common.errors import MemauditError
from memaudit.probes.scoring import ScoredSequence

ScoreTexts = Callable[[list[str]], list[ScoredSequence]]


def random_secrets(like: str, alphabet: str, n: int, seed: int) -> list[str]:
    """n secrets shaped like `like`: each alphabet character replaced by a random one, the
    rest (e.g. the spaces of "123 456 789") kept."""
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) if c in alphabet else c for c in like) for _ in range(n)]


def rank_fractions(scores: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
    """Estimated fraction of R scored lower (more likely) than each score: the sample's
    fraction, or, where no sampled candidate is lower, the tail of a skew-normal fitted once
    to the candidates' scores."""
    fractions = np.searchsorted(np.sort(candidate_scores), scores, side="left") / len(candidate_scores)
    beyond = fractions == 0
    if beyond.any():
        fractions[beyond] = _tail(scores[beyond], candidate_scores)
    return fractions


def _tail(scores: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
    """The skew-normal tail below the sample. Where no skew-normal fits (candidates that all
    score alike), the sample's own resolution, 1 / (n + 1): the exposure is then a lower bound."""
    floor = 1 / (len(candidate_scores) + 1)
    try:
        tail = skewnorm.cdf(scores, *skewnorm.fit(candidate_scores))
    except (FitError, ValueError, RuntimeError):
        return np.full(len(scores), floor)
    return np.where(np.isfinite(tail), tail, floor)


def exposures(scores: np.ndarray, candidate_scores: np.ndarray, space_size: float) -> np.ndarray:
    """log2|R| - log2(rank), rank = 1 + fraction * (|R| - 1); from 0 (least likely of all)
    to log2|R| (ranked first)."""
    rank = 1 + rank_fractions(np.asarray(scores, dtype=float), candidate_scores) * (space_size - 1)
    return np.log2(space_size) - np.log2(rank)


def text_nll(scored: ScoredSequence) -> float:
    """Total NLL of a whole text in nats: what makes one secret more likely than another."""
    return float(-np.sum(scored.logp, dtype=np.float64))


def canary_exposures(
    canaries: list[dict], spec: dict, score_texts: ScoreTexts, n_candidates: int, seed: int
) -> dict[int, float]:
    """Exposure of each canary row (`text`, `secret`, `doc_id`), keyed by doc_id.

    `spec` is a data dir's manifest["canary"]: template, secret_alphabet, space_size.
    `score_texts` scores texts exactly as the audit set was scored (same model, sinks, batching);
    canaries and candidates go through it together, so no scoring difference can move a rank."""
    if not canaries:
        return {}
    template, alphabet = spec["template"], spec["secret_alphabet"]
    for row in canaries:
        if row.get("secret") is None or template.format(secret=row["secret"]) != row["text"]:
            raise MemauditError(
                f"canary {row['doc_id']}: its text is not the manifest's template filled with its secret"
            )
    secrets = random_secrets(canaries[0]["secret"], alphabet, n_candidates, seed)
    texts = [row["text"] for row in canaries] + [template.format(secret=s) for s in secrets]
    scores = np.array([text_nll(s) for s in score_texts(texts)])
    bits = exposures(scores[: len(canaries)], scores[len(canaries) :], float(spec["space_size"]))
    return {row["doc_id"]: float(b) for row, b in zip(canaries, bits)}
