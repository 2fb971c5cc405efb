"""Cells of the experiments' markdown tables (sink_finetune_experiment.py, stress_experiment.py):
a figure over seeds as its mean and range."""

from __future__ import annotations


def mean_range(values: list[float | None], digits: int = 2) -> str:
    """ "mean (min – max)" of the values measured (None: not measured in that seed); "–" if none were."""
    measured = [v for v in values if v is not None]
    if not measured:
        return "–"
    mean = sum(measured) / len(measured)
    return f"{mean:.{digits}f} ({min(measured):.{digits}f} – {max(measured):.{digits}f})"
