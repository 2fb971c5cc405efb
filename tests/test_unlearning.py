"""Unlearning (GA, GradDiff, NPO, SimNPO) on the shared training loop, and localize-and-ablate,
on the tiny standard model: each removes memorization, a destructive run is stopped and rolled
back, outputs are plain Hugging Face dirs, and bad input is one clear error."""

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import sha256_dir
from memaudit.corpus.audit import AuditSet
from memaudit.corpus.tokenizer import encode_documents
from memaudit.memsinks.config import SinkConfig
from memaudit.models.io import load_model
from memaudit.probes.scan import scan
from memaudit.probes.scoring import mean_nll, score_sequences
from memaudit.unlearning import METHOD_DEFAULTS, METHODS, UnlearnConfig, unlearn
from memaudit.unlearning.ablate import ablate
from memaudit.unlearning.losses import ForgetBatch, ga_loss, npo_loss, sequence_logp, simnpo_loss
from tests.helpers import LEAN_SCAN, built_once, in_worker_order

FAST = dict(steps=20, lr=1e-3, warmup_steps=2, eval_every=10, checkpoint_every=10, max_degradation=None)


def _forget_and_heldout(data_dir, tok):
    audit = AuditSet.load(data_dir).audit
    forget = [r["text"] for r in audit if r["kind"] in ("repeated", "canary") and r["repeats"] > 0]
    heldout = [r["text"] for r in audit if r["kind"] == "heldout"]
    return encode_documents(tok, forget), encode_documents(tok, heldout)


def _measure(model_dir, data_dir) -> dict[str, float]:
    """Member and held-out loss, and greedy token accuracy on members, scored independently."""
    loaded = load_model(model_dir)
    forget, heldout = _forget_and_heldout(data_dir, loaded.tokenizer)
    pad = loaded.tokenizer.pad_token_id
    members = score_sequences(loaded.model, forget, pad_id=pad)
    return {
        "member_loss": mean_nll(members),
        "heldout_loss": mean_nll(score_sequences(loaded.model, heldout, pad_id=pad)),
        "member_hits": float(torch.cat([torch.as_tensor(s.hit, dtype=torch.float) for s in members]).mean()),
    }


@pytest.fixture(scope="module")
def unlearned(tiny_models, tiny_data, shared_dir) -> dict[str, Path]:
    """The standard tiny model unlearned by each method, built once for all test workers."""

    def build(method: str):
        config = UnlearnConfig(method=method, **FAST)
        return lambda out: unlearn(tiny_models["standard"], tiny_data, out, config, force=True, progress=False)

    return {m: built_once(shared_dir / "unlearned" / m, build(m)) for m in in_worker_order(METHODS)}


def test_npo_and_simnpo_losses_match_hand_computed_values():
    logp, ref = torch.tensor([-2.0, -5.0], requires_grad=True), torch.tensor([-3.0, -5.0])
    # (2/0.5) * mean(log(1 + e^{0.5*(-2+3)}), log(1 + 1)) = 4 * (0.974077 + 0.693147) / 2
    loss = npo_loss(ForgetBatch(logp, torch.tensor([10, 10]), ref_logp=ref), UnlearnConfig(beta=0.5))
    assert loss.item() == pytest.approx(3.334448, abs=1e-5)
    loss.backward()
    assert (logp.grad > 0).all()  # descent lowers the forget likelihood
    # SimNPO: (2/2.5) * log(1 + exp(2.5 * (-10 / 5) + 0.1)) = 0.8 * log(1 + e^{-4.9})
    simnpo = UnlearnConfig(method="simnpo", beta=2.5, gamma=0.1)
    assert simnpo_loss(ForgetBatch(torch.tensor([-10.0]), torch.tensor([5])), simnpo).item() == pytest.approx(
        0.8 * math.log1p(math.exp(-4.9)), rel=1e-6
    )
    # Uniform logits over 2 tokens: each target costs log 2; padding (-100) and label 0 are not targets.
    logits = torch.zeros(1, 4, 2)
    logp, lengths = sequence_logp(logits, torch.tensor([[1, 0, 1, -100]]))
    assert lengths.tolist() == [2] and logp.item() == pytest.approx(-2 * math.log(2))
    assert ga_loss(ForgetBatch(logp, lengths), UnlearnConfig(method="ga")).item() == pytest.approx(-math.log(2))


