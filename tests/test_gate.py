"""CI gates: the `--fail-on` expression parser (property tests: generated valid expressions
round-trip, malformed ones are rejected with one clear error), the semantics of each comparison,
per-level selection, fail-closed on what was not measured, JUnit XML and the job summary."""

from __future__ import annotations

import math
import operator
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memaudit.common.errors import MemauditError
from memaudit.probes.registry import REGISTRY
from memaudit.report.gate import (
    OPS,
    Gate,
    evaluate_gates,
    gate_markdown,
    parse_gate,
    publish_gates,
    write_junit,
)

METRICS = st.sampled_from(sorted(REGISTRY))
LEVELS = st.none() | st.integers(min_value=0, max_value=10**6)
THRESHOLDS = st.floats(allow_nan=False, allow_infinity=False)
SPACE = st.sampled_from(["", " ", "  ", "\t"])
GATES = st.builds(Gate, metric=METRICS, op=st.sampled_from(sorted(OPS)), threshold=THRESHOLDS, level=LEVELS)


def results(value: float, by: dict[str, float] | None = None, label_kind: str = "standard") -> dict:
    entry = {"value": value, "n": 10, "higher_is_better": False, "group": "extraction"}
    if by is not None:
        entry["by_repeats"] = {lv: {"value": v, "n": 5} for lv, v in by.items()}
    return {"model": {"path": "/m", "kind": label_kind}, "metrics": {"extraction.exact_rate": entry}}


@given(GATES)
def test_canonical_text_round_trips(gate):
    assert parse_gate(str(gate)) == gate


@given(GATES, SPACE, SPACE, SPACE, SPACE)
def test_spaces_between_parts_are_allowed(gate, s1, s2, s3, s4):
    level = "" if gate.level is None else f"[{s2}{gate.level}{s2}]"
    text = f"{s1}{gate.metric}{s2}{level}{s3}{gate.op}{s4}{gate.threshold!r}{s1}"
    assert parse_gate(text) == gate


@given(METRICS, st.sampled_from(["=", "==", "!=", "=>", "=<", "<>", ">>", "<<", "!"]), THRESHOLDS)
def test_other_comparisons_are_rejected(metric, op, threshold):
    with pytest.raises(MemauditError, match="comparison"):
        parse_gate(f"{metric}{op}{threshold!r}")


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# ("=5" after "<" would read as "<=5", a valid gate)
@given(METRICS, st.sampled_from(sorted(OPS)), st.text(min_size=1).filter(lambda t: not _is_number(t) and t[0] != "="))
def test_thresholds_that_are_not_finite_numbers_are_rejected(metric, op, threshold):
    with pytest.raises(MemauditError):
        parse_gate(f"{metric}{op}{threshold}")


@given(METRICS, st.text(min_size=0, max_size=6).filter(lambda t: not t.strip().isascii() or not t.strip().isdigit()))
def test_levels_that_are_not_whole_numbers_are_rejected(metric, level):
    with pytest.raises(MemauditError):
        parse_gate(f"{metric}[{level}]>0")


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_any_text_parses_or_fails_with_one_clear_error(text):
    try:
        gate = parse_gate(text)
    except MemauditError as e:
        assert "\n" not in str(e)
    else:
        assert parse_gate(str(gate)) == gate


@pytest.mark.parametrize(
    "text",
    ["", ">0", "extraction.exact_rate", "extraction.exact_rate>", "extraction.exact_rate 0", "a b>0", "x[1]][2]>0"],
)
def test_malformed_expressions_say_what_is_expected(text):
    with pytest.raises(MemauditError, match="expected METRIC"):
        parse_gate(text)


def test_unknown_metric_suggests_the_closest_names():
    with pytest.raises(MemauditError, match=r"did you mean extraction\.exact_rate\b"):
        parse_gate("extraction.exact_rat>0")
    with pytest.raises(MemauditError, match="memorization.gap_closed"):
        parse_gate("memorisation.gap_closed<0.5")
    assert parse_gate("extraction.token_match@P8 >= 0.9").metric == "extraction.token_match@P8"  # derived sweep names


