"""A removal judged against retraining (report/oracle.py): the paired oracle-relative metrics (a run
against itself differs by exactly 0), the verdict rules on chosen intervals, the default oracle and
`--oracle`, gates and leak rules on `_vs_oracle` metrics, the note a report without an oracle
carries, diagnostic runs kept off the Pareto front, labels that do not repeat the kind, and the
same on real scans of the tiny models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from memaudit.app.cli import main
from memaudit.common.errors import MemauditError
from memaudit.probes.registry import get_metric, oracle_relative
from memaudit.probes.scan import scan
from memaudit.probes.stats import bootstrap_ci, mean
from memaudit.report.compare import compare_runs, redact_texts
from memaudit.report.console import print_report
from memaudit.report.gate import evaluate_gates, parse_gate
from memaudit.report.oracle import (
    DIFFERS,
    INCONCLUSIVE,
    MATCHES,
    RULES,
    compare_to_oracle,
    family_verdict,
    judge,
    records_needed,
)
from memaudit.report.render import markdown, write_report
from memaudit.report.verdict import verdicts
from tests.helpers import LEAN_SCAN, assert_one_line_error, fake_results, results, write_fake_run, write_run

CAPABILITY = "capability.valid_loss_vs_oracle"  # the one oracle-relative metric that is not paired
CHANCE = "membership leak verdicts are against an AUC of 0.5 (chance)"
AUC = "privacy.mia.loss.auc_vs_oracle"


@pytest.fixture
def synthetic(tmp_path) -> dict[str, object]:
    """Synthetic scans (every metric, no model) of a standard model, the oracle, a MemSink model
    with its sinks off and two unlearned ones, all on one audit set."""
    oracle = results("no-repeats", 0.0, seed=1)
    scans = {
        "standard": results("standard", 1.0),
        "oracle": oracle,
        "memsink-off": results("memsink", 0.3, seed=2, sink_mode="off"),
        "unlearn-ga": results("unlearned", 0.4, seed=4, path="/models/unlearn-ga"),
        "unlearn-npo": results("unlearned", 0.0, seed=1, path="/models/unlearn-npo"),
    }
    return {name: write_run(tmp_path, name, doc) for name, doc in scans.items()}


# The paired metrics ---------------------------------------------------------------------------


def test_a_run_against_itself_differs_by_exactly_zero():
    run = results("memsink", 0.3, seed=2, sink_mode="off")
    found = compare_to_oracle(run, run)
    paired = {m.name for m in oracle_relative()} - {CAPABILITY}
    measured = set(found["metrics"]) - {CAPABILITY}
    assert measured and measured <= paired
    for name in measured:
        entry = found["metrics"][name]
        assert entry["value"] == 0.0 and entry["ci95"] == [0.0, 0.0], (name, entry)
    assert found["metrics"][CAPABILITY]["value"] == 0.0  # unpaired: its interval is the two runs' combined
    assert found["verdicts"]["extraction"]["verdict"] == found["verdicts"]["membership"]["verdict"] == MATCHES
    assert found["verdicts"]["membership"]["measured"] == len(RULES["membership"].metrics)  # every attack


def test_the_paired_bootstrap_draws_the_same_records_for_both_models():
    """A model that is another plus a constant, record by record: the records' own spread cancels."""
    rng = np.random.default_rng(0)
    oracle = rng.normal(0, 1, 50)
    model = oracle + 0.1
    assert bootstrap_ci([model], mean, 200, seed=0, minus=[oracle]) == pytest.approx([0.1, 0.1])
    low, high = bootstrap_ci([model], mean, 200, seed=0)
    assert high - low > 0.3  # one model alone: the records' spread


def test_records_pair_by_doc_id_whatever_their_order(synthetic):
    run, oracle = (json.loads((synthetic[n] / "results.json").read_text()) for n in ("memsink-off", "oracle"))
    shuffled = {**oracle, "sequences": oracle["sequences"][::-1]}
    assert compare_to_oracle(run, shuffled)["metrics"][AUC] == compare_to_oracle(run, oracle)["metrics"][AUC]


