"""Routing the repeats to their sinks (`SinkConfig.route`, `sinks_for`): the loss on a repeated id (or on its later
copies) trains only its sink units. The gradients are checked against two ordinary backward passes (the whole loss, and the loss without the
routed targets), and the training run against what it must record and leave untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from memaudit.app.cli import main
from memaudit.common.errors import MemauditError
from memaudit.corpus.packing import PackedStream
from memaudit.memsinks import attach_sinks
from memaudit.memsinks.config import SinkConfig
from memaudit.memsinks.routing import SinkGradients, outside_mlps, split_token_loss
from memaudit.models.io import load_model
from tests.helpers import TOKENS, assert_one_line_error, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

# Per token of TOKENS [2, 12]: which document it belongs to, and whether that document is routed.
DOC_IDS = torch.tensor([[5] * 4 + [9] * 8, [9] * 3 + [11] * 9])
ROUTED = DOC_IDS == 9


def gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def sink_part(model: torch.nn.Module, sinks) -> dict[str, torch.Tensor]:
    """Per parameter: a bool mask of the entries that belong to sink units."""
    slices = {id(t): dim for t, dim in SinkGradients(sinks).slices}
    out = {}
    for name, p in model.named_parameters():
        mask = torch.zeros_like(p, dtype=torch.bool)
        if id(p) in slices:
            mask.narrow(slices[id(p)], sinks.n_shared, sinks.n_sink).fill_(True)
        out[name] = mask
    return out


@pytest.mark.parametrize(("arch", "scope"), [("gpt2", "model"), ("llama", "model"), ("gpt2", "mlp"), ("llama", "mlp")])
def test_routed_loss_reaches_only_what_its_scope_allows_and_the_rest_is_an_ordinary_backward(
    arch: str, scope: str
) -> None:
    """Sink slices get the whole loss's gradient; with scope "mlp" so does every tensor outside the MLPs; every
    other entry (scope "model": attention, embeddings, LM head, shared MLP units, the down projection's bias;
    scope "mlp": the shared MLP units and that bias) gets the gradient of the loss without the routed targets,
    exactly."""
    model = tiny_model(arch)  # in eval mode: no dropout, so the three forwards are the same function
    sinks = attach_sinks(model, SinkConfig())

    def forward():
        sinks.set_doc_ids(DOC_IDS)
        return split_token_loss(model(TOKENS).logits, TOKENS, ROUTED)

    kept, routed = forward()
    whole = gradients(model, kept + routed)
    kept, _ = forward()
    without = gradients(model, kept)

    model.zero_grad(set_to_none=True)
    kept, routed = forward()
    in_full = outside_mlps(model, sinks) if scope == "mlp" else []
    add = SinkGradients(sinks, in_full=in_full).of(routed)
    kept.backward()
    add()
    sink = sink_part(model, sinks)
    full = {id(p) for p in in_full}
    assert any(m.any() for m in sink.values())
    assert (scope == "mlp") == bool(full) and not full & {id(t) for t, _ in SinkGradients(sinks).slices}
    for name, p in model.named_parameters():
        expected = whole[name] if id(p) in full else torch.where(sink[name], whole[name], without[name])
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-7, msg=name)
    # The routed loss did move something: the sink slices differ from the loss without it.
    assert any(not torch.allclose(whole[n][m], without[n][m]) for n, m in sink.items() if m.any())


def test_split_loss_adds_up_to_the_models_own_loss_padding_included() -> None:
    model = tiny_model("gpt2")
    labels = TOKENS.clone()
    labels[1, 9:] = -100  # padding, which transformers' loss skips
    with torch.no_grad():
        out = model(TOKENS, labels=labels)
        kept, routed = split_token_loss(out.logits, labels, ROUTED)
        assert float(kept + routed) == pytest.approx(float(out.loss), rel=1e-6)
        alone, none = split_token_loss(out.logits, labels, torch.zeros_like(ROUTED))
    assert none is None and float(alone) == pytest.approx(float(out.loss), rel=1e-6)


def test_the_stream_marks_repeated_ids_and_later_copies() -> None:
    docs = [[1, 2, 3]] * 4
    stream = PackedStream(docs, [7, 8, 9, 10], [1, 3, 1, 2], eos_id=0, seq_len=4, seed=0)
    assert stream.is_repeated(np.array([[7, 8, 9, 10]])).tolist() == [[False, True, False, True]]
    # Per epoch, each id's first occurrence is not a later copy, and every other one is.
    blocks = stream.blocks_per_epoch
    for epoch in range(3):
        tokens, ids, later = stream.batch_with_copies(epoch * blocks, blocks)
        assert all((a == b).all() for a, b in zip((tokens, ids), stream.batch(epoch * blocks, blocks)))
        occurrences = ids.reshape(-1)[::4], later.reshape(-1)[::4]  # one row per occurrence: 3 tokens and <eos>
        seen = set()
        for doc_id, is_later in zip(*occurrences):
            assert is_later == (doc_id in seen)
            seen.add(doc_id)
        assert (later.reshape(-1, 4) == later.reshape(-1, 4)[:, :1]).all()  # a whole occurrence at once
    # Id noise gives copies fresh ids, seen once: they are not routed (the paper's test of wrong ids).
    noisy = PackedStream(docs, [7, 8, 9, 10], [1, 3, 1, 2], eos_id=0, seq_len=4, seed=0, id_noise=1.0)
    assert noisy.is_repeated(noisy.occurrence_ids).sum() == 0
    assert not noisy.batch_with_copies(0, noisy.blocks_per_epoch)[2].any()


def test_tokens_without_sinks_run_with_the_pool_off() -> None:
    model = tiny_model("gpt2")
    sinks = attach_sinks(model, SinkConfig())
    with torch.no_grad():
        sinks.set_doc_ids(DOC_IDS, without_sinks=~ROUTED)
        mixed = model(TOKENS).logits
        sinks.mode = "off"
        off = model(TOKENS).logits
        sinks.mode = "own"
        sinks.set_doc_ids(DOC_IDS)
        own = model(TOKENS).logits
    # Row 1 starts with routed tokens: with its own sinks there; the first row's first document has none.
    torch.testing.assert_close(mixed[1, :3], own[1, :3])
    torch.testing.assert_close(mixed[0, :4], off[0, :4])
    assert not torch.allclose(mixed[0, :4], own[0, :4])


def test_routing_settings_are_checked_and_need_sinks() -> None:
    with pytest.raises(MemauditError, match="unknown route .yes.; use one of none, all, copies"):
        SinkConfig(route="yes")
    with pytest.raises(MemauditError, match="unknown sinks_for .some.; use one of all, repeated"):
        SinkConfig(sinks_for="some")
    with pytest.raises(MemauditError, match="route says how repeats train their sinks: pass `sinks` G,P too"):
        SinkConfig.parse(None, route="all")
    with pytest.raises(MemauditError, match="unknown route_scope .head.; use one of model, mlp"):
        SinkConfig(route="all", route_scope="head")
    with pytest.raises(MemauditError, match="route_scope 'mlp' says what routing keeps a repeat from: set route too"):
        SinkConfig(route_scope="mlp")
    assert SinkConfig.parse("0.7,0.3", route="copies", sinks_for="repeated").route == "copies"


@pytest.mark.parametrize(
    ("route", "sinks_for", "scope"),
    [("all", "all", "model"), ("copies", "repeated", "model"), ("all", "all", "mlp"), ("planted", "repeated", "model")],
)
def test_train_routes_repeats_and_records_it(
    tiny_data: Path, tmp_path: Path, route: str, sinks_for: str, scope: str
) -> None:
    """A routed MemSink run trains, records its settings, and differs from the same run unrouted."""
    runner = CliRunner()
    common = ["train", "--data", str(tiny_data), "--arch", "gpt2-1m", "--steps", "3", "--batch-size", "2"]
    common += ["--precision", "fp32", "--threads", "1", "--eval-every", "3", "--sinks", "0.7,0.3"]
    routed_args = ["--route", route, "--sinks-for", sinks_for, "--route-scope", scope]
    for name, extra in (("routed", routed_args), ("plain", [])):
        result = runner.invoke(main, [*common, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "routed" / "memaudit.json").read_text())
    assert (meta["sinks"]["route"], meta["sinks"]["sinks_for"], meta["sinks"]["route_scope"]) == (
        route,
        sinks_for,
        scope,
    )
    assert np.isfinite(meta["final"]["train_loss"])
    routed, plain = (load_model(tmp_path / name).model for name in ("routed", "plain"))
    assert not torch.equal(routed.transformer.wte.weight, plain.transformer.wte.weight)


def test_routing_without_sinks_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "m"), "--steps", "2", "--route", "all"]
    )
    assert_one_line_error(result, "--route says how repeats train their sinks: pass --sinks G,P too")
    assert not (tmp_path / "m").exists()


def test_planted_routing_names_what_the_oracle_leaves_out(tiny_data: Path) -> None:
    """`route: planted` routes exactly the documents the no-repeats oracle is trained without, seen once or not."""
    from memaudit.corpus.audit import AuditSet, sink_id
    from memaudit.training.train import planted_ids

    data = AuditSet.load(tiny_data)
    planted = set(planted_ids(data).tolist())
    assert planted == {sink_id(r) for r in data.train if r["kind"] != "natural"}
    assert planted and planted.isdisjoint(sink_id(r) for r in data.train if r["kind"] == "natural")
