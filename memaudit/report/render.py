"""Views of a results document: CSV tables, Markdown, HTML. Each is rendered from results.json
alone, so a view can always be rebuilt and never disagrees with the source. One renderer serves a
scan's results (one run) and a comparative document (`memaudit report`, several runs)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from memaudit.common.fileio import atomic_dir, atomic_write_text, json_text
from memaudit.probes.registry import is_swept, known
from memaudit.report import plots
from memaudit.report.document import (
    beyond_budget,
    charted_runs,
    is_comparison,
    is_diagnostic,
    level_name,
    levels,
    metric_names,
    not_comparable,
    oracle_label,
    runs,
    value,
)
from memaudit.report.gate import GateResult, gate_markdown
from memaudit.report.oracle import RULES, chance_note, retraining_intro, retraining_notes, retraining_table
from memaudit.report.robustness import robustness_rows
from memaudit.report.triage import FAMILIES, FAMILY_NAMES, MEMBERSHIP_FPR, RISKIEST, Triage, triage
from memaudit.report.verdict import (
    front_sentences,
    headline_columns,
    headline_entry,
    leak_rules,
    leak_rules_for,
    note_warnings,
    shift_warnings,
    verdicts,
)

SEQUENCE_COLUMNS = [
    "model",
    "doc_id",
    "source_file",  # the audit file and the record's line in it (its row number in Parquet or a JSON array)
    "source_line",
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


def arrow(name: str, entry: dict | None = None) -> str:
    """↑ higher is better, ↓ lower, →x closer to x; from the registry, else from the entry."""
    m = known(name)
    return m.arrow if m else {True: "↑", False: "↓"}.get((entry or {}).get("higher_is_better"), "·")


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def fmt_entry(entry: dict) -> str:
    """An entry's value as every view shows it (`> N` past a relearning budget)."""
    return beyond_budget(entry) or fmt(entry["value"])


def _ci(entry: dict) -> str:
    ci = entry.get("ci95")
    return f"{fmt(ci[0])} – {fmt(ci[1])}" if ci else ""


def _reference(doc: dict) -> dict | None:
    return next((run for run in runs(doc) if run["label"] == doc.get("reference")), None)


def _at(entry: dict | None, level: str) -> dict | None:
    return entry if entry is None or level == "all" else entry.get("by_repeats", {}).get(level)


def _decided_by(run: dict) -> dict[str, tuple[str, dict]]:
    """The metric that decided each of the run's verdicts against retraining: name -> (family, verdict)."""
    found = run.get("retraining", {}).get("verdicts", {})
    return {v["metric"]: (family, v) for family, v in found.items()}


def summary_frame(doc: dict) -> pd.DataFrame:
    """Long format: one row per model, metric and repeat level ('all' = the headline value), with
    the reference model's value at the same level and the difference from it; the row of the
    metric that decided a removal's verdict against retraining (oracle.py) carries it."""
    ref = _reference(doc)
    rows = []
    for run in runs(doc):
        excluded = not_comparable(doc, run["label"])
        decided = _decided_by(run)
        for name, m in run["metrics"].items():
            for level in ["all", *m.get("by_repeats", {})]:
                entry = _at(m, level)
                ci = entry.get("ci95") or [None, None]
                ref_value = value(_at(ref["metrics"].get(name), level)) if ref else None
                own = value(entry)
                family, verdict = decided.get(name, (None, {})) if level == "all" else (None, {})
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
                        "note": m.get("note"),  # e.g. a TPR at a low FPR on too few non-members (registry)
                        "oracle": oracle_label(doc),
                        "retraining_family": family,
                        "retraining_verdict": verdict.get("verdict"),
                        "retraining_margin": verdict.get("margin"),
                        "records_needed": verdict.get("records_needed"),
                    }
                )
    frame = pd.DataFrame(rows)
    return frame.astype({"records_needed": "Int64"}) if len(frame) else frame  # a count, not 36.0


def sequences_frame(doc: dict) -> pd.DataFrame:
    """One row per audited sequence and model."""
    frame = pd.DataFrame([{"model": run["label"], **row} for run in runs(doc) for row in run.get("sequences", [])])
    return frame[[c for c in SEQUENCE_COLUMNS if c in frame] + [c for c in frame if c not in SEQUENCE_COLUMNS]]


def _detail_names(names: list[str]) -> list[str]:
    """Without the prefix sweep (`...@P8`): the sweep has its own table."""
    return [n for n in names if not is_swept(n)]


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


