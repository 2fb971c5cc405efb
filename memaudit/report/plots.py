"""Charts of a report document as inline SVG (matplotlib Figures, no pyplot state), so report.html
stays one self-contained file. Each model keeps one colour in every chart."""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib import colormaps, rc_context, rcParams
from matplotlib.axes import Axes
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox
from sklearn.metrics import auc, roc_curve

from memaudit.probes.registry import get_metric, pareto_axes
from memaudit.report.document import (
    charted_runs,
    is_diagnostic,
    is_oracle,
    level_name,
    levels,
    not_comparable,
    oracle_label,
    runs,
    value,
)
from memaudit.report.robustness import RobustnessRow, robustness_rows

# Text stays text (small, selectable); `$` in a model name is not math; a fixed salt per chart
# gives the same bytes for the same document and distinct element ids across the charts.
RC = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 9,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def svg(fig: Figure) -> str:
    """The figure at its own size: its constrained layout already keeps every label inside, so no
    tight bounding box, which would lay out and draw the whole figure once more."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: the SVG sits inside HTML


def axis_label(name: str) -> str:
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


def label_colours(labels: list[str]) -> dict[str, str]:
    """One colour per label, in order, from one palette: a report's models, a sweep's arms."""
    palette = [to_hex(c) for c in colormaps["tab10"].colors]
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def colours(doc: dict) -> dict[str, str]:
    """One colour per model, the same in every chart and in the HTML tables."""
    return label_colours([run["label"] for run in runs(doc)])


def tradeoff_svg(doc: dict) -> str | None:
    """Memorization against capability (the registry's Pareto axes), one panel per memorization
    axis, the Pareto front ringed and joined; every model labelled, no label over another.
    Attacked models (memaudit stress) have the robustness chart instead (charted_runs)."""
    x, ys = pareto_axes()
    points = {
        y: [
            (run, run["metrics"][x], run["metrics"][y])
            for run in charted_runs(doc)
            if value(run["metrics"].get(x)) is not None and value(run["metrics"].get(y)) is not None
        ]
        for y in ys
    }
    points = {y: rows for y, rows in points.items() if len(rows) > 1}
    if not points:
        return None
    with rc_context(RC | {"svg.hashsalt": "tradeoff"}):
        fig = Figure(figsize=(6.2 * len(points), 4.4), layout="constrained")
        panels = list(zip(fig.subplots(1, len(points), squeeze=False)[0], points.items()))
        for ax, (y, rows) in panels:
            _tradeoff_panel(ax, doc, x, y, rows)
        fig.legend(handles=_tradeoff_legend(doc), loc="outside upper center", ncols=2, frameon=False)
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw_without_rendering()  # the layout, so that label placement sees the final axes
        for ax, (_, rows) in panels:
            place_labels(ax, renderer, [(run["label"], value(ex), value(ey)) for run, ex, ey in rows])
        return svg(fig)


def _marker(doc: dict, run: dict) -> str:
    """A diamond for the oracle, a triangle for a diagnostic sink mode (neither is a removal, so
    neither is ever on a front), a dot for every other model."""
    return "D" if is_oracle(run, oracle_label(doc)) else "^" if is_diagnostic(run) else "o"


def _tradeoff_panel(ax: Axes, doc: dict, x: str, y: str, rows: list[tuple[dict, dict, dict]]) -> None:
    colour = colours(doc)
    front = doc.get("pareto", {}).get("fronts", {}).get(y, [])
    for run, ex, ey in rows:
        hollow = {x, y} & not_comparable(doc, run["label"])
        ax.errorbar(
            value(ex),
            value(ey),
            xerr=_errors([ex]),
            yerr=_errors([ey]),
            fmt=_marker(doc, run),
            ms=7,
            color=colour[run["label"]],
            mfc="white" if hollow else colour[run["label"]],
            ecolor=colour[run["label"]],
            elinewidth=0.8,
            alpha=0.9,
        )
    # in x order, so the dashed line walks along the front
    on_front = sorted((value(ex), value(ey)) for run, ex, ey in rows if run["label"] in front)
    if on_front:
        xs, ys = zip(*on_front)
        ax.plot(xs, ys, "--", color="#444", lw=1, zorder=0)
        ax.scatter(xs, ys, s=190, facecolors="none", edgecolors="#444", lw=1.2)
    ax.margins(x=0.22, y=0.16)  # room for the labels inside the axes
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.grid(alpha=0.3)


def _tradeoff_legend(doc: dict) -> list[Line2D]:
    """What the marks mean (the models are labelled on the points)."""
    handles = [Line2D([], [], ls="--", color="#444", marker="o", ms=11, mfc="none", label="Pareto front")]
    drawn = {_marker(doc, run) for run in charted_runs(doc)}
    if "D" in drawn:
        handles.append(Line2D([], [], ls="", color="#666", marker="D", ms=6, label="oracle: the target, not a method"))
    if "^" in drawn:
        handles.append(Line2D([], [], ls="", color="#666", marker="^", ms=6, label="diagnostic mode: not a removal"))
    return handles


# Label spots around a point, in order of preference: (x, y) sides of the point (0: centred),
# the label's own width and height accounted for below. Diagonals first, so a label stays off
# the point's error bars.
_SPOTS = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
_RINGS_PT = (6, 16, 28, 42)  # gaps between a point and its label, in points
_MARKER_PT = 7  # half the size of a point with its Pareto ring


def place_labels(ax: Axes, renderer: RendererBase, points: list[tuple[str, float, float]]) -> None:
    """Labels every point without covering another label or point (greedy, in order): each
    takes the first free spot around its point, nearest ring first, inside the axes; where no
    spot is free it takes the one that overlaps least, joined to its point by a thin line."""
    px = ax.figure.dpi / 72
    centres = [tuple(ax.transData.transform((x, y))) for _, x, y in points]
    r = _MARKER_PT * px
    taken = [Bbox.from_extents(cx - r, cy - r, cx + r, cy + r) for cx, cy in centres]
    area = ax.get_window_extent(renderer)
    font = FontProperties(size=rcParams["font.size"])
    for (label, x, y), (cx, cy) in zip(points, centres):
        w, h, _ = renderer.get_text_width_height_descent(label, font, ismath=False)
        w, h = w + 2 * px, h + 2 * px  # a little air, and room for a browser font a little wider
        best = None
        for ring, gap in enumerate(_RINGS_PT):
            for sx, sy in _SPOTS:
                g = gap * px + (r if ring == 0 else 0)
                x0 = cx + (g if sx > 0 else -g - w if sx < 0 else -w / 2)
                y0 = cy + (g if sy > 0 else -g - h if sy < 0 else -h / 2)
                box = Bbox.from_bounds(x0, y0, w, h)
                cost = sum(_overlap(box, t) for t in taken) + w * h - _overlap(box, area)
                cost = 0.0 if cost < 0.5 else cost  # overlaps and spill in square pixels; less is rounding
                if best is None or cost < best[0]:
                    best = (cost, box, ring)
            if best[0] == 0:
                break
        _, box, ring = best
        ax.annotate(
            label,
            (x, y),
            xytext=((box.x0 - cx) / px, (box.y0 - cy) / px + 1),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=rcParams["font.size"],
            arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.6, "shrinkA": 0, "shrinkB": 4} if ring else None,
        ).set_in_layout(False)
        taken.append(box)


def _overlap(a: Bbox, b: Bbox) -> float:
    """Area of the intersection of two boxes (0 when apart)."""
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


def by_repeats_svg(doc: dict) -> str | None:
    """The registry's memorization axes by repeat level (times a sequence occurred in training),
    one line per model (attacked models: see charted_runs)."""
    metrics = pareto_axes()[1]
    lvls = levels(doc)
    shown_runs = charted_runs(doc)
    shown = [m for m in metrics if any(run["metrics"].get(m, {}).get("by_repeats") for run in shown_runs)]
    if not lvls or not shown:
        return None
    colour = colours(doc)
    with rc_context(RC | {"svg.hashsalt": "by-repeats"}):
        fig = Figure(figsize=(5.2 * len(shown), 3.6), layout="constrained")
        for ax, name in zip(fig.subplots(1, len(shown), squeeze=False)[0], shown):
            for run in shown_runs:
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
            ax.set_ylabel(axis_label(name))
            ax.grid(alpha=0.3)
        fig.axes[0].legend(frameon=False, fontsize=8)
        return svg(fig)


def roc_svg(doc: dict) -> str | None:
    """ROC of each membership attack in a model's sequence rows (members vs held-out non-members;
    canaries left out), one panel per model (attacked models: see charted_runs). Scores are oriented
    higher = more member-like."""
    panels = []
    for run in charted_runs(doc):
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
    with rc_context(RC | {"svg.hashsalt": "roc"}):
        fig = Figure(figsize=(3.4 * cols, 3.3 * nrows), layout="constrained")
        axes = fig.subplots(nrows, cols, squeeze=False).ravel()
        for ax, (label, curves) in zip(axes, panels):
            _roc_panel(ax, label, curves)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        return svg(fig)


def _roc_panel(ax: Axes, label: str, curves: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    ax.plot([0, 1], [0, 1], ":", color="#999", lw=1)
    for attack, fpr, tpr in curves:
        ax.plot(fpr, tpr, lw=1.4, label=f"{attack} (AUC {auc(fpr, tpr):.2f})")
    ax.set_title(label, fontsize=9, loc="left")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", frameon=False, fontsize=7)


_ROW_IN = 0.32  # height of one model's row in the robustness chart, inches: above two lines of 9 pt text


def robustness_figure(doc: dict) -> Figure | None:
    """Gap closed before (hollow) and after (filled) each attack, an arrow between them: one
    panel per attack, one row per attacked model, the same rows in every panel. Model names are
    the y tick labels, a row apart each, and no other text sits in the axes, so labels cannot meet."""
    rows = [r for r in robustness_rows(doc) if r.before is not None and r.after is not None]
    if not rows:
        return None
    attacks = list(dict.fromkeys(r.attack for r in rows))
    models = list(dict.fromkeys(r.model for r in rows))
    cols = min(3, len(attacks))
    nrows = math.ceil(len(attacks) / cols)
    gaps = [g for r in rows for g in (r.before, r.after)]
    pad = 0.06 * (max(1.0, *gaps) - min(0.0, *gaps))
    xlim = (min(0.0, *gaps) - pad, max(1.0, *gaps) + pad)  # 0 and 1 always in view, the same in every panel
    with rc_context(RC):
        fig = Figure(figsize=(1.6 + 3.4 * cols, (0.9 + _ROW_IN * len(models)) * nrows + 0.4), layout="constrained")
        axes = fig.subplots(nrows, cols, squeeze=False, sharey=True).ravel()
        for ax, attack in zip(axes, attacks):
            _robustness_panel(ax, attack, [r for r in rows if r.attack == attack], models)
            ax.set_xlim(*xlim)
        for ax in axes[len(attacks) :]:
            ax.set_visible(False)
        handles = [
            Line2D([], [], ls="", marker="o", ms=6, mfc="white", mec="#555", label="before the attack"),
            Line2D([], [], ls="", marker="o", ms=6, color="#b3261e", label="after"),
        ]
        fig.legend(handles=handles, loc="outside upper center", ncols=2, frameon=False)
    return fig


def _robustness_panel(ax: Axes, attack: str, rows: list[RobustnessRow], models: list[str]) -> None:
    for r in rows:
        y = models.index(r.model)
        ax.annotate("", (r.after, y), (r.before, y), arrowprops={"arrowstyle": "->", "color": "#999", "lw": 1})
        ax.plot(r.before, y, "o", ms=6, mfc="white", mec="#555", zorder=3)
        ax.plot(r.after, y, "o", ms=6, color="#b3261e", zorder=3)
    for x, style in ((0, "-"), (1, ":")):  # the standard model; as if never trained on the members
        ax.axvline(x, color="#888", lw=0.8, ls=style, zorder=0)
    ax.set_yticks(range(len(models)), models)
    ax.set_ylim(len(models) - 0.5, -0.5)
    ax.set_title(attack, fontsize=9, loc="left")
    ax.set_xlabel("gap closed →1 (0: the standard model)")
    ax.grid(axis="x", alpha=0.3)


def robustness_svg(doc: dict) -> str | None:
    fig = robustness_figure(doc)
    if fig is None:
        return None
    with rc_context(RC | {"svg.hashsalt": "robustness"}):
        return svg(fig)
