"""The comparative report: reference-relative metrics on known numbers, the Pareto front, labels,
comparability warnings, redaction (no audit text survives anywhere), escaping, self-contained
HTML, and one end-to-end report over real scans of the tiny models."""

from __future__ import annotations

import html
import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from markupsafe import escape

from memaudit.common.errors import MemauditError
from memaudit.probes.scan import ScanConfig, scan
from memaudit.report.compare import compare_runs, pareto_front
from memaudit.report.console import print_report, print_summary
from memaudit.report.document import SCHEMA_VERSION
from memaudit.report.gate import evaluate_gates, write_junit
from memaudit.report.render import markdown, write_report, write_run
from memaudit.report.verdict import guard_note, verdicts
from tests.helpers import DOC_ID, PAYLOAD, SECRET, fake_results, write_fake_run
from tests.helpers import write_run as write_results_json

OUTPUTS = ["report.html", "results.json", "sequences.csv", "summary.csv", "summary.md"]


@pytest.fixture
def three_runs(tmp_path) -> list[Path]:
    return [
        write_fake_run(tmp_path, "std", kind="standard", member=1.0, nonmember=3.0, valid=4.0, exact=0.5),
        write_fake_run(tmp_path, "sink-off", kind="memsink", sink_mode="off", member=2.5, valid=4.2, exact=0.0),
        write_fake_run(
            tmp_path, "oracle", kind="no-repeats", member=3.1, nonmember=3.1, valid=4.5, exact=0.0, leak=False
        ),
    ]


def test_comparative_report_files(three_runs, tmp_path):
    doc = compare_runs(three_runs)
    out = write_report(doc, tmp_path / "report")
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    saved = json.loads((out / "results.json").read_text())
    assert saved["schema_version"] == SCHEMA_VERSION and saved["document"] == "memaudit.report"
    assert [r["label"] for r in saved["runs"]] == ["standard", "memsink (sinks off)", "no-repeats"]
    assert saved["reference"] == "standard"
    summary = pd.read_csv(out / "summary.csv")
    for col in ("model", "metric", "repeats", "value", "n", "ci95_low", "ci95_high", "higher_is_better"):
        assert col in summary.columns
    assert {"reference_value", "delta_vs_reference", "comparable"} <= set(summary.columns)
    row = summary[(summary.model == "memsink (sinks off)") & (summary.metric == "capability.valid_loss")]
    assert row.delta_vs_reference.item() == pytest.approx(0.2)
    sequences = pd.read_csv(out / "sequences.csv")
    assert len(sequences) == 3 * 9 and sequences.columns[0] == "model"
    page = (out / "report.html").read_text()
    sections = ["Verdict", "Memorization vs capability", "Headline numbers", "Riskiest records", "Metrics"]
    sections += ["By repeat level"]
    sections += ["Membership inference", "Sequences", "Models"]
    positions = [page.index(f"<h2>{section}</h2>") for section in sections]
    assert positions == sorted(positions)  # the answer first, provenance last
    assert page.count("<svg") >= 3 and 'id="sequences"' in page
    assert "| memorization.gap_closed | →1 |" in (out / "summary.md").read_text()


def test_reference_relative_metrics_on_known_numbers(three_runs):
    doc = compare_runs(three_runs)
    sink = doc["runs"][1]["metrics"]
    # gap_closed = (2.5 - 1.0) / (3.0 - 1.0); forgetting = 2.5 - 1.0; degradation = 4.2 - 4.0
    assert sink["memorization.gap_closed"]["value"] == pytest.approx(0.75)
    assert sink["memorization.forgetting"]["value"] == pytest.approx(1.5)
    assert sink["capability.degradation"]["value"] == pytest.approx(0.2)
    assert sink["memorization.gap_closed"]["reference"] == "standard"
    # level by level, against the reference's level: at x64 member loss 2.0 vs 0.5: (2.0 - 0.5) / (3.0 - 0.5)
    assert sink["memorization.gap_closed"]["by_repeats"]["64"]["value"] == pytest.approx(1.5 / 2.5)
    lo, hi = sink["memorization.forgetting"]["ci95"]
    assert lo == pytest.approx(1.4) and hi == pytest.approx(1.6)
    ref = doc["runs"][0]["metrics"]
    assert ref["memorization.gap_closed"]["value"] == 0 and ref["capability.degradation"]["value"] == 0
    oracle = doc["runs"][2]["metrics"]
    assert oracle["memorization.gap_closed"]["value"] == pytest.approx((3.1 - 1.0) / 2.0)


