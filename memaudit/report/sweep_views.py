"""Views of a sweep's results document (sweep.json): a CSV with every metric's mean and range over
seeds per point and arm, a Markdown table of the headline figures, and one self-contained HTML page
with the memorization-vs-capability trade-off (each point and arm at its mean, its range over seeds
as bars) and one chart per swept setting."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

from memaudit.common.fileio import atomic_write_text
from memaudit.probes.registry import headline_metrics, known, pareto_axes
from memaudit.report.plots import RC, axis_label, label_colours, svg
from memaudit.report.render import templates

PANELS_PER_ROW = 4  # a chart per swept setting: its metrics in rows of this many panels, to fit the page


def mean_range(entry: dict | None, digits: int = 2) -> str:
    """ "mean (min – max)" over seeds; the mean alone from one seed; "–" when nothing was measured."""
    if not entry:
        return "–"
    if entry["n"] == 1:
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} ({entry['min']:.{digits}f} – {entry['max']:.{digits}f})"


def headline_columns(doc: dict) -> list[tuple[str, str]]:
    """(metric key, column title): the registry's headline metrics, exact extraction per repeat level, and for
    stress arms the robustness metrics; only those some run has."""
    present = {name for s in doc["summary"] for name in s["metrics"]}
    columns = []
    for m in headline_metrics():
        if m.headline.top_level:
            levels = sorted(
                (k for k in present if k.startswith(f"{m.name}[x")), key=lambda k: int(k[len(m.name) + 2 : -1])
            )
            columns += [(k, f"{m.headline.label.split(' @')[0]} {k[len(m.name) + 1 : -1]}") for k in levels]
        elif m.name in present:
            columns.append((m.name, m.headline.label))
    # Stress arms: what survived the attack (registry group `robustness`).
    columns += [
        (name, name.removeprefix("robustness."))
        for name in sorted(present)
        if name.startswith("robustness.") and "[" not in name
    ]
    return columns


def _setting(value: object) -> str:
    return "null" if value is None else str(value)


def frame(doc: dict) -> pd.DataFrame:
    """One row per point and arm: the swept settings, the seeds measured, every metric's mean, min and max."""
    rows = []
    for s in doc["summary"]:
        row = {name: _setting(s["settings"].get(name)) for name in doc["swept"]}
        row |= {"arm": s["arm"], "seeds": s["seeds"], "failed": s["failed"]}
        for name, e in s["metrics"].items():
            row |= {f"{name}.mean": e["mean"], f"{name}.min": e["min"], f"{name}.max": e["max"]}
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(doc: dict) -> str:
    """The headline table in Markdown, under a line that says what, where and with which code."""
    head, rows = table(doc)
    lines = [
        f"Sweep `{doc['spec']['name']}` ({doc['source'] or 'no file'}), {doc['machine']}, memaudit "
        f"{doc['code']['memaudit']} (source {doc['code']['source']}), torch {doc['code']['torch']}; "
        "cells: mean (min – max) over seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def _bars(e: dict) -> list[list[float]]:
    return [[e["mean"] - e["min"]], [e["max"] - e["mean"]]]


def tradeoff_svg(doc: dict) -> str | None:
    """Memorization (each of the registry's memorization axes) against capability: every point and arm at its
    mean over seeds, bars spanning the range over seeds."""
    x, ys = pareto_axes()
    arms = list(dict.fromkeys(s["arm"] for s in doc["summary"]))
    colour = label_colours(arms)
    ys = [y for y in ys if any(y in s["metrics"] and x in s["metrics"] for s in doc["summary"])]
    if not ys:
        return None
    with rc_context(RC | {"svg.hashsalt": "sweep-tradeoff"}):
        fig = Figure(figsize=(6.2 * len(ys), 4.4), layout="constrained")
        for ax, y in zip(fig.subplots(1, len(ys), squeeze=False)[0], ys):
            for s in doc["summary"]:
                ex, ey = s["metrics"].get(x), s["metrics"].get(y)
                if ex and ey:
                    ax.errorbar(
                        ex["mean"],
                        ey["mean"],
                        xerr=_bars(ex),
                        yerr=_bars(ey),
                        fmt="o",
                        ms=6,
                        color=colour[s["arm"]],
                        elinewidth=0.8,
                        alpha=0.85,
                    )
            ax.set_xlabel(axis_label(x))
            ax.set_ylabel(axis_label(y))
            ax.grid(alpha=0.3)
        handles = [ax.plot([], [], "o", color=colour[a], label=a)[0] for a in arms]
        fig.legend(handles=handles, loc="outside right center", frameon=False)
        return svg(fig)


def setting_svg(doc: dict, setting: str) -> str | None:
    """Each headline metric against one swept setting, a line per arm (the mean) with its range over seeds; the
    other swept settings at their first value, so that the line shows this one setting's effect alone."""
    others = {n: doc["points"][0]["settings"].get(n) for n in doc["swept"] if n != setting}
    rows = [s for s in doc["summary"] if all(s["settings"].get(n) == v for n, v in others.items())]
    metrics = [key for key, _ in headline_columns(doc) if "[" not in key and known(key) is not None]
    metrics = [m for m in metrics if any(m in s["metrics"] for s in rows)]
    values = list(dict.fromkeys(_setting(s["settings"].get(setting)) for s in rows))
    if len(values) < 2 or not metrics:
        return None
    numeric = all(_is_number(v) for v in values)
    position = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
    arms = list(dict.fromkeys(s["arm"] for s in rows))
    colour = label_colours(arms)
    with rc_context(RC | {"svg.hashsalt": f"sweep-{setting}"}):
        cols = min(PANELS_PER_ROW, len(metrics))
        lines = math.ceil(len(metrics) / cols)
        fig = Figure(figsize=(3.0 * cols + 1.4, 2.8 * lines), layout="constrained")
        axes = fig.subplots(lines, cols, squeeze=False).ravel()
        for ax in axes[len(metrics) :]:
            ax.set_axis_off()
        for ax, metric in zip(axes, metrics):
            for arm in arms:
                pts = sorted(
                    (position[_setting(s["settings"].get(setting))], s["metrics"][metric])
                    for s in rows
                    if s["arm"] == arm and metric in s["metrics"]
                )
                if not pts:
                    continue
                xs = [p for p, _ in pts]
                ax.plot(xs, [e["mean"] for _, e in pts], "o-", ms=4, color=colour[arm], label=arm)
                ax.fill_between(
                    xs, [e["min"] for _, e in pts], [e["max"] for _, e in pts], color=colour[arm], alpha=0.15
                )
            ax.set_title(axis_label(metric), fontsize=8)
            ax.set_xlabel(setting)
            if not numeric:
                ax.set_xticks(list(position.values()), list(position))
            ax.grid(alpha=0.3)
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", frameon=False)
        return svg(fig)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def table(doc: dict) -> tuple[list[str], list[list[str]]]:
    """The headline table: a row per point and arm, the swept settings, the seeds, then mean (min – max) cells."""
    columns = headline_columns(doc)
    head = [*doc["swept"], "arm", "seeds", *(title for _, title in columns), "against retraining"]
    rows = []
    for s in doc["summary"]:
        seeds = f"{s['seeds']}" + (f" ({s['failed']} failed)" if s["failed"] else "")
        cells = [*(_setting(s["settings"].get(n)) for n in doc["swept"]), s["arm"], seeds]
        rows.append(cells + [mean_range(s["metrics"].get(key)) for key, _ in columns] + [verdict_cell(s)])
    return head, rows


def verdict_cell(summary: dict) -> str:
    """Each family's verdicts against the oracle over seeds: "membership differs 3/3; capability matches 3/3"."""
    parts = []
    for family, counts in summary.get("verdicts", {}).items():
        seen = sum(counts.values())
        parts.append(
            f"{family} "
            + ", ".join(f"{verdict.replace(' retraining', '')} {n}/{seen}" for verdict, n in counts.items())
        )
    return "; ".join(parts) or "–"


def html(doc: dict) -> str:
    """One self-contained page: the headline table, the trade-off chart, a chart per swept setting."""
    head, rows = table(doc)
    charts = [c for c in [tradeoff_svg(doc), *(setting_svg(doc, n) for n in doc["swept"])] if c]
    return templates.get_template("sweep.html.j2").render(
        name=doc["spec"]["name"],
        description=doc["spec"].get("description"),
        machine=doc["machine"],
        code=doc["code"],
        created=doc["created"],
        head=head,
        rows=rows,
        failed=[r for r in doc["runs"] if r["status"] == "failed"],
        charts=charts,
    )


def write_views(doc: dict, out: Path) -> None:
    """sweep.csv, sweep.md and sweep.html beside sweep.json, each written whole."""
    atomic_write_text(out / "sweep.csv", frame(doc).to_csv(index=False))
    atomic_write_text(out / "sweep.md", markdown(doc))
    atomic_write_text(out / "sweep.html", html(doc))
