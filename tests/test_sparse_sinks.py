"""Sink designs beyond the paper's: the sparse scheme (each id k units of the pool, after NULLs), id noise at packing
time (the paper's Fig. 5c) and leave-one-out training (`exclude_ids`), the model a deletion is judged against."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, GPT2Config

from memaudit.app.cli import main
from memaudit.common.errors import MemauditError
from memaudit.corpus.audit import AuditSet
from memaudit.corpus.packing import PackedStream
from memaudit.corpus.tokenizer import load_tokenizer, train_tokenizer
from memaudit.memsinks import attach_sinks, save_sink_model
from memaudit.memsinks.config import SinkConfig
from memaudit.memsinks.masks import sparse_mask
from memaudit.memsinks.sinks import Sinks
from memaudit.memsinks.surgery import prune_sink_units, reattach_sinks
from memaudit.models.io import load_model
from memaudit.models.removal import hash_scheme_note
from memaudit.training.config import TrainConfig
from memaudit.training.train import training_stream
from tests.helpers import TOKENS, assert_one_line_error, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

SPARSE = SinkConfig(scheme="sparse", k=4)


def own_logits(model: torch.nn.Module, sinks: Sinks, doc_id: int) -> torch.Tensor:
    sinks.mode = "own"
    sinks.set_doc_ids(torch.full((TOKENS.shape[0], 1), doc_id))
    with torch.no_grad():
        return model(TOKENS).logits


# --- The sparse scheme ----------------------------------------------------------------------------------------------


def test_sparse_mask_golden_values() -> None:
    """Each id's k units, from the id alone: the lowest words of its SHAKE-128 stream. Pinned, so that a change to
    the function, which would give a saved model other masks, cannot pass unnoticed."""
    masks = sparse_mask(torch.tensor([1, 2, 7023589155075136280]), 64, 4)
    assert [m.nonzero().squeeze(1).tolist() for m in masks] == [[3, 7, 12, 46], [4, 13, 26, 53], [21, 50, 51, 61]]
    words = np.frombuffer(hashlib.shake_128(b"2").digest(8 * 64), dtype=">u8")
    assert sorted(np.argsort(words)[:4].tolist()) == [4, 13, 26, 53]


def test_sparse_masks_have_k_units_and_two_ids_share_about_k_squared_over_pool() -> None:
    ids = torch.arange(1, 401)  # sequential ids: the reference hash's masks of such ids are correlated, these are not
    masks = sparse_mask(ids, 154, 8)
    assert (masks.sum(1) == 8).all()
    assert torch.equal(masks, sparse_mask(ids, 154, 8))
    shared = (masks.float() @ masks.float().T)[~torch.eye(len(ids), dtype=torch.bool)]
    assert shared.mean().item() == pytest.approx(8 * 8 / 154, rel=0.1)
    with pytest.raises(MemauditError, match="pool of 3 units cannot give each id k = 4"):
        sparse_mask(ids, 3, 4)


def test_sparse_sinks_rebuild_bit_for_bit_after_save_and_load(tmp_path: Path) -> None:
    tok = train_tokenizer(["a tiny corpus for a tokenizer"] * 4, vocab_size=300)
    model = AutoModelForCausalLM.from_config(GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=len(tok))).eval()
    sinks = attach_sinks(model, SinkConfig(scheme="sparse", k=4, new_units=24))  # a pool beside the MLP's own units
    assert (sinks.n_shared, sinks.n_sink, sinks.active_fraction) == (256, 24, 4 / 24)
    with torch.no_grad():  # new units start with zero down-projection columns: give them some weight
        for block in model.transformer.h:
            block.mlp.c_proj.weight[256:].normal_()
    ids = [5, 17, 2**40 + 3]
    expected = {i: own_logits(model, sinks, i) for i in ids}
    assert not torch.allclose(expected[5], expected[17])
    sinks.mode = "off"
    save_sink_model(model, tok, tmp_path / "m", sinks)
    loaded = load_model(tmp_path / "m")
    assert loaded.sinks.config == sinks.config
    assert torch.equal(loaded.sinks.mask_for_ids(ids), sinks.mask_for_ids(ids))
    for i in ids:
        torch.testing.assert_close(own_logits(loaded.model, loaded.sinks, i), expected[i], atol=1e-6, rtol=0)


def test_mean_mode_scales_the_sparse_pool_by_k_over_pool() -> None:
    model = tiny_model("gpt2")
    sinks = Sinks(model, SPARSE)
    assert sinks.active_fraction == 4 / sinks.pool_size
    sinks.mode = "mean"
    with torch.no_grad():
        mean = model(TOKENS).logits
    sinks.remove()
    scale = torch.ones(sinks.n_hidden)
    scale[sinks.n_shared :] = 4 / sinks.pool_size
    handles = [b.mlp.c_proj.register_forward_pre_hook(lambda m, a: (a[0] * scale,)) for b in model.transformer.h]
    with torch.no_grad():
        torch.testing.assert_close(model(TOKENS).logits, mean, atol=1e-6, rtol=0)
    for h in handles:
        h.remove()


def test_a_pool_smaller_than_k_is_refused() -> None:
    with pytest.raises(
        MemauditError, match=r"sparse sink pool of 77 units cannot give each id k = 100 units; lower `k`"
    ):
        Sinks(tiny_model("gpt2"), SinkConfig(scheme="sparse", k=100))
    for bad in (0, 2.5, True):
        with pytest.raises(MemauditError, match="k must be an integer from 1"):
            SinkConfig(scheme="sparse", k=bad)


def test_deleting_one_id_drops_its_k_units_and_only_those_of_the_ids_sharing_them() -> None:
    model = tiny_model("gpt2")
    sinks = Sinks(model, SPARSE)
    others = list(range(100, 160))
    masks = sinks.mask_for_ids([7, *others])
    deleted = masks[0]
    untouched = [i for i, m in zip(others, masks[1:]) if not (m & deleted).any()]
    sharing = [i for i, m in zip(others, masks[1:]) if (m & deleted).any()]
    assert untouched and sharing
    before = {i: own_logits(model, sinks, i) for i in (7, untouched[0], sharing[0])}
    report = prune_sink_units(model, sinks, [7], keep_ids=others)
    assert report["removed"] == 4 and report["keep_ids_hit"] == len(sharing)
    assert report["keep_ids_sinks_removed_max"] == max((m & deleted).sum().item() / 4 for m in masks[1:])
    kept = reattach_sinks(model, report)
    assert not kept.mask_for_ids([7]).any()  # the deleted id runs with no sinks at all: as in mode off
    torch.testing.assert_close(own_logits(model, kept, untouched[0]), before[untouched[0]], atol=1e-6, rtol=0)
    assert kept.mask_for_ids([sharing[0]]).sum() == 4 - (masks[1 + others.index(sharing[0])] & deleted).sum()
    assert not torch.allclose(own_logits(model, kept, sharing[0]), before[sharing[0]], atol=1e-4)
    note = hash_scheme_note(report, [7])
    assert note.startswith("sparse scheme: the deletion removes 4 units") and f"{len(sharing)} of the" in note


def test_sparse_takes_new_units_from_scratch_and_other_schemes_do_not() -> None:
    assert TrainConfig(sinks=SinkConfig(scheme="sparse", new_units=64)).sinks.new_units == 64
    with pytest.raises(MemauditError, match="from scratch only the sparse scheme takes new units"):
        TrainConfig(sinks=SinkConfig(new_units=64))
    with pytest.raises(MemauditError, match="freeze_base keeps a pretrained model's weights"):
        TrainConfig(sinks=SinkConfig(scheme="sparse", new_units=64), freeze_base=True)


@pytest.mark.slow
def test_train_sparse_from_scratch_then_delete_one_member(tiny_data: Path, tmp_path: Path) -> None:
    """`train --sink-scheme sparse --sink-units new:N` from scratch, then `remove-sinks --ids` of one member (its k
    units, with a line on the ids sharing them) and of the whole pool (the base width again)."""
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])  # noqa: E731
    model = tmp_path / "sparse"
    trained = run(
        *("train", "--data", tiny_data, "--out", model, "--arch", "gpt2-1m", "--steps", 3, "--eval-every", 3),
        *("--sinks", "0.7,0.3", "--sink-scheme", "sparse", "--sink-k", 4, "--sink-units", "new:64"),
    )
    assert trained.exit_code == 0, trained.output
    meta = json.loads((model / "memaudit.json").read_text())
    assert (
        meta["sinks"]["scheme"] == "sparse"
        and meta["sinks"]["k"] == 4
        and meta["init"] == {"base_mlp": {"n_inner": None}}
    )
    assert meta["arch"] == "gpt2-1m"
    member = next(r["doc_id"] for r in AuditSet.load(tiny_data).train if r["kind"] == "repeated")
    pruned = run("remove-sinks", model, "--out", tmp_path / "forgot", "--ids", member)
    assert pruned.exit_code == 0, pruned.output
    assert (
        "MLP width 576 -> 572 (4 units" in pruned.output
        and "sparse scheme: the deletion removes 4 units" in pruned.output
    )
    assert load_model(tmp_path / "forgot").sinks.n_sink == 60
    removed = run("remove-sinks", model, "--out", tmp_path / "deployed")
    assert removed.exit_code == 0, removed.output
    assert (
        AutoModelForCausalLM.from_pretrained(tmp_path / "deployed").transformer.h[0].mlp.c_proj.weight.shape[0] == 512
    )


def test_train_refuses_a_sparse_pool_smaller_than_k(tiny_data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["train", "--data", str(tiny_data), "--out", str(tmp_path / "m"), "--arch", "gpt2-1m", "--steps", "2"]
        + ["--sinks", "0.7,0.3", "--sink-scheme", "sparse", "--sink-k", "1000"],
    )
    assert_one_line_error(result, "cannot give each id k = 1000 units; lower --sink-k")
    assert not (tmp_path / "m").exists()


# --- Id noise at packing time ---------------------------------------------------------------------------------------

DOCS = [np.random.default_rng(7).integers(1, 50, n).tolist() for n in (3, 19, 5, 11, 7, 4, 16, 9, 13, 6, 8, 10)]
REPEATS = [1, 1, 4, 1, 9, 1, 1, 2, 1, 1, 3, 1]
DOC_IDS = list(range(101, 113))


def stream_digest(stream: PackedStream, epochs: int = 3) -> str:
    digest = hashlib.sha256()
    for epoch in range(epochs):
        tokens, ids = stream.epoch_blocks(epoch)
        digest.update(tokens.tobytes() + ids.tobytes())
    return digest.hexdigest()


def test_no_id_noise_is_todays_stream_bit_for_bit() -> None:
    """The digest is the packed stream of the code before id noise existed."""
    expected = "8fc3b583ffa23a05004d1518c41516eec2e813290127b8a8d63dafac07dc0e57"
    rng = np.random.default_rng(7)
    docs = [rng.integers(1, 50, rng.integers(3, 20)).tolist() for _ in range(12)]
    for noise in ({}, {"id_noise": 0.0}):
        stream = PackedStream(docs, DOC_IDS, REPEATS, eos_id=0, seq_len=8, seed=5, **noise)
        assert stream_digest(stream) == expected


def test_full_id_noise_gives_every_copy_of_a_repeat_a_fresh_id() -> None:
    stream = PackedStream(DOCS, DOC_IDS, REPEATS, eos_id=0, seq_len=8, seed=5, id_noise=1.0)
    repeated = np.repeat(np.asarray(REPEATS) > 1, REPEATS)
    ids = stream.occurrence_ids
    assert (ids[~repeated] == np.repeat(DOC_IDS, REPEATS)[~repeated]).all()  # documents seen once keep their ids
    fresh = ids[repeated]
    assert len(set(fresh.tolist())) == len(fresh) == sum(r for r in REPEATS if r > 1)
    assert not set(fresh.tolist()) & set(DOC_IDS) and (fresh > 0).all() and (fresh % 2 == 1).all()
    # The same ids in every epoch and for the same seed; the tokens are those of today's stream.
    _, epoch_ids = stream.epoch_blocks(1)
    assert set(np.unique(epoch_ids)) <= set(ids.tolist())
    again = PackedStream(DOCS, DOC_IDS, REPEATS, eos_id=0, seq_len=8, seed=5, id_noise=1.0)
    assert (again.occurrence_ids == ids).all()
    other = PackedStream(DOCS, DOC_IDS, REPEATS, eos_id=0, seq_len=8, seed=6, id_noise=1.0)
    assert not (other.occurrence_ids[repeated] == fresh).any()
    plain = PackedStream(DOCS, DOC_IDS, REPEATS, eos_id=0, seq_len=8, seed=5)
    assert (stream.epoch_blocks(2)[0] == plain.epoch_blocks(2)[0]).all()


def test_partial_id_noise_moves_about_that_share_of_the_copies() -> None:
    stream = PackedStream([[1, 2]] * 3, [1, 2, 3], [2000, 1, 1000], eos_id=0, seq_len=4, seed=0, id_noise=0.3)
    moved = (stream.occurrence_ids != np.repeat([1, 2, 3], [2000, 1, 1000])).mean()
    assert moved == pytest.approx(0.3 * 3000 / 3001, abs=0.03)
    assert stream.occurrence_ids[2000] == 2  # seen once: never moved


def test_id_noise_is_checked_and_needs_sinks() -> None:
    with pytest.raises(MemauditError, match="id_noise must be a finite number from 0 to 1"):
        SinkConfig(id_noise=1.5)
    with pytest.raises(MemauditError, match="id_noise gives sinks wrong ids: pass `sinks` G,P too"):
        SinkConfig.parse(None, id_noise=0.1)
    assert SinkConfig.parse("0.7,0.3", id_noise=0.1).id_noise == 0.1


def test_id_noise_reaches_the_training_stream(tiny_data: Path) -> None:
    data, tok = AuditSet.load(tiny_data), load_tokenizer(tiny_data / "tokenizer")
    plain = training_stream(data, tok, TrainConfig())
    quiet = training_stream(data, tok, TrainConfig(sinks=SinkConfig()))
    noisy = training_stream(data, tok, TrainConfig(sinks=SinkConfig(id_noise=0.5)))
    assert stream_digest(quiet, 2) == stream_digest(plain, 2)
    assert (noisy.epoch_blocks(0)[0] == plain.epoch_blocks(0)[0]).all()
    assert not (noisy.epoch_blocks(0)[1] == plain.epoch_blocks(0)[1]).all()


# --- Leave-one-out training -----------------------------------------------------------------------------------------


def test_excluded_records_are_absent_from_the_packed_stream(tiny_data: Path) -> None:
    data, tok = AuditSet.load(tiny_data), load_tokenizer(tiny_data / "tokenizer")
    member = max((r for r in data.train if r["kind"] == "repeated"), key=lambda r: r["repeats"])
    full = training_stream(data, tok, TrainConfig())
    loo = training_stream(data, tok, TrainConfig(exclude_ids=(member["doc_id"],)))
    for stream in (full, loo):
        ids = np.concatenate([stream.epoch_blocks(e)[1].ravel() for e in range(2)])
        assert (member["doc_id"] in ids) == (stream is full)
    n_tokens = len(tok(member["text"])["input_ids"]) + 1  # and its end token
    assert full.tokens_per_epoch - loo.tokens_per_epoch == member["repeats"] * n_tokens
    with pytest.raises(MemauditError, match="exclude_ids`: 1 id\\(s\\) not among the model's training documents"):
        training_stream(data, tok, TrainConfig(exclude_ids=(12345,)))


@pytest.mark.parametrize("bad", ["123", [0], [True], [" "], [2.5]])
def test_exclude_ids_are_checked(bad) -> None:
    with pytest.raises(MemauditError, match="exclude_ids"):
        TrainConfig(exclude_ids=bad)
    assert TrainConfig(exclude_ids=[5, "alice", 5]).exclude_ids == (5, "alice")


@pytest.mark.slow
def test_train_exclude_ids_records_the_leave_one_out(tiny_data: Path, tmp_path: Path) -> None:
    member = next(r["doc_id"] for r in AuditSet.load(tiny_data).train if r["kind"] == "repeated")
    args = ["train", "--data", str(tiny_data), "--arch", "gpt2-1m", "--steps", "2", "--eval-every", "2"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "loo"), "--exclude-ids", str(member)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "loo" / "memaudit.json").read_text())["train"]["exclude_ids"] == [member]
    unknown = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "x"), "--exclude-ids", "12345"])
    assert_one_line_error(unknown, "--exclude-ids: 1 id(s) not among")