def test_runs_that_cannot_be_paired_are_refused(synthetic, tmp_path):
    other = results("unlearned", 0.4, audit="audit-b")
    with pytest.raises(MemauditError, match="another audit set than the oracle"):
        compare_to_oracle(other, synthetic["oracle"])
    redacted = redact_texts(results("unlearned", 0.4))  # its own key: no doc id in common
    with pytest.raises(MemauditError, match="no audit record in common"):
        compare_to_oracle(redacted, synthetic["oracle"])
    with pytest.raises(MemauditError, match=r"^oracle run .*nowhere: no results.json"):
        compare_to_oracle(synthetic["standard"], tmp_path / "nowhere")


# The verdicts ---------------------------------------------------------------------------------


def _entry(value: float, low: float, high: float, n: int = 100) -> dict:
    return {"value": value, "n": n, "ci95": [low, high]}


@pytest.mark.parametrize(
    "entry, one_sided, verdict",
    [
        (_entry(0.01, -0.03, 0.04), False, MATCHES),
        (_entry(0.20, 0.10, 0.30), False, DIFFERS),
        (_entry(-0.20, -0.30, -0.10), False, DIFFERS),  # below the oracle by as much: over-unlearning
        (_entry(0.03, -0.02, 0.08), False, INCONCLUSIVE),
        (_entry(-0.20, -0.30, -0.10), True, MATCHES),  # capability: better than the oracle is no failure
        (_entry(0.20, 0.10, 0.30), True, DIFFERS),
        (_entry(0.03, -0.02, 0.08), True, INCONCLUSIVE),
    ],
)
def test_verdicts_against_a_margin(entry, one_sided, verdict):
    judged = judge(entry, margin=0.05, one_sided=one_sided)
    assert judged["verdict"] == verdict
    assert ("records_needed" in judged) == (verdict == INCONCLUSIVE)


def test_records_needed_scale_the_interval_as_one_over_sqrt_n():
    # half-width 0.1 must shrink to 0.05 (the room between the estimate 0 and the margin): 4x the records
    assert records_needed(0.0, [-0.1, 0.1], 100, 0.05, one_sided=False) == 400
    assert records_needed(0.1, [0.0, 0.2], 100, 0.05, one_sided=False) == 400  # to show it differs
    assert records_needed(-0.1, [-0.2, 0.0], 100, 0.05, one_sided=True) == 100 + 1  # below: room 0.15
    assert records_needed(0.05, [0.0, 0.1], 100, 0.05, one_sided=False) is None  # on the margin: never decided
    assert judge(_entry(0.0, -0.1, 0.1), 0.05)["records_needed"] == 400
    no_interval = judge({"value": 0.0, "n": 1}, 0.05)
    assert no_interval["verdict"] == INCONCLUSIVE and no_interval["records_needed"] is None


def test_membership_takes_the_attack_that_works():
    rule = RULES["membership"]
    loss, zlib = (rule.metrics[0], rule.metrics[1])
    both_match = {loss: _entry(0.0, -0.02, 0.02), zlib: _entry(0.01, -0.03, 0.04)}
    assert family_verdict(rule, both_match)["verdict"] == MATCHES
    assert family_verdict(rule, both_match)["metric"] == zlib  # the match that reaches farthest
    one_open = both_match | {zlib: _entry(0.03, -0.02, 0.08)}
    assert (
        family_verdict(rule, one_open)["verdict"] == INCONCLUSIVE and family_verdict(rule, one_open)["metric"] == zlib
    )
    one_differs = one_open | {loss: _entry(0.2, 0.1, 0.3)}
    assert (
        family_verdict(rule, one_differs)["verdict"] == DIFFERS and family_verdict(rule, one_differs)["metric"] == loss
    )
    assert family_verdict(rule, {}) is None


# The report -----------------------------------------------------------------------------------