def test_explicit_reference_and_no_reference(three_runs, tmp_path):
    doc = compare_runs(three_runs[1:], reference=three_runs[2])
    assert doc["reference"] == "no-repeats" and len(doc["runs"]) == 2
    assert doc["runs"][0]["metrics"]["memorization.forgetting"]["value"] == pytest.approx(2.5 - 3.1)
    added = compare_runs(three_runs[1:], reference=three_runs[0])  # not among the runs: added first
    assert [r["label"] for r in added["runs"]][0] == "standard" and added["reference"] == "standard"
    second = write_fake_run(tmp_path, "std2", kind="standard", path="/models/other")
    doc = compare_runs([three_runs[0], second])
    assert doc["reference"] is None and any("no reference" in w for w in doc["warnings"])
    assert "memorization.gap_closed" not in doc["runs"][0]["metrics"]


def test_labels_are_unique_and_readable(tmp_path):
    a = write_fake_run(tmp_path, "a", kind="standard", path="/m/alpha")
    b = write_fake_run(tmp_path, "b", kind="standard", path="/m/beta")
    own = write_fake_run(tmp_path, "own", kind="memsink", sink_mode="own")
    ext = write_fake_run(tmp_path, "ext", kind="external", path="EleutherAI/pythia-70m")
    doc = compare_runs([a, b, own, ext, a])
    assert [r["label"] for r in doc["runs"]] == [
        "standard alpha [a] #1",
        "standard beta",
        "memsink (sinks own)",
        "pythia-70m",
        "standard alpha [a] #2",
    ]


def test_pareto_front_on_a_hand_made_example():
    # x: lower is better (valid loss); y: higher is better (member loss: less memorized)
    points = {"a": (1.0, 1.0), "b": (2.0, 2.0), "c": (1.5, 0.5), "d": (1.0, 1.0), "e": (3.0, 2.0), "f": (0.5, 0.2)}
    assert pareto_front(points, (False, True)) == ["a", "b", "d", "f"]  # c loses to a, e to b; a and d tie
    # both lower-is-better (exact rate on y): f is best on both; without it, c trades y for x
    assert pareto_front(points, (False, False)) == ["f"]
    assert pareto_front({k: p for k, p in points.items() if k != "f"}, (False, False)) == ["a", "c", "d"]
    assert pareto_front({"only": (1.0, 1.0)}, (False, True)) == ["only"]


def test_pareto_front_in_the_document(three_runs):
    doc = compare_runs(three_runs)
    fronts = doc["pareto"]["fronts"]
    # valid: 4.0, 4.2 (lower better); member loss 1.0, 2.5 (higher better): they trade off. The
    # no-repeats oracle (4.5, 3.1) is the target, not a method: drawn, but left off the front.
    assert fronts["memorization.member_loss"] == ["standard", "memsink (sinks off)"]
    assert fronts["extraction.exact_rate"] == ["standard", "memsink (sinks off)"]
    assert doc["pareto"]["excluded_kinds"] == ["no-repeats"]
    page = write_report(doc, three_runs[0].parent / "r") / "report.html"
    assert "On the Pareto front of valid loss vs exact @top: standard, memsink (sinks off)." in page.read_text()


def test_verdicts_name_the_leaking_models_and_why(three_runs, tmp_path, capsys):
    quiet = write_fake_run(tmp_path, "quiet", kind="unlearned", member=3.0, valid=4.3, exact=0.0, leak=False)
    doc = compare_runs([*three_runs, quiet])
    for run in doc["runs"]:  # a membership attack at chance for the two models that do not extract
        if run["label"] in ("no-repeats", "unlearned"):
            run["metrics"]["privacy.mia.loss.auc"] |= {"value": 0.52, "ci95": [0.4, 0.64]}
        # with no-repeats as the oracle, membership is judged against its AUC (0.52) instead of chance
        if vs_oracle := run["metrics"].get("privacy.mia.loss.auc_vs_oracle"):
            v = run["metrics"]["privacy.mia.loss.auc"]["value"] - 0.52
            vs_oracle |= {"value": v, "ci95": [v - 0.12, v + 0.12]}
    found = {v.label: v for v in verdicts(doc)}
    against_oracle = "privacy.mia.loss.auc_vs_oracle"
    assert [e.metric.name for e in found["standard"].evidence] == ["extraction.exact_rate", against_oracle]
    assert [e.metric.name for e in found["memsink (sinks off)"].evidence] == [against_oracle]
    assert not found["no-repeats"].leaks and not found["no-repeats"].candidate
    assert not found["unlearned"].leaks and found["memsink (sinks off)"].fronts
    md = markdown(doc)
    assert md.index("**standard** leaks: `extraction.exact_rate 0.500") < md.index("| model | member loss ↑")
    assert "- **no-repeats**: no leak found (the oracle" in md
    page = write_report(doc, tmp_path / "r").joinpath("report.html").read_text()
    verdict = page[page.index('id="verdict"') : page.index("</ul>", page.index('id="verdict"'))]
    assert verdict.count('class="leaks"') == 2 and verdict.count('class="clean"') == 2
    print_report(doc)
    assert "standard !" in capsys.readouterr().out


