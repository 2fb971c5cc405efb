"""CI gates: `--fail-on EXPR` turns a results document into a pass/fail verdict per model, with
JUnit XML and a GitHub job summary for the CI to show. docs/gates.md is the user's guide.

Syntax: `METRIC[REPEATS] OP NUMBER`, the gate *trips* (the build fails) when the comparison holds:
- METRIC: any registered metric name (`extraction.exact_rate`, `privacy.mia.loss.auc`,
  `extraction.exact_rate@P8`, the reference-relative `memorization.gap_closed`, the
  oracle-relative `privacy.mia.loss.auc_vs_oracle` of a report ...);
- [REPEATS] (optional): the value at one repeat level of `by_repeats` (times in training;
  0 = held-out non-members) instead of the headline value;
- OP: one of <, <=, >, >=; NUMBER: a finite decimal or scientific number; spaces are allowed
  between the parts.
A model for which the metric (or the level) was not measured fails its gate, saying why: a gate
never passes silently. A malformed expression or an unknown metric is an error (exit 2), found
before any work starts."""

from __future__ import annotations

import math
import operator
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import atomic_write_text
from memaudit.probes.registry import ORACLE, REPORT_AGAINST, get_metric
from memaudit.report.document import oracle_label, runs, value

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
SYNTAX = "METRIC[REPEATS] OP NUMBER with OP one of <, <=, >, >= (e.g. 'extraction.exact_rate>0', 'extraction.exact_rate[64]>=0.5')"
_EXPR = re.compile(r"(?P<metric>[^\s\[\]<>=!]+)\s*(?:\[(?P<level>[^\]]*)\])?\s*(?P<op>[<>=!]+)\s*(?P<value>\S+)")


def _number(x: float) -> str:
    """The shortest text that parses back to exactly x (`0`, not `0.0`)."""
    text = repr(x)
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float
    level: int | None = None  # a repeat level of by_repeats; None = the headline value

    def __str__(self) -> str:
        level = "" if self.level is None else f"[{self.level}]"
        return f"{self.metric}{level}{self.op}{_number(self.threshold)}"

    def trips(self, v: float) -> bool:
        return OPS[self.op](v, self.threshold)


@dataclass(frozen=True)
class GateResult:
    expr: str
    model: str
    value: float | None  # None: not measured for this model (the gate fails)
    passed: bool
    note: str = ""  # why there is no value

    @property
    def message(self) -> str:
        if self.value is None:
            return f"{self.expr} for {self.model}: {self.note or 'not measured'}"
        return f"{self.expr} {'does not hold' if self.passed else 'holds'} for {self.model} ({self.value:.4g})"


def parse_gate(text: str) -> Gate:
    """One `--fail-on` expression; a malformed one or an unknown metric is a MemauditError."""
    m = _EXPR.fullmatch(text.strip())
    if m is None:
        raise MemauditError(f"gate {text!r}: expected {SYNTAX}")
    if m["op"] not in OPS:
        raise MemauditError(f"gate {text!r}: unknown comparison {m['op']!r}; use one of <, <=, >, >=")
    level = m["level"].strip() if m["level"] is not None else None
    if level is not None and not re.fullmatch(r"[0-9]+", level):
        raise MemauditError(
            f"gate {text!r}: [{level}] must be a repeat level, a whole number of times in training (0 = held-out)"
        )
    try:
        threshold = float(m["value"])
    except ValueError:
        raise MemauditError(f"gate {text!r}: {m['value']!r} is not a number; expected {SYNTAX}") from None
    if not math.isfinite(threshold):
        raise MemauditError(f"gate {text!r}: the threshold must be a finite number")
    try:
        get_metric(m["metric"])
    except MemauditError as e:
        raise MemauditError(f"gate {text!r}: {e}") from None
    return Gate(m["metric"], m["op"], threshold, None if level is None else int(level))


def parse_gates(exprs: Iterable[str]) -> list[Gate]:
    """Parse all before any work starts, so a typo fails in a second, not after a scan."""
    return [parse_gate(e) for e in exprs]