def test_the_one_no_repeats_run_is_the_default_oracle(synthetic, tmp_path):
    doc = compare_runs(list(synthetic.values()))
    assert doc["oracle"]["label"] == "no-repeats" and doc["oracle"]["chosen"] == "the one run of kind no-repeats"
    by_label = {run["label"]: run for run in doc["runs"]}
    assert AUC not in by_label["no-repeats"]["metrics"] and AUC in by_label["standard"]["metrics"]
    judged = {label for label, run in by_label.items() if "retraining" in run}
    assert judged == {"memsink (sinks off)", "unlearn-ga", "unlearn-npo"}  # not the standard model, not the oracle
    assert set(by_label["unlearn-ga"]["retraining"]["verdicts"]) == set(RULES)
    second = write_run(tmp_path, "oracle-2", results("no-repeats", 0.0, seed=3, path="/models/oracle-2"))
    several = compare_runs([*synthetic.values(), second])
    assert several["oracle"] is None
    assert any("several runs of kind no-repeats" in w and "--oracle" in w for w in several["warnings"])
    chosen = compare_runs([*synthetic.values(), second], oracle=second)
    assert chosen["oracle"]["label"] == "no-repeats oracle-2" and chosen["oracle"]["chosen"] == "--oracle"
    assert AUC in next(r for r in chosen["runs"] if r["label"] == "no-repeats")["metrics"]  # now measured against it


def test_a_bad_oracle_is_one_line_and_exit_2(synthetic, tmp_path):
    args = ["report", *map(str, synthetic.values()), "--out", str(tmp_path / "r"), "--oracle", str(tmp_path / "nope")]
    assert_one_line_error(CliRunner().invoke(main, args), "oracle run", "nope: no results.json")


def test_gates_on_oracle_relative_metrics(synthetic, tmp_path):
    for m in oracle_relative():
        assert parse_gate(f"{m.name}>0.05").metric == m.name
    doc = compare_runs(list(synthetic.values()))
    found = {r.model: r for r in evaluate_gates(doc, [f"{AUC}>0.05"])}
    assert "no-repeats" not in found  # the oracle against itself: 0 by definition
    assert not found["standard"].passed and found["standard"].value == pytest.approx(
        doc["runs"][0]["metrics"][AUC]["value"]
    )
    assert found["unlearn-npo"].passed  # trained like the oracle, on the same records
    out = CliRunner().invoke(
        main, ["report", *map(str, synthetic.values()), "--out", str(tmp_path / "r"), "--fail-on", f"{AUC}>0.05"]
    )
    assert out.exit_code == 1 and f"gate tripped: {AUC}>0.05 holds for standard" in out.stderr
    without = compare_runs([synthetic["standard"], synthetic["unlearn-ga"]])
    (missing, _) = evaluate_gates(without, [f"{AUC}>0.05"])
    assert not missing.passed and "needs an oracle run" in missing.note


def test_with_an_oracle_membership_leaks_are_judged_against_it(synthetic):
    """A removal as far from chance as the oracle is does not leak by membership; one far from the
    oracle does, by the oracle-relative rule (on either side)."""
    doc = compare_runs(list(synthetic.values()))
    found = {v.label: v for v in verdicts(doc)}
    assert [e.metric.name for e in found["standard"].evidence] == ["extraction.exact_rate", AUC]
    npo = next(r for r in doc["runs"] if r["label"] == "unlearn-npo")["metrics"]
    npo["privacy.mia.loss.auc"] |= {"value": 0.7, "ci95": [0.62, 0.78]}  # far from chance ...
    npo[AUC] |= {"value": 0.01, "ci95": [-0.03, 0.05]}  # ... but like retraining
    assert not next(v for v in verdicts(doc) if v.label == "unlearn-npo").leaks
    npo[AUC] |= {"value": -0.2, "ci95": [-0.3, -0.1]}  # over-unlearned: below the oracle
    (evidence,) = next(v for v in verdicts(doc) if v.label == "unlearn-npo").evidence
    assert evidence.metric.name == AUC and "below the oracle" in str(evidence)
    assert f"`{AUC}` is more than 0.05 away from 0" in markdown(doc)