def test_a_run_its_guard_stopped_says_so_in_every_view(three_runs, tmp_path, capsys):
    """An unlearning run stopped by --max-degradation at its first evaluation keeps its input: the report must
    say why that model scores exactly like the standard one."""
    stopped = fake_results(kind="unlearned", member=1.0, nonmember=3.0, valid=4.0, exact=0.5)
    reason = "valid loss 9.292 at step 10 is more than max_degradation 0.5 above the starting 4.143"
    stopped["model"]["trained"] = {"method": "ga", "steps": 30, "steps_done": 0, "stopped_early": True,
                                   "stop_reason": reason, "stopped_at_step": 10}  # fmt: skip
    doc = compare_runs([*three_runs, write_results_json(tmp_path, "ga", stopped)])
    notes = {v.label: v.note for v in verdicts(doc)}
    assert notes["unlearned"] == (
        f"unlearning was stopped by the max-degradation guard ({reason}); this model is the input model unchanged"
    )
    assert [label for label, note in notes.items() if note] == ["unlearned"]
    later = {"model": {"trained": stopped["model"]["trained"] | {"steps_done": 20, "steps": 60}}}
    assert guard_note(later).endswith("this model is the state after 20 of 60 steps")
    assert guard_note(later | {"attack": {"name": "quant:int4"}}) == ""  # the record is of the model before the attack
    assert f"({notes['unlearned']})" in markdown(doc)
    page = write_report(doc, tmp_path / "r").joinpath("report.html").read_text()
    assert f'<span class="note">{escape(notes["unlearned"])}</span>' in page
    print_report(doc)
    assert "note: unlearned: unlearning was stopped by the max-degradation guard" in " ".join(
        capsys.readouterr().out.split()
    )
    print_summary(stopped)  # `memaudit scan model`'s terminal view
    assert "note: unlearning was stopped by the max-degradation guard" in " ".join(capsys.readouterr().out.split())


