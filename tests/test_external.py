"""Audits of models memaudit did not train: audit files from outside, models that are plain
HF dirs, and scans split across processes."""

import json

import pandas as pd
import pytest

from memaudit.common.errors import MemauditError
from memaudit.corpus.audit_file import load_audit_rows
from memaudit.probes.scan import scan
from memaudit.probes.suite import load_suite
from tests.helpers import LEAN_SCAN, memaudit_cli


def audit_rows(tiny_data):
    return [json.loads(line) for line in (tiny_data / "audit.jsonl").read_text().splitlines()]


def test_audit_file_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        "\n".join(
            json.dumps(r) for r in [{"text": "x one", "repeats": 3}, {"text": "y two", "member": False}, {"text": "z"}]
        )
    )
    rows = load_audit_rows(tmp_path / "a.jsonl")
    assert [(r["repeats"], r["kind"]) for r in rows] == [(3, "repeated"), (0, "heldout"), (1, "repeated")]
    pd.DataFrame({"text": ["m1", "m2"], "member": ["yes", "no"]}).to_csv(tmp_path / "a.csv", index=False)
    assert [r["repeats"] for r in load_audit_rows(tmp_path / "a.csv")] == [1, 0]
    (tmp_path / "held.txt").write_text("held out one\n\nheld out two\n")
    rows = load_audit_rows(tmp_path / "a.csv", tmp_path / "held.txt")
    assert [r["repeats"] for r in rows] == [1, 0, 0, 0]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no non-empty texts"),
        ('{"body": "x"}\n', "a.jsonl:1: no 'text' field"),
        ('{"text": "x", "repeats": "many"}\n', "whole number"),
    ],
)
def test_bad_audit_files(tmp_path, content, message):
    (tmp_path / "a.jsonl").write_text(content)
    with pytest.raises(MemauditError, match=message):
        load_audit_rows(tmp_path / "a.jsonl")


def test_scan_with_an_audit_file_matches_the_data_dir_scan(tiny_models, tiny_data, tmp_path):
    rows = [r for r in audit_rows(tiny_data) if r["kind"] != "canary"]
    members = tmp_path / "members.jsonl"
    members.write_text(
        "\n".join(json.dumps({"text": r["text"], "repeats": r["repeats"]}) for r in rows if r["repeats"])
    )
    held = tmp_path / "held.csv"
    pd.DataFrame({"text": [r["text"] for r in rows if not r["repeats"]]}).to_csv(held, index=False)
    from_file = scan(
        tiny_models["standard"], audit_rows=load_audit_rows(members, held), config=LEAN_SCAN, emitted=False
    )
    from_dir = scan(tiny_models["standard"], data_dir=tiny_data, config=LEAN_SCAN, emitted=False)
    for name in ("memorization.member_loss", "extraction.exact_rate", "memorization.loss_gap"):
        assert from_file["metrics"][name]["value"] == pytest.approx(from_dir["metrics"][name]["value"], abs=1e-6)
    assert "capability.valid_loss" not in from_file["metrics"]  # no --valid given


def test_too_long_sequences_are_truncated_and_counted(tiny_models, tiny_data):
    rows = audit_rows(tiny_data)
    rows.append({"doc_id": 7, "text": " ".join(["word"] * 2000), "repeats": 0, "kind": "heldout"})
    results = scan(tiny_models["standard"], audit_rows=rows, config=LEAN_SCAN, emitted=False)
    assert results["counts"]["truncated_to_context"] == 1


def test_emitted_continuation_is_the_true_suffix_when_extracted(tiny_models, tiny_data):
    results = scan(tiny_models["standard"], data_dir=tiny_data, config=LEAN_SCAN)
    extracted = [r for r in results["sequences"] if r.get("exact")]
    assert extracted and all(r["emitted"] == r["suffix"] for r in extracted)
    assert any(r["emitted"] != r["suffix"] for r in results["sequences"] if r.get("exact") is False)


def test_two_process_scan_gathers_the_same_results(tiny_models, tiny_data, tmp_path):
    args = ["scan", "model", str(tiny_models["standard"]), "--data", str(tiny_data), "--suite", "ci"]
    two = memaudit_cli(*args, "--out", str(tmp_path / "two"), processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    a = scan(tiny_models["standard"], data_dir=tiny_data, config=load_suite("ci"))  # one process, in this one
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert a["processes"] == 1 and b["processes"] == 2  # the sequences really were split
    assert [r["doc_id"] for r in a["sequences"]] == [r["doc_id"] for r in b["sequences"]]
    assert [r.get("exact") for r in a["sequences"]] == [r.get("exact") for r in b["sequences"]]
    for name, metric in a["metrics"].items():
        assert metric["value"] == pytest.approx(b["metrics"][name]["value"], abs=1e-5), name