def test_without_an_oracle_every_view_says_membership_is_against_chance(synthetic, tmp_path, capsys):
    doc = compare_runs([synthetic["standard"], synthetic["memsink-off"], synthetic["unlearn-ga"]])
    assert doc["oracle"] is None and not any("retraining" in r for r in doc["runs"])
    out = write_report(doc, tmp_path / "r")
    for view in ("summary.md", "report.html"):
        text = " ".join((out / view).read_text().split())
        assert CHANCE in text and "a removal that matches retraining may still be flagged" in text, view
    print_report(doc)
    assert CHANCE in " ".join(capsys.readouterr().out.split())
    with_oracle = write_report(compare_runs(list(synthetic.values())), tmp_path / "o")
    assert CHANCE not in (with_oracle / "summary.md").read_text()


def test_every_view_shows_the_verdicts(synthetic, tmp_path, capsys):
    doc = compare_runs(list(synthetic.values()))
    out = write_report(doc, tmp_path / "r")
    saved = json.loads((out / "results.json").read_text())  # the source of the views
    verdict = saved["runs"][-1]["retraining"]["verdicts"]["membership"]
    assert verdict["verdict"] in (MATCHES, DIFFERS, INCONCLUSIVE) and verdict["margin"] == 0.05
    assert saved["oracle"]["rules"]["capability"]["one_sided"] is True
    md = (out / "summary.md").read_text()
    assert "**Against retraining.**" in md and "| model | extraction | membership | capability |" in md
    assert "1/sqrt(n)" in md
    page = (out / "report.html").read_text()
    assert 'id="retraining"' in page and page.index("Against retraining") < page.index("Headline numbers")
    summary = pd.read_csv(out / "summary.csv")
    decided = summary[summary.retraining_verdict.notna()]
    assert set(decided.retraining_family) == set(RULES) and set(decided.model) == {
        "memsink (sinks off)",
        "unlearn-ga",
        "unlearn-npo",
    }
    assert decided.metric.str.endswith("_vs_oracle").all()
    print_report(doc)
    printed = " ".join(capsys.readouterr().out.split())
    assert "against retraining" in printed and "1/sqrt(n)" in printed


def test_a_run_on_another_audit_set_is_not_measured_against_the_oracle(synthetic, tmp_path):
    other = write_fake_run(tmp_path, "other", kind="unlearned", audit="audit-b", path="/models/unlearn-x")
    doc = compare_runs([*synthetic.values(), other])
    run = next(r for r in doc["runs"] if r["label"] == "unlearn-x")
    assert "unlearn-x was scanned with another audit set" in run["retraining"]["problem"]
    assert not any(name.endswith("_vs_oracle") for name in run["metrics"])
    assert "not measured: unlearn-x was scanned with another audit set" in markdown(doc)
    (gate,) = [g for g in evaluate_gates(doc, [f"{AUC}>0.05"]) if g.model == "unlearn-x"]
    assert not gate.passed and "another audit set" in gate.note


def test_a_diagnostic_run_is_no_removal(tmp_path):
    """A MemSink model with its own sinks on (memorization switched on), here made to look best on
    both axes: drawn, but never on a front, and never judged against retraining."""
    runs = [
        write_fake_run(tmp_path, "std", kind="standard", member=1.0, valid=4.0, exact=0.5),
        write_fake_run(tmp_path, "own", kind="memsink", sink_mode="own", member=3.5, valid=3.5, exact=0.0),
        write_fake_run(tmp_path, "off", kind="memsink", sink_mode="off", member=2.5, valid=4.2, exact=0.0),
        write_fake_run(tmp_path, "oracle", kind="no-repeats", member=3.1, valid=4.5, exact=0.0, leak=False),
    ]
    doc = compare_runs(runs)
    own = "memsink (sinks own)"
    assert all(own not in front for front in doc["pareto"]["fronts"].values())
    assert "diagnostic" in doc["pareto"]["excluded"][own]
    assert "memsink (sinks off)" in doc["pareto"]["fronts"]["memorization.member_loss"]
    assert "retraining" not in next(r for r in doc["runs"] if r["label"] == own)
    (verdict,) = [v for v in verdicts(doc) if v.label == own]
    assert not verdict.candidate and not verdict.fronts and "memorization switched on" in verdict.excluded
    page = write_report(doc, tmp_path / "r").joinpath("report.html").read_text()
    assert "diagnostic mode: not a removal" in page  # the chart's legend


