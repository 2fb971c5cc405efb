"""Terminal views with rich: the headline numbers of one scan, or several side by side."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from memaudit.report.render import _fmt, arrow

HEADLINE = (
    "memorization.member_loss",
    "memorization.nonmember_loss",
    "memorization.loss_gap",
    "extraction.exact_rate",
    "extraction.token_match",
    "capability.valid_loss",
)


def print_summary(results: dict, console: Console | None = None) -> None:
    console = console or Console()
    model = results["model"]
    title = f"{model['path']} ({model['kind']}{', sinks ' + model['sink_mode'] if model.get('sink_mode') else ''})"
    table = Table(title=title, title_justify="left")
    levels = sorted({lv for m in results["metrics"].values() for lv in m.get("by_repeats", {})}, key=int)
    for col in ["metric", "", "value", *[f"×{lv}" for lv in levels]]:
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, m in results["metrics"].items():
        by = m.get("by_repeats", {})
        table.add_row(name, arrow(m), _fmt(m["value"]), *[_fmt(by[lv]["value"]) if lv in by else "" for lv in levels])
    console.print(table)


def print_comparison(runs: dict[str, dict], console: Console | None = None) -> None:
    """One row per model, the headline metrics as columns (top repeat level for extraction)."""
    console = console or Console()
    table = Table(title="memaudit: memorization vs capability", title_justify="left")
    table.add_column("model")
    for name in HEADLINE:
        table.add_column(f"{name.split('.')[-1]} {arrow(next(iter(runs.values()))['metrics'][name])}", justify="right")
    table.add_column("exact_rate @top", justify="right")
    for label, results in runs.items():
        metrics = results["metrics"]
        exact = metrics["extraction.exact_rate"].get("by_repeats", {})
        top = max(exact, key=int) if exact else None
        table.add_row(label, *[_fmt(metrics[n]["value"]) for n in HEADLINE], _fmt(exact[top]["value"]) if top else "–")
    console.print(table)
