"""The membership attacks beyond the one scoring pass's own statistics (docs/metrics.md, "Membership
attacks"): DC-PDD, ReCaLL, GradNorm and RMIA each equal a direct, slow computation of their
definition on tiny random models; every refusal is one line and exit code 2 before the scan; on the
tiny trained models every attack tells the memorized members apart; the warning that a TPR at a
low FPR rests on too few non-members reaches every view."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, GPT2Config

from memaudit.app.cli import main
from memaudit.common.errors import MemauditError
from memaudit.corpus.audit import AuditSet
from memaudit.corpus.tokenizer import load_tokenizer, train_tokenizer
from memaudit.probes.config import ATTACKS, DEFAULT_ATTACKS, EXTRA_PASS_ATTACKS, ScanConfig
from memaudit.probes.frequencies import (
    TokenFrequencies,
    count_frequencies,
    read_frequencies,
    vocab_sha256,
    write_frequencies,
)
from memaudit.probes.gradnorm import gradient_norms, plan_gradnorm
from memaudit.probes.membership import attack_scores
from memaudit.probes.metrics import sequence_row
from memaudit.probes.recall import conditional_nll, recall_prefix
from memaudit.probes.rmia import rmia_scores
from memaudit.probes.scoring import score_sequences
from memaudit.probes.suite import load_suite
from tests.helpers import ARCHS, assert_one_line_error, results, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _sequences(n: int, seed: int, vocab: int = 128, low: int = 5, high: int = 30) -> list[list[int]]:
    """Token sequences of different lengths, each starting with the boundary token 0."""
    rng = np.random.default_rng(seed)
    return [[0, *rng.integers(1, vocab, rng.integers(low, high)).tolist()] for _ in range(n)]


def _nll_by_hand(model, sequence: list[int], before: list[int] = ()) -> float:
    """Mean NLL of sequence[1:], the sequence after `before`, from one plain forward of the whole."""
    ids = torch.tensor([[*before, *sequence]])
    with torch.no_grad():
        logp = model(ids).logits[0].float().log_softmax(-1)
    start = len(before)
    return float(np.mean([-logp[start + j - 1, sequence[j]].item() for j in range(1, len(sequence))]))


# DC-PDD -----------------------------------------------------------------------------------


def test_dcpdd_equals_its_definition_on_a_tiny_model():
    model = tiny_model("gpt2")
    sequences = _sequences(6, seed=1)
    counts = np.random.default_rng(2).integers(0, 50, 128)
    counts[5:9] = 0  # unseen tokens: smoothed, never a zero frequency
    freq = (counts + 1) / (counts.sum() + 128)
    scored = score_sequences(model, sequences, pad_id=0)
    for seq, s in zip(sequences, scored):
        got = attack_scores(s, "x", 0.2, ("dcpdd",), tokens=seq[1:], frequencies=freq, dcpdd_a=0.05)["dcpdd"]
        with torch.no_grad():
            probs = model(torch.tensor([seq])).logits[0].float().softmax(-1)
        seen, alphas = set(), []
        for j in range(1, len(seq)):
            if seq[j] not in seen:
                seen.add(seq[j])
                alphas.append(min(probs[j - 1, seq[j]].item() * math.log(1 / freq[seq[j]]), 0.05))
        assert got == pytest.approx(sum(alphas) / len(alphas), rel=1e-4)


def test_frequency_files_round_trip_and_refuse_another_tokenizer(tiny_data, tmp_path):
    tok = load_tokenizer(tiny_data / "tokenizer")
    texts = [r["text"] for r in AuditSet.load(tiny_data).train if r["kind"] == "natural"][:20]
    freqs = count_frequencies(tok, texts, source="twenty texts")
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    assert freqs.counts.sum() == sum(len(i) for i in ids) and freqs.counts[ids[0][0]] >= 1
    write_frequencies(freqs, tmp_path / "f.json")
    again = read_frequencies(tmp_path / "f.json")
    assert (again.counts == freqs.counts).all() and again.vocab_sha256 == vocab_sha256(tok)
    again.check_tokenizer(tok, "model")
    other = train_tokenizer(texts * 3, 300)
    with pytest.raises(MemauditError, match="counted with another tokenizer"):
        again.check_tokenizer(other, "model")
    doc = json.loads((tmp_path / "f.json").read_text())
    for broken, problem in [
        ({**doc, "format": "csv"}, "not a memaudit token-frequency file"),
        ({**doc, "counts": [1, -2]}, "whole numbers"),
        ({**doc, "counts": doc["counts"][:-1]}, "entries but vocab_size"),
    ]:
        (tmp_path / "bad.json").write_text(json.dumps(broken))
        with pytest.raises(MemauditError, match=problem):
            read_frequencies(tmp_path / "bad.json")


# ReCaLL -----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_recall_equals_a_full_forward_after_the_prefix(arch):
    """The prefix's cached keys and values, reused across batches of right-padded texts, give what
    one plain forward of prefix + text gives."""
    model = tiny_model(arch)
    sequences = _sequences(5, seed=3)
    prefix = recall_prefix(_sequences(4, seed=4), room=20)
    assert len(prefix) == 20
    got = conditional_nll(model, prefix, sequences, pad_id=0, max_batch_tokens=100)
    assert got == pytest.approx([_nll_by_hand(model, s, prefix) for s in sequences], rel=1e-4, abs=1e-5)


def test_recall_prefix_is_the_last_tokens_of_the_joined_documents():
    assert recall_prefix([[0, 1, 2], [0, 3], [0, 4, 5]], 4) == [0, 3, 0, 4, 5][-4:]
    assert recall_prefix([[0, 1]], 10) == [0, 1]


# GradNorm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_gradnorm_equals_a_backward_per_text(arch):
    """Batched per-sample gradients (torch.func) against one backward per text: the mean over the
    parameter tensors of each tensor's gradient L2 norm (OpenUnlearning's definition)."""
    model = tiny_model(arch)
    attention = model.config._attn_implementation
    sequences = _sequences(5, seed=5)
    got = gradient_norms(model, sequences, pad_id=0, chunk=2)
    assert model.config._attn_implementation == attention  # put back after the pass
    expected = []
    for seq in sequences:
        model.zero_grad()
        ids = torch.tensor([seq])
        logp = model(ids).logits[0, :-1].float().log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
        (-logp.mean()).backward()
        expected.append(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]).mean().item())
    model.zero_grad()
    assert got == pytest.approx(expected, rel=1e-4)


def test_gradnorm_is_refused_when_one_text_does_not_fit():
    model = tiny_model("gpt2")
    assert plan_gradnorm(model, 64, free=8 << 30).chunk >= 1
    with pytest.raises(MemauditError, match="gradnorm: the gradient of one text"):
        plan_gradnorm(model, 64, free=1 << 20)


# RMIA -------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma, a", [(1.0, 0.3), (2.0, 1.0), (0.5, 0.0)])
def test_rmia_equals_its_definition_on_tiny_models(gamma, a):
    """Pr(x|θ) = exp(-mean NLL), Pr(x) = ((1 + a) mean_ref Pr(x|ref) + (1 - a)) / 2, the score the
    fraction of population z with LR(x) / LR(z) > γ, computed text by text."""
    target, refs = tiny_model("gpt2"), [tiny_model("llama"), tiny_model("qwen2")]
    xs, zs = _sequences(7, seed=6), _sequences(9, seed=7)

    def nll(model, seqs):
        return [_nll_by_hand(model, s) for s in seqs]

    got = rmia_scores(
        nll(target, xs), [nll(r, xs) for r in refs], nll(target, zs), [nll(r, zs) for r in refs], gamma=gamma, a=a
    )

    def lr(seq) -> float:
        pr_ref = sum(math.exp(-_nll_by_hand(r, seq)) for r in refs) / len(refs)
        return math.exp(-_nll_by_hand(target, seq)) / (((1 + a) * pr_ref + (1 - a)) / 2)

    lr_x, lr_z = [lr(x) for x in xs], [lr(z) for z in zs]
    expected = [sum(x / z > gamma for z in lr_z) / len(zs) for x in lr_x]
    assert got == pytest.approx(expected)


# zlib of a text cut to the context -------------------------------------------------------


def test_zlib_of_a_cut_text_compresses_the_tokens_that_were_scored():
    import zlib

    class Decoder:
        def decode(self, ids):
            return "scored part"

    scored = score_sequences(tiny_model("gpt2"), [[0, 5, 6, 7]], pad_id=0)[0]
    row = {"doc_id": 1, "kind": "heldout", "repeats": 0, "text": "scored part, and more that was cut " * 30}
    cfg = ScanConfig(mia_attacks=("zlib",))
    whole, cut = (sequence_row(row, [0, 5, 6, 7], scored, cfg, Decoder(), truncated=t) for t in (False, True))
    nll = -scored.logp.astype(np.float64).mean()
    assert cut["mia_zlib"] == pytest.approx(-nll / len(zlib.compress(b"scored part")))
    assert whole["mia_zlib"] == pytest.approx(-nll / len(zlib.compress(row["text"].encode())))


# Suites and the low-FPR warning ----------------------------------------------------------


def test_default_suites_run_the_one_pass_attacks_and_full_runs_all():
    assert load_suite("default").mia_attacks == DEFAULT_ATTACKS == load_suite("ci").mia_attacks
    assert not set(EXTRA_PASS_ATTACKS) & set(DEFAULT_ATTACKS)
    assert load_suite("full").mia_attacks == ATTACKS


def test_too_few_nonmembers_for_a_low_fpr_is_noted_and_shown_in_every_view(tmp_path):
    from memaudit.report.console import print_summary
    from memaudit.report.render import html, markdown, summary_frame
    from memaudit.report.verdict import note_warnings

    doc = results("standard", 1.0)  # 8 non-members
    entry = doc["metrics"]["privacy.mia.loss.tpr@0.1%fpr"]
    assert "8 non-members are too few" in entry["note"] and "1,000" in entry["note"]
    assert "note" not in doc["metrics"]["privacy.mia.loss.auc"]
    lines = note_warnings(doc)
    assert len(lines) == 2 and "privacy.mia.*.tpr@1%fpr" in lines[0] + lines[1]
    assert all(line in markdown(doc) for line in lines)
    assert "Some numbers rest on too few texts" in html(doc)
    csv = summary_frame(doc)
    assert csv[csv.metric == "privacy.mia.rmia.tpr@1%fpr"].note.str.contains("too few").all()
    assert csv[csv.metric == "privacy.mia.rmia.auc"].note.isna().all()
    from rich.console import Console

    console = Console(record=True, width=400)
    print_summary(doc, console)
    assert "too few for a true-positive rate" in console.export_text()


# Refusals: one line and exit code 2, before the scan --------------------------------------


@pytest.fixture(scope="module")
def random_model(tiny_data, tmp_path_factory):
    """A tiny random GPT-2 with the tiny data dir's tokenizer (context 256), and a copy with a 64-token context."""
    tok = load_tokenizer(tiny_data / "tokenizer")
    dirs = {}
    for name, positions in (("ctx256", 256), ("ctx64", 64)):
        torch.manual_seed(0)
        config = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=positions, vocab_size=len(tok))
        out = tmp_path_factory.mktemp(name)
        AutoModelForCausalLM.from_config(config).save_pretrained(out)
        tok.save_pretrained(out)
        dirs[name] = out
    return dirs


