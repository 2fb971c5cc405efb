"""Sink masks and the sink hooks: the reference hash bit for bit, the disjoint scheme, and every evaluation mode
against a hand-written masked forward on each supported architecture."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, BloomConfig

from memaudit.common.errors import MemauditError
from memaudit.memsinks import masks as masks_module
from memaudit.memsinks import sinks as sinks_module
from memaudit.memsinks.config import EVAL_MODES, SinkConfig
from memaudit.memsinks.masks import disjoint_mask, group_of, hash_mask
from memaudit.memsinks.sinks import Sinks
from memaudit.training.config import TrainConfig
from tests.helpers import ARCHS, DOWN_PROJECTIONS, TOKENS, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

DOC_IDS = torch.tensor([[5] * 4 + [77] * 8, [2**40 + 3] * 6 + [5] * 6])


def numpy_hash_mask(ids: list[int], n_sink: int, p: float) -> np.ndarray:
    """docs/memsinks.md's reference, written independently: numpy int64 arrays wrap silently on overflow."""
    a, m, base = 1588635695, 4294967291, 65536
    powers = np.cumprod(np.concatenate([[1], np.full(n_sink - 1, a)]).astype(np.int64))  # a**j, wrapped
    c = np.remainder(powers, m)
    h = np.remainder((np.asarray(ids, dtype=np.int64)[:, None] * base) * c[None, :], m)
    return h / m < p


def test_multipliers_wrap_like_python_int64() -> None:
    wrap = lambda x: (x + 2**63) % 2**64 - 2**63  # noqa: E731
    expected = [wrap(1588635695**j) % 4294967291 for j in range(40)]
    assert masks_module._multipliers(40).tolist() == expected


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_hash_mask_matches_numpy_reference(p: float) -> None:
    ids = [1, 2, 3, 12345, 4294967291, 2**40 + 7, 2**47 + 1, 2**62 + 1, 2**63 - 1, 7_346_118_052_091_773_411]
    assert np.array_equal(hash_mask(torch.tensor(ids), 257, p).numpy(), numpy_hash_mask(ids, 257, p))


def test_hash_mask_golden_values() -> None:
    """Pinned output, so a change to the hash (or to torch's integer arithmetic) cannot pass unnoticed."""
    active = [hash_mask(torch.tensor([i]), 24, 0.3)[0].nonzero().squeeze(1).tolist() for i in (1, 2, 1000)]
    assert active == [[0, 9, 13, 15, 17, 18, 20], [0, 9, 13, 15, 16, 17, 18, 20, 21], [0, 4, 5, 6, 9, 10, 12, 22]]
    assert np.array_equal(
        hash_mask(torch.tensor([1, 2, 1000]), 24, 0.3).numpy(), numpy_hash_mask([1, 2, 1000], 24, 0.3)
    )


def test_hash_mask_density_and_determinism() -> None:
    ids = torch.arange(1, 1001)
    masks = hash_mask(ids, 300, 0.3)
    assert abs(masks.float().mean().item() - 0.3) < 0.02
    assert torch.equal(masks, hash_mask(ids, 300, 0.3))
    assert torch.equal(masks[[41, 7]], hash_mask(ids[[41, 7]], 300, 0.3))  # a mask does not depend on its batch
    assert len({tuple(row.tolist()) for row in masks}) == len(ids)


@pytest.mark.parametrize("bad", [0, -3, 2**48, 5 * 2**48])
def test_hash_mask_refuses_ids_that_switch_every_sink_on(bad: int) -> None:
    with pytest.raises(MemauditError, match=f"document id {bad} is not allowed"):
        hash_mask(torch.tensor([7, bad]), 50, 0.3)


def test_hash_mask_refuses_float_ids() -> None:
    with pytest.raises(MemauditError, match="1-D integer tensor"):
        hash_mask(torch.tensor([1.0, 2.0]), 50, 0.3)


@settings(max_examples=200, deadline=None)
@given(doc_id=st.integers(min_value=1, max_value=2**63 - 1))
def test_hash_mask_properties(doc_id: int) -> None:
    low = doc_id % 2**48
    if low == 0:
        with pytest.raises(MemauditError):
            hash_mask(torch.tensor([doc_id]), 10, 0.3)
        return
    mask = hash_mask(torch.tensor([doc_id]), 2000, 0.3)
    assert torch.equal(mask, hash_mask(torch.tensor([doc_id]), 2000, 0.3))
    assert torch.equal(mask, hash_mask(torch.tensor([low]), 2000, 0.3))  # id * 65536 wraps: only id mod 2**48 counts
    # Degenerate corners of the reference hash: ids whose low 48 bits are a multiple of 2**45 (at most 8 distinct
    # hash values, density 0.37-0.5) or a small multiple of M (density near 0). A content hash lands there with
    # odds of about 2**-45.
    assume(low % 2**45 != 0 and low % 4294967291 != 0)
    assert abs(mask.float().mean().item() - 0.3) < 0.06


