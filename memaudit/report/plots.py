"""Charts of a report document as inline SVG (matplotlib Figures, no pyplot state), so report.html
stays one self-contained file. Each model keeps one colour in every chart."""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from sklearn.metrics import auc, roc_curve

from memaudit.probes.registry import get_metric, pareto_axes
from memaudit.report.document import level_name, levels, not_comparable, runs, value

# Text stays text (small, selectable); `$` in a model name is not math; a fixed salt per chart
# gives the same bytes for the same document and distinct element ids across the charts.
_RC = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 9,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: the SVG sits inside HTML


def _axis_label(name: str) -> str:
    m = get_metric(name)
    if m.higher_is_better is None:
        return f"{name} {m.arrow}"
    return f"{name} {m.arrow} ({'higher' if m.higher_is_better else 'lower'} is better)"


def _errors(entries: list[dict | None]) -> np.ndarray | None:
    """Asymmetric error bars from each entry's ci95 (0 where it has none)."""
    bars = [
        (value(e) - e["ci95"][0], e["ci95"][1] - value(e)) if e and value(e) is not None and e.get("ci95") else (0, 0)
        for e in entries
    ]
    return np.array(bars).T if any(b != (0, 0) for b in bars) else None


def colours(doc: dict) -> dict[str, str]:
    """One colour per model, the same in every chart and in the HTML tables."""
    palette = [to_hex(c) for c in colormaps["tab10"].colors]
    return {run["label"]: palette[i % len(palette)] for i, run in enumerate(runs(doc))}


def tradeoff_svg(doc: dict) -> str | None:
    """Memorization against capability, one panel per memorization reading, Pareto front marked."""
    PARETO_X, PARETO_Y = pareto_axes()
    points = {
        y: [
            (run, run["metrics"][PARETO_X], run["metrics"][y])
            for run in runs(doc)
            if value(run["metrics"].get(PARETO_X)) is not None and value(run["metrics"].get(y)) is not None
        ]
        for y in PARETO_Y
    }
    points = {y: rows for y, rows in points.items() if len(rows) > 1}
    if not points:
        return None
    colour = colours(doc)
    with rc_context(_RC | {"svg.hashsalt": "tradeoff"}):
        fig = Figure(figsize=(5.2 * len(points), 4.0), layout="constrained")
        for ax, (y, rows) in zip(fig.subplots(1, len(points), squeeze=False)[0], points.items()):
            front = doc.get("pareto", {}).get("fronts", {}).get(y, [])
            for run, ex, ey in rows:
                hollow = {PARETO_X, y} & not_comparable(doc, run["label"])
                ax.errorbar(
                    value(ex),
                    value(ey),
                    xerr=_errors([ex]),
                    yerr=_errors([ey]),
                    fmt="o",
                    ms=7,
                    color=colour[run["label"]],
                    mfc="white" if hollow else colour[run["label"]],
                    ecolor=colour[run["label"]],
                    elinewidth=0.8,
                    alpha=0.9,
                )
                ax.annotate(run["label"], (value(ex), value(ey)), xytext=(6, 5), textcoords="offset points")
            # in x order, so the dashed line walks along the front
            on_front = sorted((value(ex), value(ey)) for run, ex, ey in rows if run["label"] in front)
            if on_front:
                xs, ys = zip(*on_front)
                ax.plot(xs, ys, "--", color="#444", lw=1, zorder=0, label="Pareto front")
                ax.scatter(xs, ys, s=190, facecolors="none", edgecolors="#444", lw=1.2)
                ax.legend(loc="best", frameon=False)
            ax.set_xlabel(_axis_label(PARETO_X))
            ax.set_ylabel(_axis_label(y))
            ax.set_title(f"on the front: {', '.join(front) or '–'}", fontsize=9, loc="left")
            ax.grid(alpha=0.3)
        return _svg(fig)


def by_repeats_svg(
    doc: dict, metrics: tuple[str, ...] = ("extraction.exact_rate", "memorization.member_loss")
) -> str | None:
    """Each metric by repeat level (times a sequence occurred in training), one line per model."""
    lvls = levels(doc)
    shown = [m for m in metrics if any(run["metrics"].get(m, {}).get("by_repeats") for run in runs(doc))]
    if not lvls or not shown:
        return None
    colour = colours(doc)
    with rc_context(_RC | {"svg.hashsalt": "by-repeats"}):
        fig = Figure(figsize=(5.2 * len(shown), 3.6), layout="constrained")
        for ax, name in zip(fig.subplots(1, len(shown), squeeze=False)[0], shown):
            for run in runs(doc):
                by = run["metrics"].get(name, {}).get("by_repeats", {})
                xs = [i for i, lv in enumerate(lvls) if value(by.get(lv)) is not None]
                if not xs:
                    continue
                entries = [by[lvls[i]] for i in xs]
                ax.errorbar(
                    xs,
                    [value(e) for e in entries],
                    yerr=_errors(entries),
                    marker="o",
                    ms=4,
                    capsize=2,
                    color=colour[run["label"]],
                    label=run["label"],
                )
            ax.set_xticks(range(len(lvls)), [level_name(lv) for lv in lvls])
            ax.set_xlabel("times in training")
            ax.set_ylabel(_axis_label(name))
            ax.grid(alpha=0.3)
        fig.axes[0].legend(frameon=False, fontsize=8)
        return _svg(fig)


def roc_svg(doc: dict) -> str | None:
    """ROC of each membership attack in a model's sequence rows (members vs held-out non-members;
    canaries left out), one panel per model. Scores are oriented higher = more member-like."""
    panels = []
    for run in runs(doc):
        rows = [r for r in run.get("sequences", []) if r.get("kind") != "canary"]
        attacks = sorted({k for r in rows for k in r if k.startswith("mia_")})
        curves = []
        for key in attacks:
            scored = [(bool(r["member"]), r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            scored = [(m, s) for m, s in scored if math.isfinite(s)]
            if len({m for m, _ in scored}) == 2:
                fpr, tpr, _ = roc_curve([m for m, _ in scored], [s for _, s in scored])
                curves.append((key.removeprefix("mia_"), fpr, tpr))
        if curves:
            panels.append((run["label"], curves))
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    with rc_context(_RC | {"svg.hashsalt": "roc"}):
        fig = Figure(figsize=(3.4 * cols, 3.3 * nrows), layout="constrained")
        axes = fig.subplots(nrows, cols, squeeze=False).ravel()
        for ax, (label, curves) in zip(axes, panels):
            _roc_panel(ax, label, curves)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        return _svg(fig)


def _roc_panel(ax: Axes, label: str, curves: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    ax.plot([0, 1], [0, 1], ":", color="#999", lw=1)
    for attack, fpr, tpr in curves:
        ax.plot(fpr, tpr, lw=1.4, label=f"{attack} (AUC {auc(fpr, tpr):.2f})")
    ax.set_title(label, fontsize=9, loc="left")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", frameon=False, fontsize=7)