def test_labels_do_not_repeat_the_kind(tmp_path):
    docs = {
        "ga": fake_results(kind="unlearned", path="/models/unlearn-ga"),
        "npo": fake_results(kind="unlearned", path="/models/unlearn-npo"),
        "alpha": fake_results(kind="ablated", path="/m/alpha"),
        "beta": fake_results(kind="ablated", path="/m/ablate-beta"),
        "off-a": fake_results(kind="memsink", sink_mode="off", path="/m/memsink-a"),
        "off-b": fake_results(kind="memsink", sink_mode="off", path="/m/sinks-b"),
        "int4": fake_results(kind="unlearned", path="/models/unlearn-ga") | {"attack": {"name": "quant:int4"}},
    }
    doc = compare_runs([write_run(tmp_path, name, d) for name, d in docs.items()])
    assert [r["label"] for r in doc["runs"]] == [
        "unlearn-ga",
        "unlearn-npo",
        "ablated alpha",
        "ablate-beta",
        "memsink-a (sinks off)",
        "memsink sinks-b (sinks off)",
        "unlearned @quant:int4",
    ]


# Real scans of the tiny models -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs(tiny_models, tiny_memsink, tiny_data, tmp_path_factory) -> dict[str, object]:
    """The tiny standard, oracle and MemSink models scanned once: the MemSink model with its sinks
    off (a removal) and on (`own`, a diagnostic). LEAN_SCAN asks for no intervals: the comparison
    with the oracle draws its own."""
    root = tmp_path_factory.mktemp("oracle-runs")
    models = {**tiny_models, "memsink-off": tiny_memsink, "memsink-own": tiny_memsink}
    modes = {"memsink-off": "off", "memsink-own": "own"}
    return {
        name: write_run(root, name, scan(path, data_dir=tiny_data, config=LEAN_SCAN, sinks_mode=modes.get(name)))
        for name, path in models.items()
    }


@pytest.mark.usefixtures("one_thread")
def test_real_scans_against_their_oracle(tiny_runs):
    doc = compare_runs(list(tiny_runs.values()))
    assert doc["oracle"]["label"] == "no-repeats"
    runs = {r["label"]: r for r in doc["runs"]}
    standard = runs["standard"]["metrics"]
    assert standard[AUC]["value"] > 0.1 and standard[AUC]["ci95"][0] > 0  # it memorized; the oracle did not
    assert standard["extraction.exact_rate_vs_oracle"]["value"] > 0
    off = runs["memsink (sinks off)"]["retraining"]["verdicts"]
    assert set(off) == set(RULES) and {v["verdict"] for v in off.values()} <= {MATCHES, DIFFERS, INCONCLUSIVE}
    assert off["membership"]["measured"] >= 2 and off["membership"]["n"] == len(
        [r for r in runs["memsink (sinks off)"]["sequences"] if r["kind"] != "canary"]
    )
    own = "memsink (sinks own)"
    assert "retraining" not in runs[own] and all(own not in f for f in doc["pareto"]["fronts"].values())
    itself = compare_to_oracle(tiny_runs["standard"], tiny_runs["standard"])["metrics"]
    for name, entry in itself.items():
        if name != CAPABILITY:
            assert entry["value"] == 0.0 and entry["ci95"] == [0.0, 0.0], name
    assert get_metric(AUC).headline.leak.margin == RULES["membership"].margin
