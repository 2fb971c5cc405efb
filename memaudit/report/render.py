"""Views of a results document: CSV tables, Markdown, HTML. Each is rendered from results.json
alone, so a view can always be rebuilt and never disagrees with the source. One renderer serves a
scan's results (one run) and a comparative document (`memaudit report`, several runs)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from memaudit.errors import MemauditError
from memaudit.fileio import atomic_dir, atomic_write_text
from memaudit.probes.registry import Metric, get_metric
from memaudit.report import plots
from memaudit.report.document import is_comparison, level_name, levels, metric_names, not_comparable, runs, value
from memaudit.report.gate import GateResult, gate_markdown

SEQUENCE_COLUMNS = [
    "model",
    "doc_id",
    "kind",
    "repeats",
    "member",
    "n_tokens",
    "loss",
    "exact",
    "token_match",
    "prefix",
    "suffix",
    "emitted",
]


def _known(name: str) -> Metric | None:
    """The registry's entry, None for a metric this version does not know (a newer scan's)."""
    try:
        return get_metric(name)
    except MemauditError:
        return None


def arrow(name: str, entry: dict | None = None) -> str:
    """↑ higher is better, ↓ lower, →x closer to x; from the registry, else from the entry."""
    m = _known(name)
    return m.arrow if m else {True: "↑", False: "↓"}.get((entry or {}).get("higher_is_better"), "·")


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ci(entry: dict) -> str:
    ci = entry.get("ci95")
    return f"{fmt(ci[0])} – {fmt(ci[1])}" if ci else ""


def _reference(doc: dict) -> dict | None:
    return next((run for run in runs(doc) if run["label"] == doc.get("reference")), None)


def _at(entry: dict | None, level: str) -> dict | None:
    return entry if entry is None or level == "all" else entry.get("by_repeats", {}).get(level)


def summary_frame(doc: dict) -> pd.DataFrame:
    """Long format: one row per model, metric and repeat level ('all' = the headline value), with
    the reference model's value at the same level and the difference from it."""
    ref = _reference(doc)
    rows = []
    for run in runs(doc):
        excluded = not_comparable(doc, run["label"])
        for name, m in run["metrics"].items():
            for level in ["all", *m.get("by_repeats", {})]:
                entry = _at(m, level)
                ci = entry.get("ci95") or [None, None]
                ref_value = value(_at(ref["metrics"].get(name), level)) if ref else None
                own = value(entry)
                rows.append(
                    {
                        "model": run["label"],
                        "metric": name,
                        "repeats": level,
                        "value": entry["value"],
                        "n": entry.get("n"),
                        "ci95_low": ci[0],
                        "ci95_high": ci[1],
                        "higher_is_better": m.get("higher_is_better"),
                        "group": m.get("group"),
                        "comparable": name not in excluded,
                        "reference": doc.get("reference"),
                        "reference_value": ref_value,
                        "delta_vs_reference": own - ref_value if own is not None and ref_value is not None else None,
                        "kind": run["model"].get("kind"),
                        "sink_mode": run["model"].get("sink_mode"),
                        "model_path": run["model"]["path"],
                    }
                )
    return pd.DataFrame(rows)


def sequences_frame(doc: dict) -> pd.DataFrame:
    """One row per audited sequence and model."""
    frame = pd.DataFrame([{"model": run["label"], **row} for run in runs(doc) for row in run.get("sequences", [])])
    return frame[[c for c in SEQUENCE_COLUMNS if c in frame] + [c for c in frame if c not in SEQUENCE_COLUMNS]]


def _headline(names: list[str]) -> list[str]:
    """Without the prefix sweep (`...@P8`): the sweep has its own table."""
    return [n for n in names if "@P" not in n]


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _title(doc: dict) -> str:
    if is_comparison(doc):
        return f"memaudit report: {len(runs(doc))} models"
    model = runs(doc)[0]["model"]
    mode = f", sinks {model['sink_mode']}" if model.get("sink_mode") else ""
    return f"memaudit scan: `{model['path']}` ({model['kind']}{mode})"


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    )