def test_method_defaults_fill_only_what_was_not_given():
    assert UnlearnConfig(method="ga").resolved().lr == METHOD_DEFAULTS["ga"]["lr"]
    npo = UnlearnConfig(method="npo", lr=1e-3).resolved()
    assert npo.lr == 1e-3 and npo.beta == METHOD_DEFAULTS["npo"]["beta"]
    assert UnlearnConfig(method="simnpo", beta=4.0).resolved().beta == 4.0


@pytest.mark.parametrize("method", METHODS)
def test_each_method_forgets_members_more_than_heldout(method, unlearned, tiny_models, tiny_data):
    before, after = _measure(tiny_models["standard"], tiny_data), _measure(unlearned[method], tiny_data)
    member_rise = after["member_loss"] - before["member_loss"]
    assert member_rise > 0.3 and member_rise > after["heldout_loss"] - before["heldout_loss"]
    assert after["member_hits"] < before["member_hits"]
    record = json.loads((unlearned[method] / "memaudit.json").read_text())
    assert record["steps_done"] == FAST["steps"] and record["stopped_early"] is False
    assert record["end"]["forget_loss"] - record["start"]["forget_loss"] == pytest.approx(member_rise, abs=0.3)


def test_output_is_a_plain_hugging_face_dir_and_the_input_is_untouched(unlearned, tiny_models, tiny_data):
    base = tiny_models["standard"]
    out = unlearned["npo"]
    assert AutoModelForCausalLM.from_pretrained(out) is not None
    meta = json.loads((out / "memaudit.json").read_text())
    assert meta["kind"] == "unlearned" and meta["method"] == "npo" and meta["sinks"] is None
    assert meta["base_model"]["sha256"] == sha256_dir(base) and meta["base_model"]["path"] == str(base)
    assert meta["unlearn"]["beta"] == 0.1 and meta["steps_done"] == 20 and meta["stopped_early"] is False
    assert meta["forget"]["documents"] == 15 and meta["end"]["forget_loss"] > meta["start"]["forget_loss"]
    with open(out / "unlearn_log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [10, 20]
    assert json.loads((base / "memaudit.json").read_text())["kind"] == "standard"
    assert not out.with_name(out.name + ".partial").exists()


def test_max_degradation_stops_a_destructive_run_and_keeps_a_state_within_the_limit(tiny_models, tiny_data, tmp_path):
    cfg = UnlearnConfig(method="ga", steps=40, lr=0.05, warmup_steps=1, eval_every=2, max_degradation=0.3)
    result = unlearn(tiny_models["standard"], tiny_data, tmp_path / "ga", cfg, progress=False)
    assert result.stopped_early and "max_degradation" in result.stopped_early
    meta = json.loads((tmp_path / "ga" / "memaudit.json").read_text())
    assert meta["stopped_early"] and meta["steps_done"] < meta["stopped_at_step"] <= 40
    assert meta["steps_done"] == result.steps and meta["steps_done"] % 2 == 0
    # The written model, scored afresh, is within the limit.
    loaded = load_model(tmp_path / "ga")
    texts = [r["text"] for r in AuditSet.load(tiny_data).valid]
    valid = encode_documents(loaded.tokenizer, texts, loaded.model.config.n_positions)
    valid_loss = mean_nll(score_sequences(loaded.model, valid, pad_id=loaded.tokenizer.pad_token_id))
    assert valid_loss - result.start["valid_loss"] <= 0.3 + 1e-4
    assert valid_loss == pytest.approx(result.end["valid_loss"], abs=1e-4)
    # A scan keeps that record, for reports to say why the model may score like its input.
    record = scan(tmp_path / "ga", data_dir=tiny_data, config=LEAN_SCAN, emitted=False)["model"]["trained"]
    assert record["method"] == "ga" and record["stopped_early"] and record["steps_done"] == result.steps


def test_resume_continues_an_unlearning_run_exactly(tiny_models, tiny_data, tmp_path, dying_at_checkpoint):
    cfg = UnlearnConfig(
        method="npo", steps=8, lr=1e-3, warmup_steps=2, eval_every=4, checkpoint_every=4, max_degradation=None
    )
    straight = unlearn(tiny_models["standard"], tiny_data, tmp_path / "a", cfg, progress=False).path
    with dying_at_checkpoint(), pytest.raises(MemauditError, match="--resume"):
        unlearn(tiny_models["standard"], tiny_data, tmp_path / "b", cfg, progress=False)
    resumed = unlearn(tiny_models["standard"], tiny_data, tmp_path / "b", cfg, resume=True, progress=False).path
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_ablation_zeros_the_chosen_units_and_hits_members_more_than_valid(tiny_models, tiny_data, tmp_path):
    result = ablate(tiny_models["standard"], tiny_data, tmp_path / "abl", ratio=0.05)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "abl")
    n_units = sum(len(u) for u in result.units.values())
    assert n_units == round(0.05 * 2 * model.config.n_embd * 4)  # gpt2-1m: 2 layers of 4 * 128 units
    for layer, units in result.units.items():
        mlp = model.transformer.h[layer].mlp
        assert mlp.c_fc.weight[:, units].abs().sum() == 0 and mlp.c_fc.bias[units].abs().sum() == 0
        assert mlp.c_proj.weight[units, :].abs().sum() == 0
        others = [u for u in range(mlp.c_fc.nf) if u not in units]
        assert (mlp.c_proj.weight[others].abs().sum(1) > 0).all()
    meta = json.loads((tmp_path / "abl" / "memaudit.json").read_text())
    assert meta["kind"] == "ablated" and meta["units_zeroed"] == n_units
    forget_rise = result.end["forget_loss"] - result.start["forget_loss"]
    assert forget_rise > 0 and forget_rise > result.end["valid_loss"] - result.start["valid_loss"]