def test_chart_labels_never_overlap():
    """Crowded and identical points (a removed-sinks model scores exactly like sinks off): every
    label gets a box of its own, clear of every point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from memaudit.report.plots import place_labels

    points = [("memsink (sinks off)", 4.1, 3.5), ("memsink-removed", 4.1, 3.5), ("unlearned npo", 4.101, 3.49)]
    points += [("standard", 4.25, 2.2), ("memsink (sinks own)", 4.26, 2.1), ("no-repeats", 4.0, 4.0)]
    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot([p[1] for p in points], [p[2] for p in points], "o")
    ax.margins(0.2)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    place_labels(ax, renderer, points)
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == len(points)
    for i, a in enumerate(boxes):
        assert all(not a.overlaps(b) for b in boxes[i + 1 :]), [t.get_text() for t in ax.texts]
        for _, x, y in points:
            assert not a.contains(*ax.transData.transform((x, y)))


def _forms(text: str) -> set[str]:
    """How a text could appear in an output: raw, HTML-escaped (two ways), JSON-escaped, CSV-quoted."""
    return {
        text,
        str(escape(text)),
        html.escape(text),
        json.dumps(text, ensure_ascii=False)[1:-1],
        text.replace('"', '""'),
    }


def test_redaction_leaves_no_audit_text_anywhere(three_runs, tmp_path):
    doc = compare_runs(three_runs, redact=True)
    out = write_report(doc, tmp_path / "redacted")
    texts = {SECRET, PAYLOAD, str(DOC_ID), str(DOC_ID + 99)}
    for run_dir in three_runs:
        for row in json.loads((run_dir / "results.json").read_text())["sequences"]:
            texts |= {v for k, v in row.items() if isinstance(v, str) and k != "kind"}
    for path in out.iterdir():
        content = path.read_text()
        for text in texts:
            for form in _forms(text):
                assert form not in content, (path.name, text)
    rows = doc["runs"][0]["sequences"]
    assert all(re.fullmatch(r"#[0-9a-f]{10}", r["prefix"]) for r in rows if "prefix" in r)
    assert rows[0]["emitted"] == rows[0]["suffix"]  # an exact reproduction stays visible as equal hashes
    assert re.fullmatch(r"#[0-9a-f]{10}", rows[-1]["secret"]) and isinstance(rows[-1]["doc_id"], str)
    assert doc["runs"][0]["sequences"][1]["doc_id"] == doc["runs"][1]["sequences"][1]["doc_id"]  # still joins
    assert "redacted" in (out / "report.html").read_text() and doc["redacted"] is True


def test_mismatched_audit_sets_warn_and_are_marked(three_runs, tmp_path, capsys):
    other = write_fake_run(tmp_path, "other", kind="unlearned", audit="audit-b", member=2.0, valid=4.1)
    doc = compare_runs([*three_runs, other])
    (warning,) = doc["warnings"]
    assert "unlearned" in warning and "audit set" in warning and "memorization.*" in warning
    excluded = doc["comparability"]["not_comparable"]["unlearned"]
    assert "extraction.exact_rate" in excluded and "memorization.gap_closed" in excluded
    assert "capability.valid_loss" not in excluded  # same data manifest: capability still compares
    assert "unlearned" not in doc["pareto"]["fronts"]["memorization.member_loss"]
    md = markdown(doc)
    assert "2.000 (1.900 – 2.100) †" in md and "not comparable" in md
    assert "not comparable" in write_report(doc, tmp_path / "r").joinpath("report.html").read_text()
    print_report(doc)
    assert "warning:" in capsys.readouterr().err


def test_html_escapes_text_and_is_self_contained(three_runs, tmp_path):
    page = write_report(compare_runs(three_runs), tmp_path / "r").joinpath("report.html").read_text()
    assert PAYLOAD not in page and str(escape(PAYLOAD)) in page
    assert len(re.findall(r"<script\b", page)) == 1  # the sorter, nothing else
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page)
    assert "<link" not in page and "@import" not in page and not re.search(r"url\((?!#)", page)
    csp = re.search(r'Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in csp and "script-src &#39;sha256-" in csp


def test_single_scan_views_use_the_same_renderer(tmp_path):
    results = fake_results()
    out = write_run(results, tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    assert json.loads((out / "results.json").read_text()) == results  # the scan's own document, unchanged
    assert "| extraction.exact_rate | ↓ |" in (out / "summary.md").read_text()
    page = (out / "report.html").read_text()
    assert "memaudit scan: /models/standard (standard)" in page and "Memorization vs capability" not in page


def test_run_dir_without_results_is_bad_input(three_runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MemauditError, match="no results.json"):
        compare_runs([three_runs[0], tmp_path / "empty"])
    with pytest.raises(MemauditError, match="at least one run"):
        compare_runs([])
    report_dir = write_report(compare_runs(three_runs), tmp_path / "rep")
    with pytest.raises(MemauditError, match="comparative report"):
        compare_runs([report_dir])


def test_junit_of_a_comparative_report(three_runs, tmp_path):
    doc = compare_runs(three_runs)
    verdicts = evaluate_gates(doc, ["extraction.exact_rate>0", "memorization.gap_closed<0.8"])
    write_junit(verdicts, tmp_path / "gates.xml")
    root = ET.parse(tmp_path / "gates.xml").getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 3 + 2  # exact_rate x 3 models; gap_closed x 2 (not the reference itself)
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert failed == {("standard", "extraction.exact_rate>0"), ("memsink (sinks off)", "memorization.gap_closed<0.8")}
    assert root.get("failures") == "2"


def test_report_over_real_scans(tiny_models, tiny_data, tmp_path):
    cfg = ScanConfig(bootstrap=50, exposure_candidates=50)
    runs = [
        write_run(scan(path, data_dir=tiny_data, config=cfg), tmp_path / name) for name, path in tiny_models.items()
    ]
    doc = compare_runs(runs)
    std, oracle = (r["metrics"] for r in doc["runs"])
    assert doc["reference"] == "standard" and not doc["warnings"]
    assert oracle["memorization.gap_closed"]["value"] > 0.5 and oracle["memorization.forgetting"]["value"] > 0
    assert math.isfinite(oracle["capability.degradation"]["value"])
    out = write_report(doc, tmp_path / "report")
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 3 and "loss (AUC" in page
    assert len(pd.read_csv(out / "sequences.csv")) == sum(len(r["sequences"]) for r in doc["runs"])


def test_a_model_dir_name_that_says_its_kind_is_not_repeated():
    from memaudit.report.document import model_label

    def named(kind: str, path: str) -> str:
        return model_label({"model": {"kind": kind, "path": path}}, named=True)

    assert named("memsink-removed", "/m/memsink-routed-removed") == "memsink-routed-removed"
    assert named("unlearned", "/m/unlearn-npo") == "unlearn-npo"
    assert named("memsink-removed", "/m/pruned") == "memsink-removed pruned"
