"""Aggregates with their uncertainty: every number carries its count and a percentile
bootstrap 95% interval (seeded, so the same scan gives the same interval).

A statistic works on the last axis of its arrays and keeps the leading ones: given (n,) samples it
returns one value, given (B, n) resamples it returns B values. The bootstrap then costs a few array
operations instead of a Python loop of B calls (a scan computes dozens of intervals)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Statistic = Callable[..., "np.ndarray | float"]
MAX_RESAMPLED = 4_000_000  # values of one sample resampled at once: 32 MB of float64


def bootstrap_ci(
    samples: Sequence[np.ndarray],
    statistic: Statistic,
    n_boot: int,
    seed: int,
    minus: Sequence[np.ndarray] | None = None,
) -> list[float] | None:
    """95% interval of `statistic(*samples)`, each sample resampled with replacement on its own.

    `minus`: another model's values of the same records, sample by sample (`minus[k][i]` is record
    i of `samples[k]`): the interval is then of `statistic(*samples) - statistic(*minus)`, each
    resample drawing the same records for both models (a paired bootstrap), so what the two share,
    each record's own difficulty, cancels instead of widening the interval."""
    if n_boot <= 0 or any(len(s) < 2 for s in samples):
        return None
    rng = np.random.default_rng(seed)
    chunk = max(1, MAX_RESAMPLED // max(len(s) for s in samples))
    draws = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        picks = [rng.integers(0, len(s), (size, len(s))) for s in samples]
        drawn = np.asarray(statistic(*(s[i] for s, i in zip(samples, picks))), dtype=float)
        if minus is not None:
            drawn = drawn - np.asarray(statistic(*(m[i] for m, i in zip(minus, picks))), dtype=float)
        draws.append(drawn)
    low, high = np.nanpercentile(np.concatenate(draws), [2.5, 97.5])
    return [float(low), float(high)]


def summarize(
    samples: Sequence[np.ndarray],
    statistic: Statistic,
    n_boot: int,
    seed: int,
    minus: Sequence[np.ndarray] | None = None,
) -> dict:
    """{value, n, ci95} for one group of samples; with `minus` (another model's values of the
    same records), of the difference between the two models, with a paired interval."""
    samples = [np.asarray(s, dtype=float) for s in samples]
    others = None if minus is None else [np.asarray(m, dtype=float) for m in minus]
    n = int(sum(len(s) for s in samples))
    value = float("nan")
    if all(len(s) for s in samples):
        value = statistic(*samples) - (0.0 if others is None else statistic(*others))
    out = {"value": float(value), "n": n}
    ci = bootstrap_ci(samples, statistic, n_boot, seed, minus=others)
    if ci is not None:
        out["ci95"] = ci
    return out


def mean(x: np.ndarray) -> np.ndarray | float:
    return np.mean(x, axis=-1)
