"""Aggregates with their uncertainty: every number carries its count and a percentile
bootstrap 95% interval (seeded, so the same scan gives the same interval)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Statistic = Callable[..., float]


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Statistic, n_boot: int, seed: int) -> list[float] | None:
    """95% interval of `statistic(*samples)`, each sample resampled with replacement on its own."""
    if n_boot <= 0 or any(len(s) < 2 for s in samples):
        return None
    rng = np.random.default_rng(seed)
    draws = [statistic(*(s[rng.integers(0, len(s), len(s))] for s in samples)) for _ in range(n_boot)]
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return [float(low), float(high)]


def summarize(samples: Sequence[np.ndarray], statistic: Statistic, n_boot: int, seed: int) -> dict:
    """{value, n, ci95} for one group of samples."""
    samples = [np.asarray(s, dtype=float) for s in samples]
    n = int(sum(len(s) for s in samples))
    value = statistic(*samples) if all(len(s) for s in samples) else float("nan")
    out = {"value": float(value), "n": n}
    ci = bootstrap_ci(samples, statistic, n_boot, seed)
    if ci is not None:
        out["ci95"] = ci
    return out


def mean(x: np.ndarray) -> float:
    return float(np.mean(x))