def _why_missing(run: dict, gate: Gate, oracle: str | None) -> str:
    if gate.metric not in run["metrics"]:
        against = get_metric(gate.metric).against
        if against == ORACLE:
            if oracle is None:
                return "not measured: it needs an oracle run (report --oracle)"
            problem = run.get("retraining", {}).get("problem")  # a removal not paired with the oracle
            return f"not measured: {problem}" if problem else "not measured"
        if against:
            return "not measured: it needs a reference model (--reference)"
        return "not measured"
    by = run["metrics"][gate.metric].get("by_repeats", {})
    if gate.level is not None and str(gate.level) not in by:
        return f"no repeat level {gate.level} (levels: {', '.join(sorted(by, key=int)) or 'none'})"
    return "no finite value"


def _past_budget(gate: Gate, model: str, budget: float) -> GateResult:
    """A gate on a value known only to lie past `budget` (a relearning that did not bring
    memorization back within its steps): decided when every such value falls on one side of the
    threshold, failed (undecided) otherwise."""
    note = f"did not recover within {_number(budget)} steps"
    if gate.threshold > budget:
        return GateResult(str(gate), model, None, False, f"{note}; run more than {_number(gate.threshold)} to decide")
    return GateResult(str(gate), model, None, gate.op in ("<", "<="), note)


def evaluate_gates(doc: dict, gates: Iterable[Gate | str]) -> list[GateResult]:
    """Every gate against every model of a scan's results or of a comparative document; a
    reference-relative gate skips the reference model itself, and an oracle-relative one the
    oracle (0 against itself, by definition)."""
    results = []
    for gate in [g if isinstance(g, Gate) else parse_gate(g) for g in gates]:
        against = get_metric(gate.metric).against
        for run in runs(doc):
            if (against in REPORT_AGAINST and run["label"] == doc.get("reference")) or (
                against == ORACLE and run["label"] == oracle_label(doc)
            ):
                continue
            entry = run["metrics"].get(gate.metric)
            if gate.level is not None and entry is not None:
                entry = entry.get("by_repeats", {}).get(str(gate.level))
            v = value(entry)
            if v is None and entry is not None and entry.get("within_budget") is False:
                results.append(_past_budget(gate, run["label"], entry["budget"]))
            elif v is None:
                results.append(
                    GateResult(str(gate), run["label"], None, False, _why_missing(run, gate, oracle_label(doc)))
                )
            else:
                results.append(GateResult(str(gate), run["label"], v, not gate.trips(v)))
    return results


def write_junit(results: list[GateResult], path: Path) -> None:
    """JUnit XML: one testcase per gate and model (classname = the model), tripped ones failed."""
    failures = sum(not r.passed for r in results)
    root = ET.Element("testsuites", name="memaudit", tests=str(len(results)), failures=str(failures))
    suite = ET.SubElement(root, "testsuite", name="memaudit gates", tests=str(len(results)), failures=str(failures))
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=r.model, name=r.expr)
        if not r.passed:
            ET.SubElement(case, "failure", message=r.message, type="memaudit.GateTripped").text = r.message
    atomic_write_text(Path(path), ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")


def gate_markdown(results: list[GateResult]) -> str:
    tripped = sum(not r.passed for r in results)
    head = f"{tripped} of {len(results)} tripped" if tripped else f"all {len(results)} passed"
    lines = [f"### memaudit gates: {head}", "", "| | gate | model | value |", "|---|---|---|---|"]
    for r in results:
        shown = (r.note or "not measured") if r.value is None else f"{r.value:.4g}"
        model = r.model.replace("|", "\\|")
        lines.append(f"| {'✅' if r.passed else '❌'} | `{r.expr}` | {model} | {shown} |")
    return "\n".join(lines) + "\n"


def publish_gates(results: list[GateResult], junit: Path | None = None) -> None:
    """Where CI looks: a JUnit file if asked, and GitHub's job summary when running there."""
    if junit is not None:
        write_junit(results, junit)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and results:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(gate_markdown(results) + "\n")
