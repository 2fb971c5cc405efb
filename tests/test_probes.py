"""The probes as pure functions of the scoring pass's arrays: extraction verdicts, membership
scores and their ROC statistics, canary exposure, metric aggregation, suites. Property tests
(hypothesis) pin down the definitions of docs/metrics.md; the real-model checks are in test_scan.py."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score, roc_curve

from memaudit.common.errors import MemauditError
from memaudit.probes.config import ScanConfig
from memaudit.probes.exposure import canary_exposures, exposures, random_secrets
from memaudit.probes.extraction import extraction_verdicts, np_probability, prefix_match_len, strength
from memaudit.probes.membership import attack_scores, auc, tpr_at_fpr
from memaudit.probes.metrics import compute_metrics
from memaudit.probes.registry import ATTACKS, FPR_LEVELS, REGISTRY, at_prefix, get_metric
from memaudit.probes.scoring import ScoredSequence
from memaudit.probes.suite import SUITES_DIR, load_suite, suite_names

S = 32


def scored_from(hit, logp=None, topk_logp=None) -> ScoredSequence:
    hit = np.asarray(hit, dtype=bool)
    logp = np.where(hit, -0.1, -3.0) if logp is None else np.asarray(logp, dtype=np.float32)
    topk = np.where(hit, -0.1, -np.inf) if topk_logp is None else np.asarray(topk_logp, dtype=np.float32)
    return ScoredSequence(logp, hit, np.full(len(hit), -2.0), np.full(len(hit), 1.0), topk)


hits_st = st.lists(st.booleans(), min_size=1, max_size=64).map(np.array)
scores_st = st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=40).map(np.array)


# Extraction -------------------------------------------------------------------------------


@given(prefix=st.lists(st.booleans(), max_size=20), hits=hits_st)
def test_extraction_verdicts_agree(prefix, hits):
    v = extraction_verdicts(scored_from(list(prefix) + list(hits)), len(prefix), len(hits), n=100, p=0.5)
    assert v["exact"] == (v["token_match"] == 1.0) == (v["prefix_match_len"] == len(hits)) == (v["strength"] == 1.0)
    assert 0 <= v["strength"] <= 1 and 0 <= v["token_match"] <= 1
    # the greedy run and the reproduced tail are both made of hits
    assert v["prefix_match_len"] + v["strength"] * len(hits) <= hits.sum() + len(hits) * v["exact"]
    assert hits[: v["prefix_match_len"]].all()
    assert 0 <= v["np_prob"] <= 1 and v["np_discoverable"] == (v["np_prob"] >= 0.5)


@given(hits=hits_st)
def test_strength_is_the_smallest_offset_from_which_the_rest_is_reproduced(hits):
    offset = min(o for o in range(len(hits) + 1) if hits[o:].all())
    assert strength(hits) == pytest.approx(1 - offset / len(hits))
    assert prefix_match_len(hits) == next((i for i, h in enumerate(hits) if not h), len(hits))


def test_too_short_for_the_window_has_no_verdict():
    assert extraction_verdicts(scored_from([True] * 63), 32, 32, 100, 0.5) is None
    assert extraction_verdicts(scored_from([True] * 64), 32, 32, 100, 0.5)["exact"]


@given(n=st.integers(1, 10_000), p=st.floats(1e-6, 1.0))
def test_np_discoverable_with_q_one_is_true(n, p):
    v = extraction_verdicts(scored_from([True] * 40, topk_logp=np.zeros(40)), 8, 32, n, p)
    assert v["np_prob"] == 1.0 and v["np_discoverable"]


@given(log_q=st.floats(-30, -1e-6), n=st.integers(1, 1000))
def test_np_probability_formula_and_monotone_in_n(log_q, n):
    q = math.exp(log_q)
    assert np_probability(np.array([log_q]), n) == pytest.approx(1 - (1 - q) ** n, rel=1e-6, abs=1e-12)
    assert np_probability(np.array([log_q]), n + 1) >= np_probability(np.array([log_q]), n)


def test_np_probability_is_zero_outside_the_top_k():
    assert np_probability(np.array([0.0, -np.inf, 0.0]), 10**9) == 0.0


# Membership inference ---------------------------------------------------------------------


@given(members=scores_st, nonmembers=scores_st)
def test_auc_equals_sklearn(members, nonmembers):
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    assert auc(members, nonmembers) == pytest.approx(roc_auc_score(labels, np.r_[members, nonmembers]))


@given(members=scores_st, nonmembers=scores_st, fpr=st.sampled_from([0.001, 0.01, 0.1, 0.5, 1.0]))
def test_tpr_at_fpr_is_the_best_point_of_sklearns_roc_curve(members, nonmembers, fpr):
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    fprs, tprs, _ = roc_curve(labels, np.r_[members, nonmembers], drop_intermediate=False)
    tpr = tpr_at_fpr(members, nonmembers, fpr)
    assert 0 <= tpr <= 1 and tpr == pytest.approx(tprs[fprs <= fpr + 1e-12].max())
    assert tpr_at_fpr(members, nonmembers, fpr / 10) <= tpr


def test_auc_of_identical_distributions_is_half_and_of_separated_ones_is_one():
    rng = np.random.default_rng(0)
    same = auc(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(same - 0.5) < 0.02
    assert auc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    assert auc(np.arange(10.0) + 10, np.arange(10.0)) == 1.0 and auc(np.arange(10.0), np.arange(10.0) + 10) == 0.0
    assert tpr_at_fpr(np.arange(10.0) + 10, np.arange(1000.0) - 1000, 0.001) == 1.0


ONE_PASS = ("loss", "zlib", "zlib_total", "mink", "minkpp", "dcpdd", "ref")  # scored from the pass's arrays


def test_attack_scores_are_oriented_members_higher():
    fitted = scored_from([True] * 50, logp=np.full(50, -0.5))
    unfitted = scored_from([False] * 50, logp=np.full(50, -4.0))
    text = "the same text for both"
    inputs = dict(tokens=np.arange(50) % 7, frequencies=np.full(8, 1 / 8), dcpdd_a=1.0)
    hi, lo = (attack_scores(s, text, 0.2, ATTACKS, ref_loss=3.0, **inputs) for s in (fitted, unfitted))
    assert set(hi) == set(ONE_PASS) and all(hi[a] > lo[a] for a in ONE_PASS)
    assert hi["loss"] == pytest.approx(-0.5) and hi["ref"] == pytest.approx(3.0 - 0.5)
    assert set(attack_scores(fitted, text, 0.2, ATTACKS)) == set(ONE_PASS) - {"ref", "dcpdd"}  # no inputs given


@given(logp=st.lists(st.floats(-20, 0), min_size=1, max_size=60).map(np.array))
def test_mink_is_the_mean_of_the_lowest_fraction(logp):
    s = scored_from(np.ones(len(logp), bool), logp=logp)
    scores = attack_scores(s, "x", 1.0, ("loss", "mink"))
    assert scores["mink"] == pytest.approx(scores["loss"], abs=1e-5)
    low = attack_scores(s, "x", 0.2, ("mink",))["mink"]
    assert low <= scores["loss"] + 1e-5 and low == pytest.approx(np.sort(logp)[: max(1, int(0.2 * len(logp)))].mean())


def test_zlib_is_the_mean_nll_and_zlib_total_the_total_nll_over_compressed_bytes():
    """By hand: zlib (Carlini et al. 2021, MIMIR, OpenUnlearning) divides the mean NLL, zlib_total
    (memaudit's former zlib) the total NLL, by the zlib-compressed UTF-8 length of the scored text."""
    import zlib

    logp = np.array([-2.0, -1.0, -0.5, -4.5], dtype=np.float32)
    s = scored_from([True] * 4, logp=logp)
    repetitive, varied = "abc " * 50, "The quick brown fox jumps over the lazy dog, again and again."
    for text in (repetitive, varied):
        z = attack_scores(s, text, 0.2, ("zlib", "zlib_total"))
        compressed = len(zlib.compress(text.encode("utf-8")))
        assert z["zlib"] == pytest.approx(-(8.0 / 4) / compressed)
        assert z["zlib_total"] == pytest.approx(-8.0 / compressed)
    z = {t: attack_scores(s, t, 0.2, ("zlib",))["zlib"] for t in (repetitive, varied)}
    assert z[repetitive] < z[varied] < 0  # the same NLL on compressible text looks less like a member


def test_dcpdd_takes_first_occurrences_caps_and_smooths():
    """DC-PDD by hand: first occurrences only, p * log(1 / f) capped at a, f Laplace-smoothed counts."""
    from memaudit.probes.frequencies import TokenFrequencies

    counts = np.array([5, 0, 3, 12])
    probs = TokenFrequencies(counts, "h", 1, "test").probabilities()
    assert probs == pytest.approx((counts + 1) / (counts.sum() + 4)) and probs[1] > 0
    tokens = np.array([2, 0, 2, 1, 0])
    logp = np.log(np.array([0.5, 0.01, 0.9, 0.2, 0.3]))
    s = scored_from([True] * 5, logp=logp)
    alpha = np.array([0.5 * -np.log(probs[2]), 0.01 * -np.log(probs[0]), 0.2 * -np.log(probs[1])])  # positions 0, 1, 3
    for a in (0.01, 0.1, 10.0):
        got = attack_scores(s, "x", 0.2, ("dcpdd",), tokens=tokens, frequencies=probs, dcpdd_a=a)["dcpdd"]
        assert got == pytest.approx(np.minimum(alpha, a).mean(), rel=1e-5)


# Exposure ---------------------------------------------------------------------------------

R = 10**9
CANDIDATES = np.random.default_rng(0).normal(60, 3, 2000)


def test_exposure_of_a_canary_ranked_first_is_near_log2_R():
    first = exposures(np.array([20.0]), CANDIDATES, R)[0]
    assert math.log2(R) - 0.01 <= first <= math.log2(R)


def test_exposure_of_a_typical_canary_is_about_one_bit():
    assert exposures(np.array([np.median(CANDIDATES)]), CANDIDATES, R)[0] == pytest.approx(1.0, abs=0.1)
    assert exposures(np.array([1e6]), CANDIDATES, R)[0] == pytest.approx(0.0, abs=1e-6)


def test_exposure_extrapolates_past_the_sample_with_a_skew_normal():
    beyond = CANDIDATES.min() - np.array([0.5, 2.0, 5.0])
    bits = exposures(beyond, CANDIDATES, R)
    assert (bits > math.log2(len(CANDIDATES))).all()  # more than the sample alone can resolve
    assert (np.diff(bits) > 0).all() and (bits < math.log2(R)).all()


@given(scores=st.lists(st.floats(40, 80), min_size=1, max_size=8).map(np.array))
@settings(max_examples=30)
def test_exposure_is_bounded_and_monotone(scores):
    bits = exposures(scores, CANDIDATES, R)
    assert ((bits >= 0) & (bits <= math.log2(R) + 1e-9)).all()
    order = np.argsort(scores)
    assert (np.diff(bits[order]) <= 1e-9).all()  # more likely (lower NLL) = more exposed


def test_random_secrets_keep_the_format_and_the_seed():
    secrets = random_secrets("123 456 789", "0123456789", 50, seed=3)
    assert secrets == random_secrets("123 456 789", "0123456789", 50, seed=3)
    assert all(len(s) == 11 and s[3] == s[7] == " " and s.replace(" ", "").isdigit() for s in secrets)
    assert len(set(secrets)) == 50


SPEC = {"template": "The code is {secret}.", "secret_alphabet": "0123456789", "space_size": 10**6}


def fake_scorer(memorized: set[str]):
    """NLL 10 for memorized texts, else 50 + a digit-dependent spread: a model that knows only those."""

    def score_texts(texts):
        nll = [10.0 if t in memorized else 50 + sum(map(int, filter(str.isdigit, t))) / 10 for t in texts]
        return [scored_from([True], logp=[-x]) for x in nll]

    return score_texts


def test_canary_exposures_rank_canaries_against_sampled_secrets():
    rows = [
        {"doc_id": 1, "text": "The code is 111 111.", "secret": "111 111"},
        {"doc_id": 2, "text": "The code is 999 999.", "secret": "999 999"},
    ]
    out = canary_exposures(rows, SPEC, fake_scorer({rows[0]["text"]}), 500, seed=0)
    assert out[1] > math.log2(SPEC["space_size"]) - 0.5 and out[2] < 1.0
    with pytest.raises(MemauditError, match="template"):
        canary_exposures([{**rows[0], "secret": "222 222"}], SPEC, fake_scorer(set()), 10, seed=0)


# Aggregation ------------------------------------------------------------------------------

CFG = ScanConfig(bootstrap=50, prefix_lens=(8, 32))


def synthetic_rows(gap: float, seed: int = 0) -> list[dict]:
    """Rows as sequence_row makes them: members at levels 1 and 8 fitted by `gap` nats per level."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, level in enumerate([0] * 8 + [1] * 4 + [8] * 4):
        loss = 4.0 - gap * math.log2(1 + level) + rng.normal(0, 0.2)
        exact = bool(level == 8 and gap > 0)
        verdicts = {"exact": exact, "token_match": 1.0 if exact else 0.3, "prefix_match_len": 32 if exact else 2}
        verdicts |= {"strength": float(exact), "np_prob": float(exact), "np_discoverable": exact}
        row = {"doc_id": i + 1, "kind": "heldout" if level == 0 else "repeated", "repeats": level, "member": level > 0}
        row |= {"n_tokens": 80, "loss": loss, **verdicts, **{at_prefix(k, 8): v for k, v in verdicts.items()}}
        row |= {f"mia_{a}": -loss for a in ("loss", "zlib", "mink", "minkpp")}
        rows.append(row)
    for i, level in enumerate([0, 0, 1, 8]):
        bits = 1.0 + 3 * level * (gap > 0)
        rows.append({"doc_id": 100 + i, "kind": "canary", "repeats": level, "member": level > 0, "exposure": bits})
    return rows


def results(gap: float, seed: int = 0, **refs) -> dict:
    """A results document as far as compute_metrics reads one (as reference or standard)."""
    return {"metrics": compute_metrics(synthetic_rows(gap, seed), [], CFG, **refs)}


def test_every_metric_is_registered_with_direction_and_no_nan():
    std, oracle = (results(g)["metrics"] for g in (1.0, 0.0))
    derived = results(0.5, reference=results(1.0), standard=results(1.0))["metrics"]
    json.dumps(derived, allow_nan=False)
    assert {"memorization.forgetting", "memorization.gap_closed", "privacy.privleak"} <= set(derived)
    for name, m in derived.items():
        meta = get_metric(name)
        assert m["higher_is_better"] is meta.higher_is_better and m["group"] == meta.group
        assert "n" in m and "value" in m and meta.meaning
        assert name.endswith(".auc") == (m.get("ideal") == 0.5 and m["higher_is_better"] is None), name
    for attack in ("loss", "zlib", "mink", "minkpp"):
        assert std[f"privacy.mia.{attack}.auc"]["value"] == 1.0
        assert set(std[f"privacy.mia.{attack}.auc"]["by_repeats"]) == {"1", "8"}
    assert "privacy.mia.ref.auc" not in std  # no reference scores in the rows
    assert std["extraction.exact_rate@P8"]["by_repeats"]["8"]["value"] == 1.0
    assert std["extraction.exact_rate"]["by_repeats"]["0"]["value"] == 0.0
    assert oracle["privacy.exposure"]["value"] == 1.0 and std["privacy.exposure"]["by_repeats"]["8"]["value"] == 25.0


def test_reference_metrics_follow_their_formulas():
    std, oracle = results(1.0), results(0.0)
    out = results(1.0, reference=oracle)["metrics"]
    member = out["memorization.member_loss"]["value"]
    assert out["memorization.forgetting"]["value"] == pytest.approx(
        member - oracle["metrics"]["memorization.member_loss"]["value"]
    )
    ref_auc = oracle["metrics"]["privacy.mia.mink.auc"]["value"]
    assert out["privacy.privleak"]["value"] == pytest.approx((1.0 - ref_auc) / ref_auc * 100)
    lo, hi = out["memorization.forgetting"]["ci95"]
    assert lo <= out["memorization.forgetting"]["value"] <= hi
    unlearned = results(0.0, seed=1, standard=std)["metrics"]
    assert unlearned["memorization.gap_closed"]["value"] > 0.8  # the member losses are back at the held-out level


def test_same_rows_same_metrics():
    assert compute_metrics(synthetic_rows(1.0), [], CFG) == compute_metrics(synthetic_rows(1.0), [], CFG)


def test_registry_derives_sweep_names_and_knows_every_attack():
    m = get_metric("extraction.strength@P128")
    assert m.higher_is_better is False and "prefix of 128 tokens" in m.meaning
    assert "extraction.exact_rate@P8" in REGISTRY  # the default sweep is there for reports
    for attack in ATTACKS:
        assert REGISTRY[f"privacy.mia.{attack}.auc"].ideal == 0.5
        assert all(f"privacy.mia.{attack}.tpr@{label}fpr" in REGISTRY for label in FPR_LEVELS)
    with pytest.raises(MemauditError, match="did you mean"):
        get_metric("extraction.exact_rat")
    with pytest.raises(MemauditError):
        get_metric("memorization.member_loss@P8")


# Suites -----------------------------------------------------------------------------------


def test_builtin_suites_load_and_the_default_is_the_default():
    assert {"default", "ci", "full"} <= set(suite_names())
    assert load_suite("default") == ScanConfig()
    ci = load_suite("ci")
    assert ci.name == "ci" and ci.prefix_lens == (32,) and ci.bootstrap < ScanConfig().bootstrap
    assert ci.exposure_candidates < ScanConfig().exposure_candidates
    assert load_suite("probes/full.yaml") == load_suite("full")  # probes/ is the package's suites dir
    assert SUITES_DIR.name == "suites"


def test_suite_errors_name_the_key_the_file_and_close_matches(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("prefix_lenz: 16\n")
    with pytest.raises(MemauditError, match=r"mine\.yaml: unknown key 'prefix_lenz'; did you mean prefix_len"):
        load_suite(bad)
    bad.write_text("bootstrap: lots\n")
    with pytest.raises(MemauditError, match=r"mine\.yaml: bootstrap must be int"):
        load_suite(bad)
    bad.write_text("np_p: 2\n")
    with pytest.raises(MemauditError, match=r"mine\.yaml: np_p must be a finite number > 0 and <= 1"):
        load_suite(bad)
    bad.write_text("mia_attacks: [loss, lira]\n")
    with pytest.raises(MemauditError, match="unknown membership attack 'lira'"):
        load_suite(bad)
    bad.write_text("- a list\n")
    with pytest.raises(MemauditError, match="mapping"):
        load_suite(bad)
    with pytest.raises(MemauditError, match="did you mean default"):
        load_suite("defualt")


def test_suite_name_defaults_to_the_file_stem(tmp_path):
    path = tmp_path / "quick.yaml"
    path.write_text("prefix_lens: [16, 32]\nnp_p: 1\n")
    cfg = load_suite(path)
    assert cfg.name == "quick" and cfg.prefix_lens == (16, 32) and cfg.np_p == 1.0 and cfg.bootstrap == 1000


def test_exposure_survives_candidates_no_skew_normal_fits():
    """All candidates scoring alike (a degenerate model) must not crash the scan: the tail falls
    back to the sample's resolution, a lower bound on exposure."""
    from memaudit.probes.exposure import exposures

    candidates = np.full(500, 3.0)
    got = exposures(np.array([1.0, 3.0]), candidates, space_size=1e9)
    assert np.isfinite(got).all() and got[0] >= np.log2(1e9) - np.log2(1 + 1e9 / 501)
