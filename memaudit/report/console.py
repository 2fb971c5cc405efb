"""Terminal views with rich: the headline numbers of one scan, several side by side, gate
verdicts, and warnings (on stderr, so a piped stdout stays clean)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memaudit.report.document import default_label, levels, metric_names, runs, value
from memaudit.report.gate import GateResult
from memaudit.report.oracle import (
    DIFFERS,
    MATCHES,
    RULES,
    chance_note,
    retraining_intro,
    retraining_notes,
    retraining_table,
)
from memaudit.report.render import arrow, fmt, fmt_entry
from memaudit.report.robustness import robustness_rows
from memaudit.report.verdict import headline_columns, headline_entry, note_warnings, shift_warnings, verdicts


def print_summary(results: dict, console: Console | None = None) -> None:
    """One scan: every metric (headline ones in bold, in registry order) with its value at each
    repeat level, then the verdict: does the model leak, and by which rule."""
    console = console or Console()
    model = results["model"]
    title = f"{model['path']} ({model['kind']}{', sinks ' + model['sink_mode'] if model.get('sink_mode') else ''})"
    table = Table(title=escape(title), title_justify="left")
    lvls = levels(results)
    for col in ["metric", "", "value", *[f"×{lv}" for lv in lvls]]:
        table.add_column(col, justify="left" if col == "metric" else "right")
    headline = {m.name for m in headline_columns(results)}
    for name in metric_names(results):
        m = results["metrics"][name]
        by = m.get("by_repeats", {})
        shown = f"[bold]{escape(name)}[/]" if name in headline else escape(name)
        table.add_row(shown, arrow(name, m), fmt_entry(m), *[fmt(by[lv]["value"]) if lv in by else "" for lv in lvls])
    console.print(table)
    (verdict,) = verdicts(results)
    if verdict.leaks:
        console.print("[bold red]leaks:[/] " + "; ".join(escape(str(e)) for e in verdict.evidence))
    else:
        console.print("[bold green]no leak found[/] by the headline leak rules (`memaudit metrics`)")
    if verdict.note:
        console.print(f"note: {escape(verdict.note)}", highlight=False)
    for w in [*shift_warnings(results), *note_warnings(results)]:
        console.print(f"[bold yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)


def print_comparison(doc: dict, console: Console | None = None) -> None:
    """One row per model, the registry's headline numbers as columns (each as wide as its
    numbers, the header wrapping above them, so that a long model label fits 80 columns);
    models that leak are marked !, models on a Pareto front of memorization vs capability *."""
    console = console or Console()
    columns = headline_columns(doc)
    table = Table(
        title="memaudit: memorization vs capability",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 0, 0, 1),
        pad_edge=False,
    )
    rows = [
        [fmt(value(headline_entry(run["metrics"], m))) for m in columns] + [run.get("label", run["model"]["path"])]
        for run in runs(doc)
    ]
    table.add_column("model")
    for i, m in enumerate(columns):
        header = f"{m.headline.label} {m.arrow}"  # type: ignore[union-attr]
        width = max(*(len(word) for word in header.split()), *(len(row[i]) for row in rows))
        table.add_column(header, justify="right", width=width)
    for row, v in zip(rows, verdicts(doc)):
        marks = (" [bold red]![/]" if v.leaks else "") + (" [bold]*[/]" if v.fronts else "")
        table.add_row(escape(row[-1]) + marks, *row[:-1])
    console.print(table)
    if any(v.leaks for v in verdicts(doc)):
        console.print("! leaks: a headline metric trips its leak rule (`memaudit metrics` lists the rules)")
    if any(v.fronts for v in verdicts(doc)):
        console.print("* on a Pareto front of memorization vs capability (see the report)")
    for v in verdicts(doc):
        if v.note:
            console.print(f"note: {escape(v.label)}: {escape(v.note)}", highlight=False)


def print_report(doc: dict, console: Console | None = None) -> None:
    """A comparative document: warnings on stderr, then the side-by-side table, each removal
    against retraining if there is an oracle (without one, what judging membership against chance
    means), then the robustness of each removal if the document holds attacked models."""
    print_warnings(doc)
    print_comparison(doc, console)
    if chance_note(doc):
        (console or Console()).print(f"note: {escape(chance_note(doc))}", highlight=False)
    print_retraining(doc, console)
    print_robustness(doc, console)


_VERDICT_STYLE = {MATCHES: "green", DIFFERS: "bold red"}


def print_retraining(doc: dict, console: Console | None = None) -> None:
    """Each removal's verdict per family against the oracle (report/oracle.py), with the rules."""
    rows = retraining_table(doc)
    if not rows:
        return
    console = console or Console()
    table = Table(title="against retraining", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("model", overflow="fold")
    for family in RULES:
        table.add_column(family, overflow="fold")
    for label, cells in rows:
        styled = [f"[{_VERDICT_STYLE.get(verdict, 'yellow')}]{escape(text)}[/]" for verdict, text in cells.values()]
        table.add_row(escape(label), *styled)
    console.print(escape(retraining_intro(doc)), highlight=False)
    console.print(table)
    for note in retraining_notes(doc):
        console.print(f"  {escape(note)}", highlight=False)


def print_stress(results: list[dict], console: Console | None = None) -> None:
    """The attacked models of a stress run: their headline numbers, then their robustness."""
    doc = {"runs": [{**r, "label": default_label(r)} for r in results]}
    print_comparison(doc, console)
    print_robustness(doc, console)


def print_robustness(doc: dict, console: Console | None = None) -> None:
    """Each attacked model's gap closed before and after its attack (memaudit stress)."""
    rows = robustness_rows(doc)
    if not rows:
        return
    table = Table(title="robustness: gap closed before -> after each attack", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("model", "attack"):
        table.add_column(col, no_wrap=True, overflow="fold")
    for col in ("before", "after", "retained ↑", "steps to recover ↑"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(escape(r.model), escape(r.attack), fmt(r.before), fmt(r.after), fmt(r.retained), r.recover)
    (console or Console()).print(table)


def print_warnings(doc: dict) -> None:
    err = Console(stderr=True)
    for w in [*doc.get("warnings", []), *shift_warnings(doc), *note_warnings(doc)]:
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
        shown = (r.note or "not measured") if r.value is None else f"{r.value:.4g}"
        table.add_row("[green]pass[/]" if r.passed else "[bold red]FAIL[/]", escape(r.expr), escape(r.model), shown)
    console.print(table)
    err = Console(stderr=True)
    for r in results:
        if not r.passed:
            err.print(f"gate tripped: {r.message}", highlight=False, markup=False, soft_wrap=True)