def test_disjoint_mask_slices() -> None:
    ids = torch.arange(1, 401)
    groups, n_sink = 8, 203
    masks = disjoint_mask(ids, n_sink, 0.3, groups)
    group = group_of(ids, groups)
    assert torch.equal(group, ids % groups)
    overlap = (masks.float() @ masks.float().T) > 0
    assert not (overlap & (group[:, None] != group[None, :])).any()
    bounds = [g * n_sink // groups for g in range(groups + 1)]
    for g in range(groups):
        rows = masks[group == g]
        assert not rows[:, : bounds[g]].any() and not rows[:, bounds[g + 1] :].any()
        assert abs(rows[:, bounds[g] : bounds[g + 1]].float().mean().item() - 0.3) < 0.05
        assert len({tuple(r.tolist()) for r in rows}) == len(rows)  # ids of one group still differ
    assert torch.equal(masks, disjoint_mask(ids, n_sink, 0.3, groups))


def test_disjoint_mask_needs_a_unit_per_group() -> None:
    with pytest.raises(MemauditError, match="fewer than the 16 disjoint groups"):
        disjoint_mask(torch.tensor([1]), 10, 0.3, 16)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shared_fraction=1.0), "shared_fraction must be a finite number > 0 and < 1, got 1.0"),
        (dict(active_fraction=0), "active_fraction must be a finite number > 0 and < 1, got 0"),
        (dict(active_fraction="0.3"), "active_fraction must be a finite number"),
        (dict(active_fraction=float("nan")), "active_fraction must be a finite number"),
        (dict(scheme="random"), "unknown sink scheme 'random'; use one of hash, disjoint"),
        (dict(groups=0), "groups must be an integer from 1 to 65536, got 0"),
        (dict(groups=2.0), "groups must be an integer"),
    ],
)
def test_sink_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(MemauditError, match=message):
        SinkConfig(**kwargs)


def test_sink_config_round_trip() -> None:
    config = SinkConfig(shared_fraction=0.6, active_fraction=0.2, scheme="disjoint", groups=4)
    assert SinkConfig.from_dict(config.to_dict()) == config
    with pytest.raises(MemauditError, match="unknown sink config keys \\['g'\\]"):
        SinkConfig.from_dict({"g": 0.7})


def test_train_config_holds_one_sink_config() -> None:
    """`TrainConfig.sinks` is a SinkConfig, whether given as one or as memaudit.json's mapping, and
    memaudit.json records it as that same mapping."""
    config = SinkConfig(shared_fraction=0.6, scheme="disjoint", groups=4)
    for value in (config, config.to_dict()):
        assert TrainConfig(sinks=value).sinks == config
    assert asdict(TrainConfig(sinks=config))["sinks"] == config.to_dict()
    assert SinkConfig.from_dict(config) is config
    with pytest.raises(MemauditError, match="unknown sink config keys"):
        TrainConfig(sinks={"g": 0.7})


def test_sinks_parse_as_the_command_line_writes_them() -> None:
    assert SinkConfig.parse(None) is None and SinkConfig.parse("0.6,0.2", groups=4) == SinkConfig(0.6, 0.2, groups=4)
    assert SinkConfig.parse("0.7,0.3", sink_units="new:64").new_units == 64
    with pytest.raises(MemauditError, match=r"^sink_units new:N adds sink units: pass `sinks` G,P too$"):
        SinkConfig.parse(None, sink_units="new:64")


def manual_hidden(hidden: torch.Tensor, mode: str, n_shared: int, config: SinkConfig) -> torch.Tensor:
    """Each mode's definition, applied to one down projection input by slicing."""
    g, p = config.shared_fraction, config.active_fraction
    out = hidden.clone()
    if mode == "own":
        n_sink = hidden.shape[-1] - n_shared
        per_token = [[hash_mask(torch.tensor([i]), n_sink, p)[0] for i in row.tolist()] for row in DOC_IDS]
        out[..., n_shared:] *= torch.stack([torch.stack(row) for row in per_token]).to(hidden.dtype)
    elif mode == "mean":
        out[..., n_shared:] *= p
    else:
        out[..., n_shared:] = 0
        if mode == "off-rescaled":
            out[..., :n_shared] *= (g + p) / g
    return out


def manual_logits(arch: str, model: torch.nn.Module, mode: str, n_shared: int, config: SinkConfig) -> torch.Tensor:
    hook = lambda module, args: (manual_hidden(args[0], mode, n_shared, config),)  # noqa: E731
    handles = [down.register_forward_pre_hook(hook) for down in DOWN_PROJECTIONS[arch](model)]
    try:
        with torch.no_grad():
            return model(TOKENS).logits
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("arch", ARCHS)
def test_modes_equal_hand_masked_forward(arch: str) -> None:
    model = tiny_model(arch)
    with torch.no_grad():
        plain = model(TOKENS).logits
    config = SinkConfig()
    sinks = Sinks(model, config)
    width = DOWN_PROJECTIONS[arch](model)[0].weight.shape[0 if arch == "gpt2" else 1]
    assert (sinks.n_hidden, sinks.n_shared, sinks.n_sink) == (width, int(width * 0.7), width - int(width * 0.7))
    sinks.set_doc_ids(DOC_IDS)
    for mode in EVAL_MODES:
        sinks.mode = mode
        with torch.no_grad():
            got = model(TOKENS).logits
        sinks.remove()  # the hand-masked forward runs on the bare model
        expected = manual_logits(arch, model, mode, sinks.n_shared, config)
        sinks = Sinks(model, config)
        sinks.set_doc_ids(DOC_IDS)
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), mode
        assert not torch.allclose(got, plain, atol=1e-3), mode  # the masks really change the output


