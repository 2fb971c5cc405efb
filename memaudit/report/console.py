"""Terminal views with rich: the headline numbers of one scan, several side by side, gate
verdicts, and warnings (on stderr, so a piped stdout stays clean)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memaudit.report.document import levels, runs
from memaudit.report.gate import GateResult
from memaudit.report.render import arrow, fmt

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
    table = Table(title=escape(title), title_justify="left")
    lvls = levels(results)
    for col in ["metric", "", "value", *[f"×{lv}" for lv in lvls]]:
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, m in results["metrics"].items():
        by = m.get("by_repeats", {})
        table.add_row(name, arrow(name, m), fmt(m["value"]), *[fmt(by[lv]["value"]) if lv in by else "" for lv in lvls])
    console.print(table)


# The headline columns of a comparison: short name -> metric (at the top repeat level if "@top").
COMPARISON = {
    "member loss": "memorization.member_loss",
    "exact @top": "extraction.exact_rate@top",
    "MIA AUC": "privacy.mia.loss.auc",
    "valid loss": "capability.valid_loss",
    "gap closed": "memorization.gap_closed",
    "Δ valid": "capability.degradation",
}


def _headline(results: dict, name: str) -> str:
    base, _, at = name.partition("@")
    entry = results["metrics"].get(base)
    if entry is None:
        return "–"
    if at == "top":
        levels = entry.get("by_repeats", {})
        return fmt(levels[max(levels, key=int)]["value"]) if levels else "–"
    return fmt(entry["value"])


def print_comparison(doc: dict, console: Console | None = None) -> None:
    """One row per model, the headline numbers as columns (narrow enough for 80 columns);
    models on a Pareto front of memorization vs capability are starred."""
    console = console or Console()
    present = {name for run in runs(doc) for name in run["metrics"]}
    columns = {short: name for short, name in COMPARISON.items() if name.partition("@")[0] in present}
    on_front = {label for front in doc.get("pareto", {}).get("fronts", {}).values() for label in front}
    table = Table(title="memaudit: memorization vs capability", title_justify="left")
    table.add_column("model", no_wrap=True)
    for short, name in columns.items():
        table.add_column(f"{short} {arrow(name.partition('@')[0])}", justify="right")
    for run in runs(doc):
        star = " [bold]*[/]" if run.get("label") in on_front else ""
        table.add_row(
            escape(run.get("label", run["model"]["path"])) + star, *[_headline(run, n) for n in columns.values()]
        )
    console.print(table)
    if on_front:
        console.print("* on a Pareto front of memorization vs validation loss (see the report)")


def print_report(doc: dict, console: Console | None = None) -> None:
    """A comparative document: warnings on stderr, then the side-by-side table."""
    print_warnings(doc)
    print_comparison(doc, console)


def print_warnings(doc: dict) -> None:
    err = Console(stderr=True)
    for w in doc.get("warnings", []):
        err.print(f"[bold yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)


def print_gates(results: list[GateResult], console: Console | None = None) -> None:
    """Every verdict in a table; each tripped gate also as one line on stderr."""
    if not results:
        return
    console = console or Console()
    table = Table(title="memaudit gates", title_justify="left")
    for col in ("", "gate", "model", "value"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for r in results:
        shown = "not measured" if r.value is None else f"{r.value:.4g}"
        table.add_row("[green]pass[/]" if r.passed else "[bold red]FAIL[/]", escape(r.expr), escape(r.model), shown)
    console.print(table)
    err = Console(stderr=True)
    for r in results:
        if not r.passed:
            err.print(f"gate tripped: {r.message}", highlight=False, markup=False, soft_wrap=True)
