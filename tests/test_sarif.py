"""SARIF 2.1.0 output and triage: one result per leaking audit record at its file and line, valid
against the official schema (tests/data/sarif-schema-2.1.0.json, kept in the repository: the
tests run offline), rules and levels from the gates, thresholds that agree with the registry's
metrics, redaction that keeps every text out, the riskiest records in the report, the source
columns of sequences.csv, and the example workflow that uploads the file, valid against GitHub's
workflow schema. Synthetic documents (tests/helpers.py) for the behaviour, one real scan of the
tiny standard model for the whole path."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from memaudit.app.cli import main
from memaudit.app.requests import ReportRequest, ScanRequest, report_and_write, scan_and_write
from memaudit.common.errors import MemauditError
from memaudit.corpus.audit import AuditSet
from memaudit.corpus.audit_file import load_audit_rows
from memaudit.report import sarif
from memaudit.report.compare import compare_runs
from memaudit.report.gate import evaluate_gates
from memaudit.report.render import html, markdown, sequences_frame
from memaudit.report.sarif import SRCROOT, sarif_log, write_sarif
from memaudit.report.triage import DEFAULT_EXPOSURE_BITS, triage
from tests.helpers import DOC_ID, PAYLOAD, SECRET, assert_one_line_error, fake_results, results, write_run

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "tests" / "data" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
WORKFLOW = ROOT / "docs" / "github-actions.yml"
RULE_OF = {
    "extraction": "memaudit/extraction",
    "exposure": "memaudit/canary-exposure",
    "membership": "memaudit/membership-inference",
}


def assert_valid_sarif(log: dict) -> None:
    """The official schema, and what GitHub code scanning needs beyond it: every result one location
    with a file and (where known) a line, a known rule, an error or a warning."""
    jsonschema.validators.validator_for(SCHEMA)(SCHEMA).validate(log)
    (run,) = log["runs"]
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    for result in run["results"]:
        assert rules[result["ruleIndex"]] == result["ruleId"] and result["level"] in ("error", "warning")
        (location,) = result["locations"]
        assert location["physicalLocation"]["artifactLocation"]["uri"]
        assert location["physicalLocation"].get("region", {"startLine": 1})["startLine"] >= 1


def judged(doc: dict, *gates: str) -> dict:
    return doc | {"gates": [dataclasses.asdict(g) for g in evaluate_gates(doc, gates)]}


@pytest.fixture
def two_models(tmp_path) -> dict:
    """A comparative document: a standard model that memorizes, and a MemSink model that mostly does not."""
    runs = [
        write_run(tmp_path, "std", results("standard", 1.0)),
        write_run(tmp_path, "sink", results("memsink", 0.3, seed=2, sink_mode="off")),
    ]
    return compare_runs(runs)


def test_one_result_per_leaking_record_valid_against_the_schema(two_models):
    doc = judged(two_models, "extraction.exact_rate>0")
    log = sarif_log(doc)
    assert_valid_sarif(log)
    (run,) = log["runs"]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == list(RULE_OF.values())
    assert all(r["help"]["text"] and r["fullDescription"]["text"] for r in run["tool"]["driver"]["rules"])
    found = triage(doc)
    expected = [(rt.label, a.row["doc_id"]) for rt in found.runs for a in rt.leaking]
    got = [(r["properties"]["model"], r["properties"]["docId"]) for r in run["results"]]
    assert sorted(got) == sorted(expected) and len(set(got)) == len(got)  # one result per record and model
    for result in run["results"]:
        props = result["properties"]
        row = next(r for r in doc["runs"] if r["label"] == props["model"])["sequences"]
        row = next(r for r in row if r["doc_id"] == props["docId"])
        assert row["member"]
        first = props["families"][0]
        assert result["ruleId"] == RULE_OF[first]  # the first family it leaks through, in order of riskiness
        assert (first == "extraction") == (row.get("exact") is True)
        # the extraction gate tripped for the standard model only: its extracted records are errors
        tripped = props["model"] == "standard" and "extraction" in props["families"]
        assert result["level"] == ("error" if tripped else "warning"), result
        region = result["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] == row["source_line"]
    levels = [r["level"] for r in run["results"]]
    assert levels == sorted(levels)  # errors first ("error" < "warning")
    assert {"extraction", "exposure", "membership"} <= {f for r in run["results"] for f in r["properties"]["families"]}


def test_results_are_capped_riskiest_first(two_models, monkeypatch):
    doc = judged(two_models, "extraction.exact_rate>0")
    everything = sarif_log(doc)["runs"][0]["results"]
    monkeypatch.setattr(sarif, "MAX_RESULTS", 3)
    capped = sarif_log(doc)["runs"][0]
    assert capped["results"] == everything[:3] and capped["properties"]["resultsLeftOut"] == len(everything) - 3
    assert [r["level"] for r in capped["results"]] == ["error"] * 3


def test_membership_flags_agree_with_the_registrys_tpr_at_1_percent_fpr(two_models):
    for rt, run in zip(triage(two_models).runs, two_models["runs"]):
        members = [a for a in rt.records if a.row["kind"] != "canary"]
        scored = {k.removeprefix("mia_") for row in run["sequences"] for k in row if k.startswith("mia_")}
        assert {"loss", "zlib", "mink", "minkpp", "ref"} <= set(rt.thresholds) == scored  # every attack's score
        for attack in rt.thresholds:
            flagged = sum(attack in a.flagged_by for a in members) / len(members)
            assert flagged == pytest.approx(run["metrics"][f"privacy.mia.{attack}.tpr@1%fpr"]["value"])
        assert rt.union_fpr == 0.0  # 8 non-members: the threshold is their highest score ...
        assert rt.chance == dict.fromkeys(rt.thresholds, 1 / 9)  # ... which a non-leaking record beats 1 time in 9


def test_exposure_threshold_is_the_gates_or_one_percent_of_untrained_canaries(two_models):
    assert triage(two_models).exposure_bits == pytest.approx(math.log2(100)) == DEFAULT_EXPOSURE_BITS
    exposures = {
        (a.model, a.row["doc_id"]): a.exposure
        for rt in triage(two_models).runs
        for a in rt.records
        if a.exposure is not None
    }
    gated = judged(two_models, "privacy.exposure>12")
    found = triage(gated)
    assert found.exposure_bits == 12 and "privacy.exposure>12" in found.exposure_source
    exposed = {(a.model, a.row["doc_id"]) for rt in found.runs for a in rt.records if a.exposed}
    assert exposed == {k for k, bits in exposures.items() if bits > 12} and exposed
    log = sarif_log(gated)
    canaries = [r for r in log["runs"][0]["results"] if r["ruleId"] == "memaudit/canary-exposure"]
    # the gate (mean exposure > 12) tripped for the standard model only
    assert {(r["properties"]["model"], r["level"]) for r in canaries} == {("standard", "error")}
    assert log["runs"][0]["properties"]["exposureThresholdBits"] == 12


def test_locations_are_relative_to_the_repository_root(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    (tmp_path / "ci").mkdir()
    monkeypatch.chdir(tmp_path / "ci")
    doc = results("standard", 1.0)
    for row in doc["sequences"]:
        row["source_file"] = "../data/my audit.jsonl" if row["kind"] != "canary" else str(tmp_path.parent / "x.csv")
    log = sarif_log(doc)
    assert_valid_sarif(log)
    run = log["runs"][0]
    assert run["originalUriBaseIds"][SRCROOT]["uri"] == tmp_path.as_uri() + "/"
    where = {r["properties"]["kind"]: r["locations"][0]["physicalLocation"] for r in run["results"]}
    assert where["repeated"]["artifactLocation"] == {"uri": "data/my%20audit.jsonl", "uriBaseId": SRCROOT}
    assert where["canary"]["artifactLocation"] == {"uri": (tmp_path.parent / "x.csv").as_uri()}  # outside
    # a results document older than the source columns: the data dir's audit.jsonl, without a line
    for row in doc["sequences"]:
        del row["source_file"], row["source_line"]
    old = sarif_log(doc)["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert old == {"artifactLocation": {"uri": "file:///data/tiny/audit.jsonl"}}


def _forms(text: str) -> set[str]:
    return {text, json.dumps(text, ensure_ascii=False)[1:-1], json.dumps(text)[1:-1]}


def test_redaction_keeps_every_text_secret_and_doc_id_out(tmp_path):
    runs = [
        write_run(tmp_path, "std", fake_results("standard")),
        write_run(tmp_path, "sink", fake_results("memsink", sink_mode="off", member=2.5, exact=0.0)),
    ]
    plain = sarif_log(judged(compare_runs(runs), "extraction.exact_rate>0"))
    assert_valid_sarif(plain)
    assert "Prefix number 1 of a sentence," in json.dumps(plain)  # unredacted: a short excerpt of the prefix
    redacted_doc = judged(compare_runs(runs, redact=True), "extraction.exact_rate>0")
    path = write_sarif(redacted_doc, tmp_path / "out" / "leaks.sarif")
    text = path.read_text(encoding="utf-8")
    log = json.loads(text)
    assert_valid_sarif(log)
    assert log["runs"][0]["results"] and log["runs"][0]["properties"]["redacted"] is True
    secrets = {SECRET, PAYLOAD, str(DOC_ID), str(DOC_ID + 99)}
    for run_dir in runs:
        for row in json.loads((run_dir / "results.json").read_text())["sequences"]:
            secrets |= {v for k, v in row.items() if isinstance(v, str) and k != "kind"}
            secrets.add(str(row["doc_id"]))
    for secret in secrets:
        for form in _forms(secret):
            assert form not in text, secret
    assert all(r["properties"]["docId"].startswith("#") for r in log["runs"][0]["results"])


def test_riskiest_records_extracted_then_exposed_then_by_membership_rank(two_models, tmp_path):
    found = triage(two_models)
    top = found.riskiest()
    assert len(top) == 10
    risks = [r.risk for r in top]
    assert risks == sorted(risks, reverse=True)
    extracted = [any(a.extracted for a in r.by.values()) for r in top]
    assert extracted == sorted(extracted, reverse=True) and extracted[0]  # extracted ones lead
    first_other = extracted.index(False)
    assert top[first_other].row["kind"] == "canary"  # then the exposed canaries
    everything = [a for rt in found.runs for a in rt.records if a.has_signal]
    listed = {r.row["doc_id"] for r in top}
    assert all(a.risk <= min(r.risk for r in top) for a in everything if a.row["doc_id"] not in listed)
    page = html(two_models)
    table = page[page.index('id="riskiest"') : page.index("</table>", page.index('id="riskiest"'))]
    assert table.count("<tr>") == 11 and "/data/tiny/audit.jsonl:17" in table and "extracted verbatim" in table
    assert (
        page.index("<h2>Headline numbers</h2>")
        < page.index("<h2>Riskiest records</h2>")
        < page.index("<h2>Metrics</h2>")
    )
    hidden = html(compare_runs([write_run(tmp_path, "f", fake_results())], redact=True))
    table = hidden[hidden.index('id="riskiest"') : hidden.index("</table>", hidden.index('id="riskiest"'))]
    assert re.search(r"#[0-9a-f]{10}", table) and "Prefix number" not in table and "the true suffix" not in table


def test_sequences_csv_has_each_records_file_and_line_and_every_attack(two_models):
    frame = sequences_frame(two_models)
    assert list(frame.columns[:4]) == ["model", "doc_id", "source_file", "source_line"]
    assert {"mia_loss", "mia_zlib", "mia_mink", "mia_minkpp", "mia_ref"} <= set(frame.columns)
    assert set(frame.source_file) == {"/data/tiny/audit.jsonl"} and frame.source_line.min() == 1
    md = markdown(two_models)
    assert "| model | leaking records | extraction | canary exposure | membership |" in md


def test_audit_rows_know_their_file_and_line(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "member": false}\n')
    (tmp_path / "b.csv").write_text('text,member\n"multi\nline",yes\n"", no\nlast,no\n')
    (tmp_path / "c.txt").write_text("first para\ncontinues\n\n\nsecond\n")
    pd.DataFrame({"text": ["p", "q"]}).to_parquet(tmp_path / "d.parquet")
    lines = {
        name: [(r["source_file"], r["source_line"]) for r in load_audit_rows(tmp_path / name)]
        for name in ("a.jsonl", "b.csv", "c.txt", "d.parquet")
    }
    assert lines["a.jsonl"] == [(str(tmp_path / "a.jsonl"), 1), (str(tmp_path / "a.jsonl"), 3)]
    assert [line for _, line in lines["b.csv"]] == [2, 5]  # the blank row on line 4 is skipped
    assert [line for _, line in lines["c.txt"]] == [1, 5]
    assert [line for _, line in lines["d.parquet"]] == [1, 2]  # row numbers
    held = load_audit_rows(tmp_path / "a.jsonl", tmp_path / "c.txt")
    assert [r["source_file"] for r in held][-1] == str(tmp_path / "c.txt")
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text("{}")
    row = {"doc_id": 5, "text": "a text", "repeats": 1, "kind": "repeated"}
    for name in ("train", "valid"):
        (data / f"{name}.jsonl").write_text(json.dumps(row) + "\n")
    (data / "audit.jsonl").write_text("\n" + json.dumps(row) + "\n")
    loaded = AuditSet.load(data)
    assert loaded.audit[0]["source_file"] == str(data / "audit.jsonl") and loaded.audit[0]["source_line"] == 2
    assert "source_file" not in loaded.train[0] and "source_line" not in loaded.valid[0]


def test_sarif_location_is_refused_before_any_work(tmp_path):
    (tmp_path / "a.txt").write_text("one text to audit\n")
    (tmp_path / "folder").mkdir()
    cases = {
        "an input": (tmp_path / "a.txt", "is, holds or sits inside the input"),
        "a folder": (tmp_path / "folder", "is a folder"),
        "the run dir": (tmp_path / "out", "itself"),
    }
    for where, needle in cases.values():
        request = ScanRequest(model="no-such-model", out=tmp_path / "out", audit=tmp_path / "a.txt", sarif=where)
        with pytest.raises(MemauditError, match=needle) as refused:
            scan_and_write(request)
        assert str(refused.value).startswith("sarif ")
        args = ["scan", "model", "no-such-model", "--audit", tmp_path / "a.txt", "--out", tmp_path / "out"]
        result = CliRunner().invoke(main, [str(a) for a in [*args, "--sarif", where]])
        assert_one_line_error(result, "--sarif", needle)
    with pytest.raises(MemauditError, match="sarif .* is a folder"):
        report_and_write(ReportRequest(runs=[tmp_path / "no-run"], out=tmp_path / "r", sarif=tmp_path / "folder"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "r").exists()


def test_the_workflow_uploads_the_sarif_and_is_a_valid_github_workflow(tmp_path):
    def check(path: Path) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    result = check(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("security-events: write", "security-event: write"))
    assert check(broken).returncode == 1  # the schema does look at the permissions
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["memorization-gate"]["steps"]
    scan = next(s for s in steps if "memaudit scan model" in s.get("run", ""))
    words = shlex.split(scan["run"].replace("\\\n", " "))
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    assert upload["with"]["sarif_file"] == words[words.index("--sarif") + 1]
    assert "always()" in upload["if"] and upload["with"]["sarif_file"] in upload["if"]
    permissions = yaml.safe_load(WORKFLOW.read_text())["jobs"]["memorization-gate"]["permissions"]
    assert permissions["security-events"] == "write"


@pytest.mark.usefixtures("one_thread")
def test_a_real_scan_points_at_the_audit_lines_and_a_redacted_report_hides_them(
    tiny_models, tiny_data, tmp_path, monkeypatch
):
    monkeypatch.chdir(tiny_data.parent)  # the data dir given relative, as in CI
    run_dir, sarif = tmp_path / "run", tmp_path / "scan.sarif"
    args = ["scan", "model", str(tiny_models["standard"]), "--data", tiny_data.name, "--suite", "ci"]
    args += ["--out", str(run_dir), "--fail-on", "extraction.exact_rate>0", "--sarif", str(sarif)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output  # the gate trips: the standard model leaks
    log = json.loads(sarif.read_text())
    assert_valid_sarif(log)
    audit = [json.loads(line) for line in (tiny_data / "audit.jsonl").read_text().splitlines()]
    results_ = log["runs"][0]["results"]
    assert {r["ruleId"] for r in results_} >= {"memaudit/extraction", "memaudit/membership-inference"}
    for r in results_:
        location = r["locations"][0]["physicalLocation"]
        artifact = location["artifactLocation"]  # relative to the folder with .git above, else to the working dir
        assert artifact["uriBaseId"] == SRCROOT and artifact["uri"].endswith(f"{tiny_data.name}/audit.jsonl")
        row = audit[location["region"]["startLine"] - 1]
        assert row["doc_id"] == r["properties"]["docId"] and row["repeats"] > 0
        assert r["level"] == ("error" if "extraction" in r["properties"]["families"] else "warning")
    frame = pd.read_csv(run_dir / "sequences.csv")
    assert (frame.source_file == f"{tiny_data.name}/audit.jsonl").all()
    assert [audit[line - 1]["doc_id"] for line in frame.source_line] == list(frame.doc_id)

    shared = tmp_path / "shared.sarif"
    args = ["report", str(run_dir), "--redact", "--out", str(tmp_path / "rep"), "--sarif", str(shared)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    text = shared.read_text(encoding="utf-8")
    assert_valid_sarif(json.loads(text))
    assert len(json.loads(text)["runs"][0]["results"]) == len(results_)
    plain = json.loads((run_dir / "results.json").read_text())["sequences"]
    hidden = {r["text"] for r in audit} | {r["secret"] for r in audit if r.get("secret")}
    hidden |= {str(r["doc_id"]) for r in audit}
    hidden |= {v for row in plain for k, v in row.items() if isinstance(v, str) and k not in ("kind", "source_file")}
    for secret in hidden:
        if len(secret) >= 8:
            for form in _forms(secret):
                assert form not in text, secret
