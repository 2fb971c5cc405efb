import json

import numpy as np
import pandas as pd
import pytest
import torch

from memaudit.corpus.tokenizer import encode_documents
from memaudit.models.io import load_model
from memaudit.probes.config import SCAN_SCHEMA_VERSION
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
    assert r["schema_version"] == SCAN_SCHEMA_VERSION and r["model"]["kind"] == "standard" and r["model"]["sha256"]
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
    """docs/metrics.md's premise, on a trained model: greedy decoding from a true prefix reproduces the
    suffix iff every suffix token is the teacher-forced argmax. 24 sequences x 5 prefix lengths."""
    loaded = load_model(tiny_models["standard"])
    rows = [json.loads(line) for line in (tiny_data / "audit.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] != "canary"]
    seqs = encode_documents(loaded.tokenizer, [r["text"] for r in rows])
    scored = score_sequences(loaded.model, seqs, pad_id=loaded.tokenizer.pad_token_id)
    s, checked, exact = 16, 0, 0
    for seq, sc in zip(seqs, scored):
        for p in (8, 16, 24, 32, 40):
            prompt = torch.tensor([seq[: p + 1]])
            # The boundary token doubles as the pad token: without a mask generate() would ignore it.
            gen = loaded.model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=s, do_sample=False, pad_token_id=0
            )[0, p + 1 :].tolist()
            verdict = bool(sc.hit[p : p + s].all())
            assert (gen == seq[p + 1 : p + s + 1]) == verdict, (p, gen, seq[p + 1 : p + s + 1])
            first_miss = np.flatnonzero(~sc.hit[p : p + s])
            n_match = first_miss[0] if len(first_miss) else s
            assert gen[:n_match] == seq[p + 1 : p + 1 + n_match]  # the reproduced run agrees too
            checked, exact = checked + 1, exact + verdict
    assert checked >= 100 and 0 < exact < checked


@pytest.mark.parametrize("vocab", [8191, 512, 41, 7])
@pytest.mark.parametrize("topk", [1, 2, 40])
def test_token_stats_equal_the_full_log_softmax(vocab, topk):
    """The pass's shortcuts (log Z from the largest probability, the top-k only on rows whose true logit
    reaches the least part maximum, a tail of the vocabulary outside the parts) give what the plain
    computation over the full log-softmax gives, for true tokens at every rank."""
    from memaudit.probes.scoring import _token_stats

    gen = torch.Generator().manual_seed(vocab * 100 + topk)
    logits = torch.randn(300, vocab, generator=gen) * 4  # continuous: no ties
    rank = torch.randint(0, min(vocab, 2 * topk + 2), (300,), generator=gen)
    targets = logits.argsort(-1, descending=True).gather(1, rank[:, None]).squeeze(1)
    got = _token_stats(logits.clone(), targets, topk)

    logp_all = logits.log_softmax(-1)
    logp = logp_all.gather(1, targets[:, None]).squeeze(1)
    mu = (logp_all.exp() * logp_all).sum(-1)
    sigma = ((logp_all.exp() * logp_all.square()).sum(-1) - mu.square()).sqrt()
    vals, idx = logits.topk(min(topk, vocab), -1)
    in_top = (idx == targets[:, None]).any(-1)
    topk_logp = torch.where(in_top, logits.gather(1, targets[:, None]).squeeze(1) - vals.logsumexp(-1), -torch.inf)
    torch.testing.assert_close(got[:, 0], logp, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[:, 1].bool(), logits.argmax(-1) == targets)
    torch.testing.assert_close(got[:, 2], mu, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got[:, 3], sigma, atol=1e-3, rtol=1e-4)
    assert torch.equal(got[:, 4].isfinite(), in_top) and in_top.any() and (~in_top).any() == (vocab > topk)
    torch.testing.assert_close(got[:, 4][in_top], topk_logp[in_top], atol=1e-5, rtol=1e-5)


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


# Probes beyond loss and exact extraction (docs/metrics.md): membership inference, the prefix sweep,
# strength, canary exposure, reference-relative metrics and suites, on real models.


def test_membership_inference_and_exposure_leak_only_on_the_standard_model(results):
    std, oracle = results["standard"]["metrics"], results["no-repeats"]["metrics"]
    for attack in ("loss", "zlib", "mink", "minkpp"):
        name = f"privacy.mia.{attack}.auc"
        assert std[name]["value"] > 0.85 and std[name]["by_repeats"]["64"]["value"] == 1.0, name
        assert 0.2 < oracle[name]["value"] < 0.8 and std[name]["value"] > oracle[name]["value"], name
        assert std[name]["higher_is_better"] is None and std[name]["ideal"] == 0.5
        assert 0 <= std[f"privacy.mia.{attack}.tpr@1%fpr"]["value"] <= 1
    exposure = by_level(results["standard"], "privacy.exposure")
    assert exposure[64] > 15 and exposure[64] > exposure[0] + 10 and exposure[0] < 5
    assert oracle["privacy.exposure"]["value"] < 5
    rows = results["standard"]["sequences"]
    assert all("exposure" in r for r in rows if r["kind"] == "canary")
    assert all({"mia_loss", "mia_zlib", "mia_mink", "mia_minkpp"} <= set(r) for r in rows)


def test_prefix_sweep_and_verdict_relations(results):
    std = results["standard"]
    for p in (8, 16, 64):
        assert by_level(std, f"extraction.exact_rate@P{p}")[64] == 1.0
        assert std["metrics"][f"extraction.exact_rate@P{p}"]["n"] <= std["metrics"]["extraction.exact_rate"]["n"]
    assert "extraction.exact_rate@P32" not in std["metrics"]  # the headline is not repeated
    for r in std["sequences"]:
        if r.get("exact"):
            assert r["token_match"] == 1 and r["prefix_match_len"] == 32 and r["strength"] == 1
        elif "exact" in r:
            assert r["prefix_match_len"] < 32 and r["strength"] < 1


def test_sweep_and_strength_verdicts_equal_greedy_generate(tiny_models, tiny_data):
    from memaudit.probes.extraction import extraction_verdicts

    loaded = load_model(tiny_models["standard"])
    rows = [json.loads(line) for line in (tiny_data / "audit.jsonl").read_text().splitlines()]
    seqs = encode_documents(loaded.tokenizer, [r["text"] for r in rows if r["kind"] != "canary"])
    scored = score_sequences(loaded.model, seqs, pad_id=loaded.tokenizer.pad_token_id)
    s = 32

    def greedy(prompt: list[int], n: int) -> list[int]:
        # An explicit mask: without one, generate() takes the boundary token (id 0 = pad id) for padding.
        ids = torch.tensor([prompt])
        out = loaded.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
        return out[0, len(prompt) :].tolist()

    for seq, sc in zip(seqs, scored):
        for p in (8, 64):
            v = extraction_verdicts(sc, p, s, n=100, p=0.5)
            if v is None:
                continue
            suffix, gen = seq[p + 1 : p + s + 1], greedy(seq[: p + 1], s)
            assert (gen == suffix) == v["exact"]
            assert next((i for i, (a, b) in enumerate(zip(gen, suffix)) if a != b), s) == v["prefix_match_len"]
            offset = round((1 - v["strength"]) * s)  # greedy reproduces the rest from here, not from one earlier
            if offset < s:
                assert greedy(seq[: p + 1 + offset], s - offset) == suffix[offset:]
            if offset > 0:
                assert greedy(seq[: p + offset], s - offset + 1) != suffix[offset - 1 :]


def test_reference_attack_and_reference_metrics(results, tiny_models, tiny_data):
    from memaudit.corpus.audit import AuditSet
    from memaudit.probes.metrics import compute_metrics, sequence_row

    std, oracle = results["standard"], results["no-repeats"]
    loaded = load_model(tiny_models["standard"])
    rows = AuditSet.load(tiny_data).audit
    tokens = encode_documents(loaded.tokenizer, [r["text"] for r in rows])
    scored = score_sequences(loaded.model, tokens, pad_id=loaded.tokenizer.pad_token_id)
    ref_loss = {r["doc_id"]: r["loss"] for r in oracle["sequences"]}  # what scan passes per row
    seqs = [
        sequence_row(r, t, s, CFG, loaded.tokenizer, ref_loss=ref_loss[r["doc_id"]])
        for r, t, s in zip(rows, tokens, scored)
    ]
    metrics = compute_metrics(seqs, [], CFG, reference=oracle, standard=std)
    assert metrics["privacy.mia.ref.auc"]["value"] > 0.9
    mink, ref_mink = std["metrics"]["privacy.mia.mink.auc"]["value"], oracle["metrics"]["privacy.mia.mink.auc"]["value"]
    assert metrics["privacy.privleak"]["value"] == pytest.approx((mink - ref_mink) / ref_mink * 100)
    assert metrics["privacy.privleak"]["value"] > 20 and metrics["memorization.forgetting"]["value"] < -1
    assert metrics["memorization.gap_closed"]["value"] == pytest.approx(0.0, abs=1e-3)  # the standard itself


def test_ci_suite_scan_is_recorded_and_lean(tiny_models, tiny_data):
    from memaudit.probes.suite import load_suite

    r = scan(tiny_models["standard"], data_dir=tiny_data, config=load_suite("ci"))
    assert r["suite"]["name"] == "ci" and list(r["suite"]["prefix_lens"]) == [32]
    assert not any("@P" in name for name in r["metrics"]) and "privacy.exposure" in r["metrics"]


def test_sampling_extraction_attack(tiny_models, tiny_data):
    config = ScanConfig(bootstrap=50, sampling_trials=8, exposure_candidates=0)
    results = scan(tiny_models["standard"], data_dir=tiny_data, config=config)
    rate = by_level(results, "extraction.sampling_rate")
    assert rate[0] == 0.0 and rate[64] > 0.5
    again = scan(tiny_models["standard"], data_dir=tiny_data, config=config)  # seeded sampling
    assert again["metrics"]["extraction.sampling_rate"] == results["metrics"]["extraction.sampling_rate"]