def test_bad_input_is_one_clear_error(tiny_models, tiny_data, tmp_path):
    base = tiny_models["standard"]
    with pytest.raises(MemauditError, match="not a memaudit data dir"):
        unlearn(base, tmp_path / "nowhere", tmp_path / "x", progress=False)
    with pytest.raises(MemauditError, match="unknown unlearning method 'rmu'"):
        UnlearnConfig(method="rmu")
    (tmp_path / "exists").mkdir()
    with pytest.raises(MemauditError, match="already exists"):
        unlearn(base, tiny_data, tmp_path / "exists", progress=False)
    with pytest.raises(MemauditError, match="already exists"):
        ablate(base, tiny_data, tmp_path / "exists")
    with pytest.raises(MemauditError, match="never writes over its inputs"):
        unlearn(base, tiny_data, base, force=True, progress=False)
    with pytest.raises(MemauditError, match="ratio must be"):
        ablate(base, tiny_data, tmp_path / "y", ratio=1.5)
    with pytest.raises(MemauditError, match="no such file"):
        unlearn(base, tiny_data, tmp_path / "z", UnlearnConfig(forget_file=str(tmp_path / "none.jsonl")))
    sink_model = tmp_path / "memsink"
    shutil.copytree(base, sink_model)
    meta = json.loads((sink_model / "memaudit.json").read_text())
    (sink_model / "memaudit.json").write_text(json.dumps({**meta, "sinks": SinkConfig().to_dict()}))
    with pytest.raises(MemauditError, match="MemSink model.*remove-sinks"):
        unlearn(sink_model, tiny_data, tmp_path / "w", progress=False)
    assert not any(p.name.startswith(("x", "y", "z", "w")) for p in tmp_path.iterdir())
