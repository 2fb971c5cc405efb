"""Views of a results document: CSV tables, Markdown, HTML. Each is rendered from
results.json alone, so a view can always be rebuilt and never disagrees with the source."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from memaudit.fileio import atomic_dir, atomic_write_text
from memaudit.probes.registry import REGISTRY

SEQUENCE_COLUMNS = [
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
]


def arrow(entry: dict) -> str:
    return {True: "↑", False: "↓"}.get(entry.get("higher_is_better"), "·")


def summary_frame(results: dict) -> pd.DataFrame:
    """Long format: one row per metric and repeat level ('all' = the headline value)."""
    rows = []
    for name, m in results["metrics"].items():
        levels = [("all", m)] + [(lv, sub) for lv, sub in m.get("by_repeats", {}).items()]
        for level, entry in levels:
            ci = entry.get("ci95") or [None, None]
            rows.append(
                {
                    "metric": name,
                    "group": m["group"],
                    "higher_is_better": m["higher_is_better"],
                    "repeats": level,
                    "value": entry["value"],
                    "n": entry["n"],
                    "ci95_low": ci[0],
                    "ci95_high": ci[1],
                    "sink_mode": results["model"].get("sink_mode"),
                    "model": results["model"]["path"],
                }
            )
    return pd.DataFrame(rows)


def sequences_frame(results: dict) -> pd.DataFrame:
    frame = pd.DataFrame(results["sequences"])
    return frame[
        [c for c in SEQUENCE_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in SEQUENCE_COLUMNS]
    ]


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _levels(results: dict) -> list[str]:
    levels = {lv for m in results["metrics"].values() for lv in m.get("by_repeats", {})}
    return sorted(levels, key=int)


def markdown(results: dict) -> str:
    model = results["model"]
    mode = f", sinks {model['sink_mode']}" if model.get("sink_mode") else ""
    lines = [f"## memaudit scan: `{model['path']}` ({model['kind']}{mode})", ""]
    lines += ["| metric | dir | value | 95% CI | n |", "|---|---|---|---|---|"]
    for name, m in results["metrics"].items():
        ci = m.get("ci95")
        lines.append(
            f"| {name} | {arrow(m)} | {_fmt(m['value'])} | {'–' if not ci else f'{ci[0]:.3f} – {ci[1]:.3f}'} | {m['n']} |"
        )
    levels = _levels(results)
    if levels:
        lines += ["", "By repeat level (0 = held-out non-members):", ""]
        lines += ["| metric | " + " | ".join(f"×{lv}" for lv in levels) + " |", "|---|" + "---|" * len(levels)]
        for name, m in results["metrics"].items():
            if "by_repeats" in m:
                cells = [_fmt(m["by_repeats"][lv]["value"]) if lv in m["by_repeats"] else "–" for lv in levels]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_env = Environment(loader=PackageLoader("memaudit.report", "templates"), autoescape=select_autoescape(default=True))
_env.filters["fmt"] = _fmt


def html(results: dict) -> str:
    meanings = {name: REGISTRY[name].meaning for name in results["metrics"] if name in REGISTRY}
    return _env.get_template("scan.html.j2").render(
        r=results, levels=_levels(results), meanings=meanings, arrow=arrow, sequences=results["sequences"]
    )


def write_run(results: dict, out: Path, force: bool = False) -> Path:
    """A scan's run dir: results.json plus every view of it, written atomically."""
    with atomic_dir(Path(out), force=force) as tmp:
        atomic_write_text(tmp / "results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        atomic_write_text(tmp / "sequences.csv", sequences_frame(results).to_csv(index=False))
        atomic_write_text(tmp / "summary.csv", summary_frame(results).to_csv(index=False))
        atomic_write_text(tmp / "summary.md", markdown(results))
        atomic_write_text(tmp / "report.html", html(results))
    return Path(out)