def _verdict_lines(doc: dict) -> list[str]:
    """The answer in Markdown: each model's leak verdict with its evidence, then the Pareto fronts,
    and, without an oracle, what judging membership against chance means."""
    lines = []
    for v in verdicts(doc):
        if v.leaks:
            lines.append(f"- **{_md(v.label)}** leaks: " + "; ".join(f"`{_md(e)}`" for e in v.evidence))
        else:
            lines.append(f"- **{_md(v.label)}**: no leak found")
        if v.excluded:
            lines[-1] += f" ({_md(v.excluded)})"
        if v.note:
            lines[-1] += f" ({_md(v.note)})"
    rules = leak_rules(doc)
    lines.append("\nA model leaks when " + "; or ".join(f"`{name}` is {_md(rule)}" for name, rule in rules) + ".")
    fronts = front_sentences(doc)
    if fronts:
        lines[-1] += " On a Pareto front of capability vs memorization: " + "; ".join(map(_md, fronts)) + "."
    if chance_note(doc):
        lines.append(f"\nNote: {_md(chance_note(doc))}.")
    return lines


def _retraining_markdown(doc: dict) -> list[str]:
    """Each removal's verdict per family against the oracle (oracle.py), with the rules."""
    rows = retraining_table(doc)
    if not rows:
        return []
    table = _md_table(
        ["model", *RULES], [[_md(label), *(_md(text) for _, text in cells.values())] for label, cells in rows]
    )
    notes = "\n".join(f"- {_md(note)}" for note in retraining_notes(doc))
    return [f"**Against retraining.** {_md(retraining_intro(doc))}", table, notes]


def _headline_markdown(doc: dict) -> str:
    """Model x headline metric, the values every summary leads with (★: on a Pareto front)."""
    columns = headline_columns(doc)
    on_front = {v.label for v in verdicts(doc) if v.fronts}
    rows = []
    for run in runs(doc):
        cells = []
        for m in columns:
            entry = headline_entry(run["metrics"], m)
            mark = " †" if m.name in not_comparable(doc, run["label"]) else ""
            cells.append("–" if entry is None else f"{fmt(entry['value'])}{mark}")
        rows.append([_md(run["label"]) + (" ★" if run["label"] in on_front else ""), *cells])
    return _md_table(["model", *(f"{m.headline.label} {m.arrow}" for m in columns)], rows)  # type: ignore[union-attr]


def _robustness_markdown(doc: dict) -> list[str]:
    """The robustness table (memaudit stress), if any run is of an attacked model."""
    rows = [
        [_md(r.model), f"`{r.attack}`", fmt(r.before), fmt(r.after), fmt(r.retained), r.recover]
        for r in robustness_rows(doc)
    ]
    if not rows:
        return []
    head = ["model", "attack", "gap closed before", "after", "retained ↑", "steps to recover ↑"]
    return ["Robustness (gap closed against the standard model, before → after each attack):", _md_table(head, rows)]


def _provenance_markdown(doc: dict) -> list[str]:
    rows = [
        [
            _md(run["label"]),
            run["model"]["kind"],
            f"`{_md(run['model']['path'])}`",
            run["model"].get("sink_mode") or "–",
            (run.get("data", {}).get("audit_sha256") or "–")[:10],
        ]
        for run in runs(doc)
    ]
    reference = f"Reference model: **{_md(doc['reference'])}**." if doc.get("reference") else "No reference model."
    if oracle_label(doc):
        reference += f" Oracle: **{_md(oracle_label(doc))}** ({_md(doc['oracle']['chosen'])})."
    return ["Models:", _md_table(["model", "kind", "path", "sinks", "audit set"], rows), reference]


def _leaks_markdown(found: Triage) -> list[str]:
    """How many member records leak, by model and family (each a result of `--sarif`); nothing
    for a document without per-sequence rows."""
    if not any(rt.records for rt in found.runs):
        return []
    head = ["model", "leaking records", *(FAMILY_NAMES[f] for f in FAMILIES)]
    rows = [[_md(rt.label), *(str(rt.counts()[k]) for k in ("records", *FAMILIES))] for rt in found.runs]
    rule = (
        f"A member record leaks when it is extracted verbatim, when it is a canary exposed by more than "
        f"{found.exposure_bits:.2f} bits ({_md(found.exposure_source)}), or when a membership attack scores it "
        f"above its threshold at {MEMBERSHIP_FPR:.0%} false positives (at most {MEMBERSHIP_FPR:.0%} of the held-out "
        "texts score higher). `--sarif` writes one result per leaking record; `sequences.csv` has every record "
        "with its file and line."
    )
    return ["Leaking records:", _md_table(head, rows), rule]


