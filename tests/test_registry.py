"""The metric registry as a contract: every registered metric is computed by a scan (on synthetic
rows, no model) with the registry's metadata, and documented in docs/metrics.md, which is the
registry's own Markdown; registration rejects what views could not read; the probe suite
validates itself without torch; `memaudit metrics` lists the registry."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from memaudit.common.errors import MemauditError
from memaudit.probes.config import FAMILIES, ScanConfig
from memaudit.probes.inputs import MetricInputs
from memaudit.probes.listing import metrics_markdown
from memaudit.probes.metrics import compute_metrics
from memaudit.probes.registry import (
    ORACLE,
    REGISTRY,
    SWEEP,
    Headline,
    Leak,
    Metric,
    compute_all,
    get_metric,
    headline_metrics,
    listed,
    oracle_relative,
    pareto_axes,
    register,
)
from tests.helpers import CONFIG, attack_record, results, scan_rows, valid_scores

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
LISTED = [m.name for m in listed()]


@pytest.fixture(scope="module")
def measured() -> dict:
    """Every metric a scan can report: a model scanned against a reference and the standard model,
    and the same model under each attack family (memaudit stress), measured against itself before;
    and what a report adds against the oracle (its rows paired with the oracle's)."""
    standard, oracle = results("standard", 1.0), results("no-repeats", 0.0)
    rows, valid = scan_rows(0.5, seed=3), valid_scores(0.5)
    out = compute_metrics(rows, valid, CONFIG, reference=oracle, standard=standard)
    others, other_rows = {ORACLE: oracle["metrics"]}, {ORACLE: oracle["sequences"]}
    paired = MetricInputs(rows, config=CONFIG, computed=dict(out), others=others, other_rows=other_rows)
    out |= compute_all(paired, oracle_relative())
    before = {"metrics": compute_metrics(scan_rows(0.3, seed=5), [], CONFIG, standard=standard)}
    for family in FAMILIES:
        attacked = compute_metrics(rows, valid, CONFIG, standard=standard, before=before, attack=attack_record(family))
        out |= {name: entry for name, entry in attacked.items() if name.startswith("robustness.")}
    order = list(REGISTRY)
    return dict(sorted(out.items(), key=lambda item: order.index(item[0])))


def _instances(name: str) -> list[Metric]:
    """The metrics a listed name stands for: itself, or a sweep template's members in CONFIG's scan."""
    return [m for m in SWEEP.expand(CONFIG) if m.documented_as == name] or [get_metric(name)]


@pytest.mark.parametrize("name", LISTED)
def test_every_metric_is_computed_with_its_metadata(name, measured):
    for m in _instances(name):
        entry = measured[m.name]
        assert (entry["higher_is_better"], entry["group"], entry.get("ideal")) == (m.higher_is_better, m.group, m.ideal)
        assert math.isfinite(entry["value"]) and entry["n"] > 0, entry
        if "ci95" in entry:
            assert entry["ci95"][0] <= entry["ci95"][1]
        json.dumps(entry, allow_nan=False)


@pytest.mark.parametrize("name", LISTED)
def test_every_metric_is_documented(name):
    assert f"| `{name}` | {get_metric(name.replace('<n>', '8')).arrow} |" in DOC.read_text(encoding="utf-8")


def test_the_registry_lists_what_scans_report(measured):
    assert set(measured) == {m.name for name in LISTED for m in _instances(name)}
    assert [n for n in measured if "@P" not in n] == [n for n in REGISTRY if "@P" not in n]  # in registry order


def test_docs_are_the_registry_markdown():
    """docs/metrics.md is generated: `python scripts/gen_metrics_doc.py` after changing a metric."""
    if os.environ.get("UPDATE_GOLDEN"):
        DOC.write_text(metrics_markdown(), encoding="utf-8")
    assert DOC.read_text(encoding="utf-8") == metrics_markdown(), "run: python scripts/gen_metrics_doc.py"


def test_views_read_their_roles_from_the_registry():
    assert pareto_axes() == ("capability.valid_loss", ("memorization.member_loss", "extraction.exact_rate"))
    heads = {m.name: m.headline for m in headline_metrics()}
    assert heads["extraction.exact_rate"].top_level and heads["extraction.exact_rate"].leak.safe == 0
    assert heads["privacy.mia.loss.auc"].leak.safe == 0.5
    assert get_metric("extraction.exact_rate@P8").headline is None  # the sweep inherits no role


@pytest.mark.parametrize(
    "changes, problem",
    [
        (dict(group="secrets"), "unknown group"),
        (dict(name="extraction.other"), "must start with its group"),
        (dict(name="memorization.member_loss"), "registered twice"),
        (dict(against="nobody"), "against must be one of"),
        (dict(pareto="speed"), "pareto must be one of"),
    ],
)
def test_registration_rejects_what_views_cannot_read(changes, problem):
    fields = dict(name="memorization.new", group="memorization", higher_is_better=True, meaning="m", compute=len)
    with pytest.raises(ValueError, match=problem):
        register(Metric(**(fields | changes)))
    assert "memorization.new" not in REGISTRY


@pytest.mark.parametrize(
    "hib, leak, entry, leaks",
    [
        (False, Leak(0.0), {"value": 0.05}, True),  # one member extracted is a leak
        (False, Leak(0.0), {"value": 0.0}, False),
        (None, Leak(0.5, 0.05, significant=True), {"value": 0.62, "ci95": [0.55, 0.7]}, True),
        (None, Leak(0.5, 0.05, significant=True), {"value": 0.38, "ci95": [0.3, 0.45]}, True),  # either side
        (None, Leak(0.5, 0.05, significant=True), {"value": 0.62, "ci95": [0.45, 0.8]}, False),  # chance
        (None, Leak(0.5, 0.05, significant=True), {"value": 0.53, "ci95": [0.51, 0.55]}, False),  # not far
        (True, Leak(1.0, 0.1), {"value": 0.85}, True),
        (False, Leak(0.0), {"value": float("nan")}, False),
    ],
)
def test_leak_rules(hib, leak, entry, leaks):
    assert leak.test(hib, entry) is leaks
    assert leak.describe(hib).startswith(("above", "below", "more than"))


def test_a_leak_needs_a_headline_rule():
    m = Metric("privacy.x", "privacy", False, "m", len, headline=Headline("x", leak=Leak(0.0)))
    assert m.leaks({"value": 1.0}) and not get_metric("extraction.token_match").leaks({"value": 1.0})


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(prefix_len=0), "prefix_len must be an integer from 1 to 1048576, got 0"),
        (dict(suffix_len=2.5), "suffix_len must be an integer from 1 to 1048576, got 2.5"),
        (dict(bootstrap=True), "bootstrap must be an integer from 0 to 1000000"),
        (dict(bootstrap=10**12), "bootstrap must be an integer from 0 to 1000000"),
        (dict(np_p=math.nan), r"np_p must be a finite number > 0 and <= 1"),
        (dict(mink_k=math.inf), r"mink_k must be a finite number > 0 and <= 1"),
        (dict(prefix_lens=(8, -1)), "prefix_lens must be an integer from 1"),
        (dict(prefix_lens=8), "prefix_lens must be a list"),
        (dict(seed=-3), "seed must be an integer from 0 to 4294967295"),
        (dict(privleak_attack="lira"), "unknown membership attack 'lira'; use one of"),
        (dict(mia_attacks=["loss", "lira"]), "unknown membership attack 'lira'"),
        (dict(name=""), "name must be a non-empty string"),
    ],
)
def test_scan_config_checks_its_own_fields(changes, message):
    with pytest.raises(MemauditError, match=message):
        ScanConfig(**changes)


def test_config_and_registry_import_without_torch():
    code = (
        "import sys, memaudit.probes.config, memaudit.probes.registry, memaudit.probes.listing;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_metrics_command_lists_filters_and_suggests():
    from memaudit.app.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["metrics", "--group", "privacy"], env={"COLUMNS": "160"})
    assert out.exit_code == 0 and "privacy.mia.loss.auc" in out.output and "member_loss" not in out.output
    md = runner.invoke(main, ["metrics", "--markdown"])
    assert md.exit_code == 0 and md.output == metrics_markdown()
    bad = runner.invoke(main, ["metrics", "--group", "privcy"])
    assert bad.exit_code == 2 and "did you mean privacy?" in bad.output