def test_own_mode_needs_doc_ids_and_matching_shape() -> None:
    model = tiny_model("gpt2")
    sinks = Sinks(model, SinkConfig())
    assert sinks.mode == "own"
    with pytest.raises(MemauditError, match="call Sinks.set_doc_ids"):
        model(TOKENS)
    sinks.set_doc_ids(DOC_IDS[:, :5])
    with pytest.raises(MemauditError, match=r"doc_ids of shape \(2, 5\) do not match a forward over \(2, 12\)"):
        model(TOKENS)
    sinks.set_doc_ids(None)
    with pytest.raises(MemauditError, match="call Sinks.set_doc_ids"):
        model(TOKENS)


def test_one_id_per_row_broadcasts_over_the_sequence() -> None:
    model = tiny_model("llama")
    sinks = Sinks(model, SinkConfig())
    row_ids = torch.tensor([[9], [2**50 + 1]])
    sinks.set_doc_ids(row_ids.expand(-1, TOKENS.shape[1]))
    with torch.no_grad():
        full = model(TOKENS).logits
    sinks.set_doc_ids(row_ids)
    with torch.no_grad():
        assert torch.equal(model(TOKENS).logits, full)
        model.generate(TOKENS, max_new_tokens=3, do_sample=False, pad_token_id=0)  # KV cache: one token a step


def test_unknown_mode_is_refused() -> None:
    sinks = Sinks(tiny_model("gpt2"), SinkConfig())
    with pytest.raises(MemauditError, match="unknown sink mode 'all'; use one of off, off-rescaled, mean, own"):
        sinks.mode = "all"


def test_per_id_masks_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    sinks = Sinks(tiny_model("gpt2"), SinkConfig())
    calls = []
    real = sinks_module.hash_mask
    monkeypatch.setattr(sinks_module, "hash_mask", lambda ids, *a: calls.append(len(ids)) or real(ids, *a))
    sinks.set_doc_ids(DOC_IDS)
    sinks.set_doc_ids(DOC_IDS.flip(0))
    sinks.set_doc_ids(torch.tensor([[5, 6]]))
    assert calls == [3, 1]
    assert torch.equal(sinks.mask_for_ids([77, 5]), real(torch.tensor([77, 5]), sinks.n_sink, 0.3))


@pytest.mark.parametrize("autocast", [False, True])
def test_bf16_activations_stay_bf16(autocast: bool) -> None:
    model = tiny_model("llama")
    if not autocast:
        model = model.to(torch.bfloat16)
    sinks = Sinks(model, SinkConfig())
    sinks.set_doc_ids(DOC_IDS)
    dtypes = []
    for down in DOWN_PROJECTIONS["llama"](model):  # runs after the sink hook
        down.register_forward_pre_hook(lambda module, args: dtypes.append(args[0].dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(TOKENS).logits
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert logits.dtype == torch.bfloat16


def test_training_step_reaches_only_active_sinks() -> None:
    model = tiny_model("gpt2").train()
    sinks = Sinks(model, SinkConfig())
    ids = torch.tensor([[3] * 12, [3] * 12])
    sinks.set_doc_ids(ids)
    model(TOKENS, labels=TOKENS).loss.backward()
    grad = DOWN_PROJECTIONS["gpt2"](model)[0].weight.grad  # Conv1D: [hidden, out]
    active = grad[sinks.n_shared :].abs().sum(1) > 0
    assert torch.equal(active, hash_mask(torch.tensor([3]), sinks.n_sink, 0.3)[0])
    assert (grad[: sinks.n_shared].abs().sum(1) > 0).all()


def test_remove_restores_the_plain_model() -> None:
    model = tiny_model("gpt_neox")
    with torch.no_grad():
        plain = model(TOKENS).logits
    sinks = Sinks(model, SinkConfig())
    sinks.mode = "off"
    sinks.remove()
    with torch.no_grad():
        assert torch.equal(model(TOKENS).logits, plain)


def test_unsupported_architecture_names_the_model_class() -> None:
    config = BloomConfig(n_layer=1, hidden_size=16, n_head=2, vocab_size=64)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(MemauditError, match="do not support BloomForCausalLM \\(model_type 'bloom'\\); supported"):
        Sinks(model, SinkConfig())


def test_too_narrow_mlp_is_refused() -> None:
    with pytest.raises(MemauditError, match="leaves 0 shared and 256 sink units"):
        Sinks(tiny_model("gpt2"), SinkConfig(shared_fraction=0.001))
    with pytest.raises(MemauditError, match="cannot hold 100 disjoint groups"):
        Sinks(tiny_model("gpt2"), SinkConfig(scheme="disjoint", groups=100))