def markdown(doc: dict) -> str:
    """The summary for a CI job or a pull request, leading with the answer: which models leak and
    which are on a Pareto front, the gates, the headline numbers; then every metric, repeat
    levels and, for a comparison, the models. Sequence texts are never in it."""
    all_runs = runs(doc)
    blocks = [f"## {_title(doc)}"]
    notes = [f"> ⚠ {_md(w)}" for w in [*doc.get("warnings", []), *shift_warnings(doc), *note_warnings(doc)]]
    if doc.get("redacted"):
        notes.append("Audit texts are redacted (shown as keyed hashes).")
    blocks += ["\n".join(notes)] if notes else []
    blocks.append("\n".join(_verdict_lines(doc)))
    if doc.get("gates"):
        blocks.append(gate_markdown([GateResult(**g) for g in doc["gates"]]).strip())
    blocks.append(_headline_markdown(doc))
    blocks += _retraining_markdown(doc)
    blocks += _leaks_markdown(triage(doc))
    blocks += _robustness_markdown(doc)
    rows = []
    for name in _detail_names(metric_names(doc)):
        cells = []
        for run in all_runs:
            m = run["metrics"].get(name)
            mark = " †" if name in not_comparable(doc, run["label"]) else ""
            cells.append("–" if m is None else f"{fmt_entry(m)}{f' ({_ci(m)})' if _ci(m) else ''}{mark}")
        rows.append([name, arrow(name), *cells])
    blocks.append("All metrics:")
    blocks.append(_md_table(["metric", "dir", *(_md(run["label"]) for run in all_runs)], rows))
    if any(doc.get("comparability", {}).get("not_comparable", {}).values()):
        blocks.append("† measured on another audit set, data build or probe suite than the baseline: not comparable.")
    lvls = levels(doc)
    rows = [
        [name, _md(run["label"]), *(fmt(by[lv]["value"]) if lv in by else "–" for lv in lvls)]
        for name in _detail_names(metric_names(doc))
        if _group(name, all_runs) in ("memorization", "extraction")
        for run in all_runs
        if (by := run["metrics"].get(name, {}).get("by_repeats"))
    ]
    if rows:
        blocks.append("By repeat level (times in training; held-out = non-members):")
        blocks.append(_md_table(["metric", "model", *map(level_name, lvls)], rows))
    if is_comparison(doc):
        blocks += _provenance_markdown(doc)
    return "\n\n".join(blocks) + "\n"


def _group(name: str, all_runs: list[dict]) -> str | None:
    """A metric's group: the registry's, else what a run recorded (a metric a newer scan knows)."""
    m = known(name)
    return m.group if m else next((r["metrics"][name].get("group") for r in all_runs if name in r["metrics"]), None)


def _csp_hash(script: str) -> str:
    """The Content-Security-Policy source for exactly this inline script: no other script runs,
    even if some text ever escaped escaping."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(str(script).encode("utf-8")).digest()).decode() + "'"


templates = Environment(
    loader=PackageLoader("memaudit.report", "templates"), autoescape=select_autoescape(default=True)
)
templates.filters["fmt"] = fmt
templates.filters["csp_hash"] = _csp_hash


def _best(doc: dict, name: str, entries: dict[str, dict | None]) -> set[str]:
    """Labels holding the best comparable value (of several) of a metric, by its direction.
    `entries`: each run's entry, by label (the headline view's, in the headline table)."""
    m = known(name)
    vals = {
        lab: v for lab, e in entries.items() if (v := value(e)) is not None and name not in not_comparable(doc, lab)
    }
    if m is None or len(vals) < 2 or (m.higher_is_better is None and m.ideal is None):
        return set()
    score = {True: lambda v: -v, False: lambda v: v, None: lambda v: abs(v - m.ideal)}[m.higher_is_better]
    top = min(score(v) for v in vals.values())
    return {lab for lab, v in vals.items() if score(v) == top}


def _cell(doc: dict, run: dict, name: str, entry: dict | None, best: set[str]) -> dict | None:
    """What a table cell shows of one entry (None: not measured)."""
    if entry is None:
        return None
    return {
        "value": entry["value"],
        "text": fmt_entry(entry),
        "ci": _ci(entry),
        "n": entry.get("n"),
        "best": run["label"] in best,
        "not_comparable": name in not_comparable(doc, run["label"]),
    }


def _metric_rows(doc: dict, names: list[str]) -> list[dict]:
    """One row per metric, one cell per model (the full table and the sweep)."""
    rows = []
    for name in names:
        meta = known(name)
        entries = {run["label"]: run["metrics"].get(name) for run in runs(doc)}
        best = _best(doc, name, entries)
        cells = [_cell(doc, run, name, entries[run["label"]], best) for run in runs(doc)]
        group = _group(name, runs(doc))
        rows.append(
            {
                "name": name,
                "arrow": arrow(name),
                "meaning": meta.meaning if meta else "",
                "group": group,
                "cells": cells,
            }
        )
    return rows


def _headline_table(doc: dict) -> dict:
    """The compact table: one row per model, one column per headline metric (its headline view),
    the best comparable value marked, and each value that trips its leak rule."""
    columns = headline_columns(doc)
    shown = {m.name: {run["label"]: headline_entry(run["metrics"], m) for run in runs(doc)} for m in columns}
    best = {name: _best(doc, name, entries) for name, entries in shown.items()}
    on_front = {v.label for v in verdicts(doc) if v.fronts}
    rows = []
    for run in runs(doc):
        cells = []
        rules = {m.name for m in leak_rules_for(run["metrics"])}
        for m in columns:
            cell = _cell(doc, run, m.name, shown[m.name][run["label"]], best[m.name])
            if cell is not None:
                cell["leak"] = m.name in rules and m.leaks(run["metrics"][m.name])
            cells.append(cell)
        rows.append({"run": run, "cells": cells, "front": run["label"] in on_front})
    return {"columns": columns, "rows": rows}


def _sequence_rows(doc: dict) -> list[dict]:
    """One row per audited sequence (joined on doc_id), with every model's result for it."""
    table: dict = {}
    for run in runs(doc):
        for row in run.get("sequences", []):
            table.setdefault(row["doc_id"], {"seq": row, "by": {}})["by"][run["label"]] = row
    return list(table.values())