def _scan(*args):
    return CliRunner().invoke(main, ["scan", "model", *[str(a) for a in args]])


def _suite(tmp_path, *attacks: str):
    path = tmp_path / "attacks.yaml"
    path.write_text(f"mia_attacks: [{', '.join(attacks)}]\nexposure_candidates: 0\nbootstrap: 0\n")
    return path


def test_refusals_are_one_line_before_the_scan(random_model, tiny_data, tmp_path, monkeypatch):
    base = ("--data", tiny_data, "--out", tmp_path / "out")
    no_room = _scan(random_model["ctx64"], *base, "--suite", _suite(tmp_path, "loss", "recall"))
    assert_one_line_error(no_room, "recall: no room in the model's context (64 tokens)")

    other = tmp_path / "other-tokenizer"
    texts = [r["text"] for r in AuditSet.load(tiny_data).train][:60]
    AutoModelForCausalLM.from_config(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=600)).save_pretrained(other)
    train_tokenizer(texts, 300).save_pretrained(other)
    wrong_ref = _scan(random_model["ctx256"], *base, "--rmia-reference", other)
    assert_one_line_error(wrong_ref, "rmia reference", "its tokenizer is not the scanned model's")
    itself = _scan(random_model["ctx256"], *base, "--rmia-reference", random_model["ctx256"])
    assert_one_line_error(itself, "is the model being scanned")

    freqs = TokenFrequencies(np.ones(512, dtype=np.int64), "0" * 64, 1, "elsewhere")
    write_frequencies(freqs, tmp_path / "freqs.json")
    wrong_freqs = _scan(random_model["ctx256"], *base, "--frequencies", tmp_path / "freqs.json")
    assert_one_line_error(wrong_freqs, "freqs.json: token frequencies counted with another tokenizer")
    unused = _scan(random_model["ctx256"], *base, "--suite", _suite(tmp_path, "loss"), "--frequencies", tmp_path / "f")
    assert_one_line_error(unused, "token frequencies are given but the suite", "does not run dcpdd")

    monkeypatch.setattr("memaudit.probes.gradnorm.available_memory", lambda device: 1 << 20)
    too_big = _scan(random_model["ctx256"], *base, "--suite", _suite(tmp_path, "loss", "gradnorm"))
    assert_one_line_error(too_big, "gradnorm: the gradient of one text", "GiB free")
    assert not (tmp_path / "out").exists()