@given(st.sampled_from(sorted(OPS)), THRESHOLDS, THRESHOLDS)
def test_each_comparison_trips_exactly_when_it_holds(op, value, threshold):
    (verdict,) = evaluate_gates(results(value), [Gate("extraction.exact_rate", op, threshold)])
    holds = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[op](value, threshold)
    assert verdict.passed is (not holds) and verdict.value == value


@pytest.mark.parametrize(("op", "trips_at_equal"), [("<", False), ("<=", True), (">", False), (">=", True)])
def test_boundaries(op, trips_at_equal):
    (verdict,) = evaluate_gates(results(0.5), [f"extraction.exact_rate{op}0.5"])
    assert verdict.passed is not trips_at_equal


def test_repeat_level_selects_by_repeats():
    doc = results(0.1, {"0": 0.0, "8": 0.25, "128": 0.75})
    high, low, headline = evaluate_gates(
        doc, ["extraction.exact_rate[128]>0.5", "extraction.exact_rate[8]>0.5", "extraction.exact_rate>0.5"]
    )
    assert (high.value, high.passed) == (0.75, False)
    assert (low.value, low.passed) == (0.25, True)
    assert (headline.value, headline.passed) == (0.1, True)


def test_what_was_not_measured_fails_with_the_reason():
    doc = results(0.1, {"8": 0.2})
    level, other, relative = evaluate_gates(
        doc, ["extraction.exact_rate[64]>0.5", "privacy.exposure>10", "memorization.gap_closed<0.5"]
    )
    assert not level.passed and level.value is None and "no repeat level 64 (levels: 8)" in level.message
    assert not other.passed and "not measured" in other.message
    assert not relative.passed and "reference" in relative.message
    nan = results(float("nan"))
    assert not evaluate_gates(nan, ["extraction.exact_rate>0"])[0].passed


def test_comparative_documents_are_gated_per_model():
    doc = {
        "reference": "std",
        "runs": [
            {**results(0.5), "label": "std"},
            {**results(0.0), "label": "sink"},
        ],
    }
    doc["runs"][0]["metrics"]["memorization.gap_closed"] = {"value": 0.0, "n": 1}
    doc["runs"][1]["metrics"]["memorization.gap_closed"] = {"value": 0.9, "n": 1}
    verdicts = evaluate_gates(doc, ["extraction.exact_rate>0", "memorization.gap_closed<0.8"])
    assert [(v.model, v.passed) for v in verdicts] == [("std", False), ("sink", True), ("sink", True)]


def test_junit_has_one_testcase_per_gate_and_model(tmp_path):
    doc = {"runs": [{**results(0.5), "label": "a & <b>"}, {**results(0.0), "label": "c"}]}
    verdicts = evaluate_gates(doc, ["extraction.exact_rate>0", "extraction.exact_rate>=0.75", "privacy.exposure>1"])
    write_junit(verdicts, tmp_path / "gates.xml")
    root = ET.parse(tmp_path / "gates.xml").getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 3 * 2 and root.get("tests") == "6" and root.get("failures") == "3"
    failing = [(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None]
    assert failing == [
        ("a & <b>", "extraction.exact_rate>0"),
        ("a & <b>", "privacy.exposure>1"),
        ("c", "privacy.exposure>1"),
    ]
    assert "holds for a & <b> (0.5)" in cases[0].find("failure").get("message")


def test_job_summary_is_appended_on_github(tmp_path, monkeypatch):
    verdicts = evaluate_gates(results(0.5), ["extraction.exact_rate>0", "extraction.exact_rate<0"])
    md = gate_markdown(verdicts)
    assert "1 of 2 tripped" in md and "| ❌ | `extraction.exact_rate>0` | standard | 0.5 |" in md
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    publish_gates(verdicts, junit=tmp_path / "j.xml")
    assert summary.read_text().startswith("earlier step\n### memaudit gates") and (tmp_path / "j.xml").is_file()
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    publish_gates(verdicts)
    assert summary.read_text().count("### memaudit gates") == 1
