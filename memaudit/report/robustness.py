"""The robustness view of a report: for each scan of an attacked model (memaudit stress), which
model was attacked, how, how much of the standard model's loss gap it had closed before and
after the attack, the share retained and, for relearning, the steps memorization took to come
back. The HTML and Markdown tables, the terminal and the chart all read these rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memaudit.report.document import beyond_budget, runs, value

STEPS = "robustness.relearn_steps_to_recover"


@dataclass(frozen=True)
class RobustnessRow:
    label: str  # the run's label in the report
    model: str  # the attacked model: its dir name, and the sink mode it was scanned in
    attack: str
    before: float | None  # gap closed before the attack (against the standard model)
    after: float | None  # and after it
    retained: float | None  # after / before, where measured
    recover: str  # steps to recover as shown: `12`, `> 40`, `–` (not measured, or no relearning)


def attacked_model(run: dict) -> str:
    """The model an attacked run started from, as the robustness view names it."""
    model = run["model"]
    mode = model.get("sink_mode")
    return (Path(model["path"]).name or model["path"]) + (f" (sinks {mode})" if mode else "")


def recover_text(entry: dict | None) -> str:
    """Steps to recover as a reader wants them: a whole number, `> N` past the budget, `–`."""
    shown = beyond_budget(entry)
    steps = value(entry)
    return shown or ("–" if steps is None else str(int(steps)))


def robustness_rows(doc: dict) -> list[RobustnessRow]:
    """One row per attacked run, in the document's order."""
    rows = []
    for run in runs(doc):
        attack = run.get("attack")
        if not attack:
            continue
        gap = attack.get("gap_closed", {})
        retained = run["metrics"].get(f"robustness.{attack['family']}.gap_closed_retained")
        rows.append(
            RobustnessRow(
                run["label"],
                attacked_model(run),
                attack["name"],
                gap.get("before"),
                gap.get("after"),
                value(retained),
                recover_text(run["metrics"].get(STEPS)),
            )
        )
    return rows