# On the tiny trained models --------------------------------------------------------------


@pytest.fixture(scope="module")
def attacked(tiny_models, tiny_data) -> dict:
    """The standard model scanned with every attack; the no-repeats model, which never saw the
    members, as RMIA's reference (in an audit it would be a model of another seed, not the oracle)."""
    from memaudit.probes.scan import scan

    config = ScanConfig(prefix_lens=(32,), exposure_candidates=0, bootstrap=0, mia_attacks=ATTACKS)
    reference = [tiny_models["no-repeats"]]
    return scan(tiny_models["standard"], data_dir=tiny_data, config=config, rmia_references=reference, emitted=False)


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a != "ref"])
def test_every_attack_tells_memorized_members_apart(attacked, attack):
    auc = attacked["metrics"][f"privacy.mia.{attack}.auc"]
    assert auc["value"] > 0.85 and auc["by_repeats"]["64"]["value"] == 1.0, auc
    assert all(f"mia_{attack}" in r for r in attacked["sequences"])


def test_new_attacks_reach_the_views_and_the_gates(attacked, tmp_path):
    from memaudit.report.gate import evaluate_gates
    from memaudit.report.plots import roc_svg
    from memaudit.report.render import write_run

    write_run(attacked, tmp_path / "run")
    columns = set(pd.read_csv(tmp_path / "run" / "sequences.csv").columns)
    assert {f"mia_{a}" for a in ATTACKS if a != "ref"} <= columns
    assert roc_svg(attacked) is not None
    (gate,) = evaluate_gates(attacked, ["privacy.mia.rmia.auc>0.8"])
    assert not gate.passed and gate.value > 0.8
    used = attacked["attack_inputs"]
    assert used["rmia"]["population"] == 40 and used["recall"]["prefix_tokens"] > 0 and used["dcpdd"]["documents"]