def markdown(doc: dict) -> str:
    """The headline tables for a CI job summary or a pull request: metrics by model, repeat
    levels, the Pareto front, gates. Sequence texts are never in it."""
    all_runs = runs(doc)
    blocks = [f"## {_title(doc)}"]
    if is_comparison(doc):
        rows = [
            [
                _md(run["label"]),
                run["model"]["kind"],
                f"`{_md(run['model']['path'])}`",
                run["model"].get("sink_mode") or "–",
                (run.get("data", {}).get("audit_sha256") or "–")[:10],
            ]
            for run in all_runs
        ]
        blocks.append(_md_table(["model", "kind", "path", "sinks", "audit set"], rows))
        blocks.append(
            f"Reference model: **{_md(doc['reference'])}**." if doc.get("reference") else "No reference model."
        )
    notes = [f"> ⚠ {_md(w)}" for w in doc.get("warnings", [])]
    if doc.get("redacted"):
        notes.append("Audit texts are redacted (shown as keyed hashes).")
    blocks += ["\n".join(notes)] if notes else []
    rows = []
    for name in _headline(metric_names(doc)):
        cells = []
        for run in all_runs:
            m = run["metrics"].get(name)
            mark = " †" if name in not_comparable(doc, run["label"]) else ""
            cells.append("–" if m is None else f"{fmt(m['value'])}{f' ({_ci(m)})' if _ci(m) else ''}{mark}")
        rows.append([name, arrow(name), *cells])
    blocks.append(_md_table(["metric", "dir", *(_md(run["label"]) for run in all_runs)], rows))
    if any(doc.get("comparability", {}).get("not_comparable", {}).values()):
        blocks.append("† measured on another audit set, data build or probe suite than the baseline: not comparable.")
    lvls = levels(doc)
    rows = [
        [name, _md(run["label"]), *(fmt(by[lv]["value"]) if lv in by else "–" for lv in lvls)]
        for name in _headline(metric_names(doc))
        if name.split(".")[0] in ("memorization", "extraction")
        for run in all_runs
        if (by := run["metrics"].get(name, {}).get("by_repeats"))
    ]
    if rows:
        blocks.append("By repeat level (times in training; held-out = non-members):")
        blocks.append(_md_table(["metric", "model", *map(level_name, lvls)], rows))
    pareto = doc.get("pareto", {})
    blocks += [
        f"Pareto front of {pareto['x']} vs {y}: {', '.join(map(_md, front))}."
        for y, front in pareto.get("fronts", {}).items()
        if front
    ]
    if doc.get("gates"):
        blocks.append(gate_markdown([GateResult(**g) for g in doc["gates"]]).strip())
    return "\n\n".join(blocks) + "\n"


def _csp_hash(script: str) -> str:
    """The Content-Security-Policy source for exactly this inline script: no other script runs,
    even if some text ever escaped escaping."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(str(script).encode("utf-8")).digest()).decode() + "'"


_env = Environment(loader=PackageLoader("memaudit.report", "templates"), autoescape=select_autoescape(default=True))
_env.filters["fmt"] = fmt
_env.filters["csp_hash"] = _csp_hash


def _best(doc: dict, name: str) -> set[str]:
    """Labels holding the best comparable value of a metric (by its direction), if several runs."""
    m = _known(name)
    vals = {
        run["label"]: value(run["metrics"].get(name))
        for run in runs(doc)
        if name not in not_comparable(doc, run["label"])
    }
    vals = {lab: v for lab, v in vals.items() if v is not None}
    if m is None or len(vals) < 2 or (m.higher_is_better is None and m.ideal is None):
        return set()
    score = {True: lambda v: -v, False: lambda v: v, None: lambda v: abs(v - m.ideal)}[m.higher_is_better]
    top = min(score(v) for v in vals.values())
    return {lab for lab, v in vals.items() if score(v) == top}


def _metric_rows(doc: dict, names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        best = _best(doc, name)
        cells = []
        for run in runs(doc):
            m = run["metrics"].get(name)
            cells.append(
                None
                if m is None
                else {
                    "value": m["value"],
                    "ci": _ci(m),
                    "n": m.get("n"),
                    "best": run["label"] in best,
                    "not_comparable": name in not_comparable(doc, run["label"]),
                }
            )
        meta = _known(name)
        rows.append({"name": name, "arrow": arrow(name), "meaning": meta.meaning if meta else "", "cells": cells})
    return rows


def _sequence_rows(doc: dict) -> list[dict]:
    """One row per audited sequence (joined on doc_id), with every model's result for it."""
    table: dict = {}
    for run in runs(doc):
        for row in run.get("sequences", []):
            table.setdefault(row["doc_id"], {"seq": row, "by": {}})["by"][run["label"]] = row
    return list(table.values())


def html(doc: dict) -> str:
    """One self-contained page (inline CSS, SVG and script; no external assets, no fetches)."""
    names = metric_names(doc)
    charts = {
        "tradeoff": plots.tradeoff_svg(doc) if len(runs(doc)) > 1 else None,
        "by_repeats": plots.by_repeats_svg(doc),
        "roc": plots.roc_svg(doc),
    }
    return _env.get_template("report.html.j2").render(
        doc=doc,
        title=_title(doc).replace("`", ""),
        runs=runs(doc),
        comparison=is_comparison(doc),
        metric_rows=_metric_rows(doc, _headline(names)),
        sweep_rows=_metric_rows(doc, [n for n in names if "@P" in n]),
        levels=levels(doc),
        level_name=level_name,
        level_rows=[
            (name, run["label"], run["metrics"][name]["by_repeats"])
            for name in _headline(names)
            for run in runs(doc)
            if run["metrics"].get(name, {}).get("by_repeats")
        ],
        sequences=_sequence_rows(doc),
        colours=plots.colours(doc),
        charts={k: Markup(v) for k, v in charts.items() if v},  # matplotlib's SVG: markup it escaped itself
    )


def write_report(doc: dict, out: Path, force: bool = False) -> Path:
    """results.json plus every view of it (report.html, summary.csv, sequences.csv, summary.md),
    written atomically: a scan's run dir, or a comparative report's dir."""
    with atomic_dir(Path(out), force=force) as tmp:
        atomic_write_text(tmp / "results.json", json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        atomic_write_text(tmp / "sequences.csv", sequences_frame(doc).to_csv(index=False))
        atomic_write_text(tmp / "summary.csv", summary_frame(doc).to_csv(index=False))
        atomic_write_text(tmp / "summary.md", markdown(doc))
        atomic_write_text(tmp / "report.html", html(doc))
    return Path(out)


write_run = write_report  # the name `scan model` and the demo call it by
