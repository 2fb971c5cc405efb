import json

import numpy as np
import pandas as pd
import pytest
import torch

from memaudit.corpus.tokenizer import encode_documents
from memaudit.models.io import load_model
from memaudit.probes.scan import ScanConfig, scan
from memaudit.probes.scoring import score_sequences
from memaudit.report.render import write_run

CFG = ScanConfig(prefix_len=32, suffix_len=32, bootstrap=200)


@pytest.fixture(scope="module")
def results(tiny_models, tiny_data):
    return {name: scan(path, data_dir=tiny_data, config=CFG) for name, path in tiny_models.items()}


def by_level(results, metric):
    return {int(k): v["value"] for k, v in results["metrics"][metric]["by_repeats"].items()}


def test_dose_response_on_the_standard_model(results):
    std = results["standard"]
    loss = by_level(std, "memorization.member_loss")
    assert loss[64] < loss[8] < loss[1] and loss[64] < loss[0]
    exact = by_level(std, "extraction.exact_rate")
    assert exact[64] >= 0.5 and exact[0] == 0.0
    assert std["metrics"]["memorization.loss_gap"]["value"] > 0.5


def test_no_repeats_oracle_shows_no_gap(results):
    oracle = results["no-repeats"]
    gap = oracle["metrics"]["memorization.loss_gap"]
    assert abs(gap["value"]) < 0.25 and gap["ci95"][0] < 0.2
    assert by_level(oracle, "extraction.exact_rate")[64] == 0.0


def test_results_schema(results):
    r = results["standard"]
    assert r["schema_version"] == 1 and r["model"]["kind"] == "standard" and r["model"]["sha256"]
    for name, m in r["metrics"].items():
        assert {"value", "higher_is_better", "n", "group"} <= set(m), name
    assert r["metrics"]["memorization.member_loss"]["higher_is_better"] is True
    assert r["metrics"]["extraction.exact_rate"]["higher_is_better"] is False
    lo, hi = r["metrics"]["capability.valid_loss"]["ci95"]
    assert lo <= r["metrics"]["capability.valid_loss"]["value"] <= hi
    assert r["counts"]["members"] == 12 and r["counts"]["nonmembers"] == 12


def test_same_scan_twice_same_numbers(results, tiny_models, tiny_data):
    again = scan(tiny_models["standard"], data_dir=tiny_data, config=CFG)
    assert again["metrics"] == results["standard"]["metrics"]


def test_teacher_forced_verdict_equals_greedy_generate(tiny_models, tiny_data):
    loaded = load_model(tiny_models["standard"])
    rows = [json.loads(line) for line in (tiny_data / "audit.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] != "canary"]
    seqs = encode_documents(loaded.tokenizer, [r["text"] for r in rows])
    scored = score_sequences(loaded.model, seqs, pad_id=loaded.tokenizer.pad_token_id)
    p, s = 32, 32
    for seq, sc in zip(seqs, scored):
        prompt = torch.tensor([seq[: p + 1]])
        gen = loaded.model.generate(prompt, max_new_tokens=s, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert (gen[0, p + 1 :].tolist() == seq[p + 1 : p + s + 1]) == bool(sc.hit[p : p + s].all())
        first_miss = np.flatnonzero(~sc.hit[p : p + s])
        n_match = first_miss[0] if len(first_miss) else s
        assert gen[0, p + 1 : p + 1 + n_match].tolist() == seq[p + 1 : p + 1 + n_match]


def test_scoring_is_batch_invariant(tiny_models, tiny_data):
    loaded = load_model(tiny_models["standard"])
    seqs = encode_documents(loaded.tokenizer, ["A short one.", "Another text that is a little longer than that."])
    together = score_sequences(loaded.model, seqs, pad_id=0)
    alone = [score_sequences(loaded.model, [s], pad_id=0)[0] for s in seqs]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.logp, b.logp, atol=1e-4)


def test_run_dir_views_render_from_results(results, tmp_path):
    r = results["standard"]
    r["sequences"][0]["prefix"] = "<script>alert(1)</script>"
    out = write_run(r, tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == [
        "report.html",
        "results.json",
        "sequences.csv",
        "summary.csv",
        "summary.md",
    ]
    html = (out / "report.html").read_text()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    summary = pd.read_csv(out / "summary.csv")
    row = summary[(summary.metric == "extraction.exact_rate") & (summary.repeats == "64")]
    assert row.value.item() == r["metrics"]["extraction.exact_rate"]["by_repeats"]["64"]["value"]
    assert len(pd.read_csv(out / "sequences.csv")) == len(r["sequences"])
    assert "| extraction.exact_rate | ↓ |" in (out / "summary.md").read_text()