def _riskiest_rows(found: Triage) -> list[dict]:
    """The riskiest member records (triage.py), as the report's triage table shows them."""
    rows = []
    for record in found.riskiest(RISKIEST):
        row = record.row
        source = f"{row['source_file']}:{row.get('source_line', '?')}" if row.get("source_file") else "–"
        rows.append({"row": row, "source": source, "text": row.get("prefix") or row["doc_id"], "by": record.by})
    return rows


def html(doc: dict) -> str:
    """One self-contained page (inline CSS, SVG and script; no external assets, no fetches) that
    leads with the answer: the verdict and the memorization-vs-capability charts, the headline
    table; then the details: every metric, repeat levels, ROC, sweep, sequences, provenance."""
    names = metric_names(doc)
    found = triage(doc)
    charts = {
        "tradeoff": plots.tradeoff_svg(doc) if len(runs(doc)) > 1 else None,
        "by_repeats": plots.by_repeats_svg(doc),
        "roc": plots.roc_svg(doc),
        "robustness": plots.robustness_svg(doc),
    }
    return templates.get_template("report.html.j2").render(
        doc=doc,
        title=_title(doc).replace("`", ""),
        runs=runs(doc),
        comparison=is_comparison(doc),
        verdicts=verdicts(doc),
        fronts=front_sentences(doc),
        shift_warnings=shift_warnings(doc),
        note_warnings=note_warnings(doc),
        robustness=robustness_rows(doc),
        leak_rules=leak_rules(doc),
        chance_note=chance_note(doc),
        retraining=retraining_table(doc),
        retraining_intro=retraining_intro(doc) if doc.get("oracle") else "",
        retraining_notes=retraining_notes(doc) if doc.get("oracle") else [],
        families=list(RULES),
        diagnostic_drawn=bool(charts["tradeoff"]) and any(is_diagnostic(run) for run in charted_runs(doc)),
        headline=_headline_table(doc),
        metric_rows=_metric_rows(doc, _detail_names(names)),
        sweep_rows=_metric_rows(doc, [n for n in names if is_swept(n)]),
        levels=levels(doc),
        level_name=level_name,
        level_rows=[
            (name, run["label"], run["metrics"][name]["by_repeats"])
            for name in _detail_names(names)
            for run in runs(doc)
            if run["metrics"].get(name, {}).get("by_repeats")
        ],
        sequences=_sequence_rows(doc),
        triage=found,
        riskiest=_riskiest_rows(found),
        membership_fpr=MEMBERSHIP_FPR,
        colours=plots.colours(doc),
        charts={k: Markup(v) for k, v in charts.items() if v},  # matplotlib's SVG: markup it escaped itself
    )


def write_report(doc: dict, out: Path, force: bool = False) -> Path:
    """results.json plus every view of it (report.html, summary.csv, sequences.csv, summary.md),
    written atomically: a scan's run dir, or a comparative report's dir."""
    with atomic_dir(Path(out), force=force) as tmp:
        atomic_write_text(tmp / "results.json", json_text(doc, indent=1))
        atomic_write_text(tmp / "sequences.csv", sequences_frame(doc).to_csv(index=False))
        atomic_write_text(tmp / "summary.csv", summary_frame(doc).to_csv(index=False))
        atomic_write_text(tmp / "summary.md", markdown(doc))
        atomic_write_text(tmp / "report.html", html(doc))
    return Path(out)


write_run = write_report  # the name `scan model` and the demo call it by
