"""Terminal views with rich: the headline numbers of one scan, several side by side, gate
verdicts, and warnings (on stderr, so a piped stdout stays clean)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memaudit.report.compare import RELATIVE
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


def print_comparison(runs_by_label: dict[str, dict], console: Console | None = None) -> None:
    """The headline metrics (and the reference-relative ones where present) as rows, one column
    per model, plus the exact rate at the top repeat level."""
    console = console or Console()
    present = {name for results in runs_by_label.values() for name in results["metrics"]}
    table = Table(title="memaudit: memorization vs capability", title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("", no_wrap=True)
    for label in runs_by_label:
        table.add_column(escape(label), justify="right")
    for name in [n for n in (*HEADLINE, *RELATIVE) if n in present]:
        cells = [fmt(r["metrics"][name]["value"]) if name in r["metrics"] else "–" for r in runs_by_label.values()]
        table.add_row(name.split(".", 1)[1], arrow(name), *cells)
    top = []
    for results in runs_by_label.values():
        exact = results["metrics"].get("extraction.exact_rate", {}).get("by_repeats", {})
        top.append(f"{fmt(exact[max(exact, key=int)]['value'])} (×{max(exact, key=int)})" if exact else "–")
    table.add_row("exact_rate @top", arrow("extraction.exact_rate"), *top)
    console.print(table)


def print_report(doc: dict, console: Console | None = None) -> None:
    """A comparative document: warnings on stderr, then the side-by-side table."""
    print_warnings(doc)
    print_comparison({run["label"]: run for run in runs(doc)}, console)


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
