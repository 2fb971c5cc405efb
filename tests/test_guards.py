"""Two guards on membership inference, on synthetic rows (no model): an AUC far below chance is
reported as a leak (over-unlearning), not as success; and a model-free bag-of-words classifier
(the blind baseline) that tells members from non-members makes every view warn that membership
scores may reflect a distribution shift between the two sets."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from rich.console import Console

from memaudit.probes.blind import blind_scores
from memaudit.probes.membership import auc
from memaudit.probes.metrics import compute_metrics
from memaudit.probes.registry import get_metric
from memaudit.report.console import print_summary
from memaudit.report.render import html, markdown
from memaudit.report.verdict import shift_warnings, verdicts
from tests.helpers import CONFIG, scan_rows, valid_scores

AUC, BLIND = "privacy.mia.loss.auc", "privacy.blind_baseline_auc"


def _results(rows: list[dict]) -> dict:
    return {
        "model": {"path": "/models/npo", "kind": "unlearned", "sink_mode": None},
        "data": {"audit_sha256": "audit-a"},
        "suite": dataclasses.asdict(CONFIG),
        "counts": {},
        "metrics": compute_metrics(rows, valid_scores(0.0), CONFIG),
        "sequences": rows,
    }


def _over_unlearned(by: float) -> list[dict]:
    """A model that fits its members `by` nats *worse* than comparable held-out text."""
    rows = scan_rows(0.0, seed=7)
    for r in rows:
        if r["member"] and r["kind"] != "canary":
            r["loss"] += by
            r["mia_loss"] = -r["loss"]
    return rows


def _printed(results: dict) -> str:
    console = Console(record=True, width=200)
    print_summary(results, console)
    return console.export_text()


def test_an_auc_far_below_chance_is_a_leak_not_a_success():
    results = _results(_over_unlearned(1.0))
    auc = results["metrics"][AUC]
    assert auc["value"] < 0.2 and auc["ci95"][1] < 0.45
    (verdict,) = verdicts(results)
    assert verdict.leaks and [e.metric.name for e in verdict.evidence] == [AUC]
    assert "over-unlearning" in verdict.evidence[0].low_side
    for view in (markdown(results), html(results), _printed(results)):
        assert "over-unlearning" in view
    assert "on either side" in get_metric(AUC).headline.leak.describe(None)


def test_chance_and_a_memorizing_model_read_as_before():
    chance = _results(scan_rows(0.0, seed=7))
    assert not any(e.metric.name == AUC for e in verdicts(chance)[0].evidence)
    memorizing = _results(scan_rows(1.0, seed=7))
    (evidence,) = [e for e in verdicts(memorizing)[0].evidence if e.metric.name == AUC]
    assert evidence.entry["value"] > 0.9 and evidence.low_side == "" and "over-unlearning" not in str(evidence)


def _texts(words: list[str], n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(words) for _ in range(30)) for _ in range(n)]


def test_blind_baseline_sees_a_shift_and_not_its_absence():
    rng = random.Random(0)
    common = [f"w{i}" for i in range(200)]
    same = _texts(common, 30, rng) + _texts(common, 30, rng)
    shifted = _texts(common + ["vault", "secret"] * 40, 30, rng) + _texts(common + ["ballroom"] * 80, 30, rng)
    members = [True] * 30 + [False] * 30

    def blind_auc(texts: list[str]) -> float:
        scores = blind_scores(texts, members, seed=0)
        assert scores == blind_scores(texts, members, seed=0)  # seeded
        return auc(np.array(scores[:30]), np.array(scores[30:]))  # the members come first

    assert blind_auc(shifted) > 0.9
    assert 0.3 < blind_auc(same) < 0.7
    assert blind_scores(same[:3], [True, False, False], seed=0) is None  # one member: nothing to cross-validate


@pytest.mark.parametrize("shift, warns", [(0.0, False), (0.6, True)])
def test_views_warn_when_the_blind_baseline_beats_0_6(shift, warns):
    rows = scan_rows(1.0, seed=7)
    for r in rows:
        if "blind" in r and r["member"]:
            r["blind"] += shift
    results = _results(rows)
    assert (results["metrics"][BLIND]["value"] > 0.6) is warns
    assert bool(shift_warnings(results)) is warns
    for view in (markdown(results), html(results), _printed(results)):
        assert ("distribution shift" in view) is warns
