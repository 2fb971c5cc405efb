"""Golden files: summary.md and summary.csv of a fixed comparative report, built on synthetic
scans (tests/helpers.py: every registered metric, no model) of four models, one of them on
another audit set (not comparable, a warning), with two gates. Any change to what these views
say shows up as a diff of tests/golden/.

After an intended change, regenerate and review the diff:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from memaudit.report.compare import compare_runs
from memaudit.report.gate import evaluate_gates
from memaudit.report.render import markdown, summary_frame
from tests.helpers import results, write_run

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def doc(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("golden")
    oracle = results("no-repeats", 0.0, seed=1)
    scans = {
        "standard": results("standard", 1.0, reference=oracle),
        "no-repeats": oracle,
        "memsink-off": results("memsink", 0.3, seed=2, sink_mode="off", reference=oracle),
        "unlearn-npo": results("unlearned", 0.4, seed=4, path="/models/unlearn-npo", audit="audit-b"),
    }
    doc = compare_runs([write_run(root, name, scan) for name, scan in scans.items()])
    gates = evaluate_gates(doc, ["extraction.exact_rate>0", "memorization.gap_closed<0.5"])
    return doc | {"gates": [dataclasses.asdict(g) for g in gates]}


VIEWS: dict[str, Callable[[dict], str]] = {
    "summary.md": markdown,
    "summary.csv": lambda doc: summary_frame(doc).to_csv(index=False),
}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_view_matches_its_golden_file(doc, name):
    text = VIEWS[name](doc)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / name).write_text(text, encoding="utf-8")
    assert text == (GOLDEN / name).read_text(encoding="utf-8"), (
        f"{name} differs from tests/golden/{name}; if intended: UPDATE_GOLDEN=1 pytest tests/test_golden.py"
    )
