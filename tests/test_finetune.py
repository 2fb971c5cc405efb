"""Sink fine-tuning of a pretrained model (`train --init`, `--sink-units new:N|existing`, `--freeze-base`) and
deletion by owner (`data build --id-field`, `remove-sinks --ids USER`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM

from memaudit.app.cli import main
from memaudit.common.errors import MemauditError
from memaudit.corpus.audit import AuditSet, sink_id, write_audit_set
from memaudit.corpus.config import AuditConfig
from memaudit.corpus.sources import load_documents, owner_id
from memaudit.corpus.tokenizer import encode_documents, load_tokenizer
from memaudit.memsinks.config import SinkConfig, parse_sink_units
from memaudit.memsinks.sinks import Sinks
from memaudit.memsinks.surgery import add_sink_units, prune_sink_units
from memaudit.models.io import load_model
from memaudit.probes.scan import scan
from memaudit.training.config import TrainConfig
from memaudit.training.optimize import LossSet, evaluate_losses
from memaudit.training.train import train
from tests.helpers import LEAN_SCAN, TINY_DATA, TINY_TRAIN, TOKENS, assert_one_line_error, built_once, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

USERS = 12
NEW_UNITS = 64


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


# Built once for all test workers (helpers.built_once), like the session's tiny models.
@pytest.fixture(scope="module")
def base(tiny_data: Path, shared_dir: Path) -> Path:
    """The "pretrained" model: gpt2-1m trained on natural text only (the members never seen)."""
    config = replace(TINY_TRAIN, steps=60, no_repeats=True)
    return built_once(
        shared_dir / "finetune-base", lambda out: train(tiny_data, out, config, force=True, progress=False)
    )


@pytest.fixture(scope="module")
def user_data(base: Path, shared_dir: Path) -> Path:
    """A data dir in the base model's tokenizer whose rows belong to USERS users (ids: strings)."""

    def build(root: Path) -> None:
        root.mkdir(exist_ok=True)
        corpus = root / "corpus.jsonl"
        rows = [{"text": t, "user_id": f"user{i % USERS}"} for i, t in enumerate(load_documents("austen")[:900])]
        corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
        write_audit_set(
            replace(TINY_DATA, corpus=str(corpus), tokenizer=str(base), vocab_size=None, id_field="user_id"),
            root / "data",
        )

    return built_once(shared_dir / "finetune-users", build, done="data") / "data"


@pytest.fixture(scope="module")
def sink_ft(base: Path, user_data: Path, shared_dir: Path) -> Path:
    """The base model sink fine-tuned with new units on the users' data, disjoint scheme."""
    sinks = SinkConfig(scheme="disjoint", groups=4, new_units=NEW_UNITS)
    config = replace(TINY_TRAIN, init=str(base), sinks=sinks)
    return built_once(
        shared_dir / "finetune-sinks", lambda out: train(user_data, out, config, force=True, progress=False)
    )


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_new_units_leave_the_model_unchanged_and_go_back_whole(arch: str) -> None:
    model = tiny_model(arch)
    config = model.config.to_dict()
    with torch.no_grad():
        before = model(TOKENS).logits
    base_mlp = add_sink_units(model, 24)
    with torch.no_grad():
        assert (model(TOKENS).logits - before).abs().max().item() <= 1e-6
    sinks = Sinks(model, SinkConfig(new_units=24))
    assert (sinks.n_hidden - sinks.n_shared, sinks.n_sink) == (24, 24)
    prune_sink_units(model, sinks)
    for name, value in base_mlp.items():
        setattr(model.config, name, value)
    assert model.config.to_dict() == config
    with torch.no_grad():
        assert (model(TOKENS).logits - before).abs().max().item() <= 1e-6


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(sinks=SinkConfig(new_units=8)), "sink_units new:N widens a pretrained model"),
        (dict(init="m", freeze_base=True), "freeze_base trains only new sink units"),
        (dict(init="m", sinks=SinkConfig(new_units=8), train_shared_mlp=True), "pass `freeze_base` too"),
        (dict(init=" "), "init must be a model dir"),
        (dict(init="m", freeze_base="yes"), "freeze_base must be True or False"),
    ],
)
def test_train_config_refuses_inconsistent_fine_tuning(settings: dict, message: str) -> None:
    with pytest.raises(MemauditError, match=message):
        TrainConfig(**settings)


def test_sink_units_and_id_field_are_checked() -> None:
    assert parse_sink_units("existing") is None and parse_sink_units("new:128") == 128
    for bad in ("new:", "new:-3", "fresh:4", "new:x"):
        with pytest.raises(MemauditError, match="sink_units takes `existing` or new:N"):
            parse_sink_units(bad)
    with pytest.raises(MemauditError, match="new_units must be an integer from 1"):
        SinkConfig(new_units=0)
    with pytest.raises(MemauditError, match="id_field 'doc_id' is a field memaudit writes itself"):
        AuditConfig(id_field="doc_id")
    assert owner_id(42, "user_id", "x") == owner_id("42", "user_id", "x") != owner_id("43", "user_id", "x")
    for bad in (None, True, 2.5, " "):
        with pytest.raises(MemauditError, match="x: 'user_id' must be an integer or a non-blank string"):
            owner_id(bad, "user_id", "x")


def test_cli_refusals(tiny_data: Path, base: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    assert_one_line_error(run("train", "--data", tiny_data, "--out", out, "--sink-units", "new:8"), "--sinks G,P")
    assert_one_line_error(
        run("train", "--data", tiny_data, "--out", out, "--sinks", "0.7,0.3", "--sink-units", "new:8"), "--init"
    )
    assert_one_line_error(run("train", "--data", tiny_data, "--out", out, "--init", tmp_path / "nope"), "no such model")
    bpe = tmp_path / "bpe"
    write_audit_set(replace(TINY_DATA, seed=1), bpe)  # its own BPE, trained on another split
    assert_one_line_error(
        run("train", "--data", bpe, "--out", out, "--init", base, "--steps", "2"), "rebuild the data dir with"
    )
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": "a b c"}) + "\n")
    assert_one_line_error(
        run("data", "build", "--out", tmp_path / "d", "--corpus", corpus, "--id-field", "user_id"),
        f"{corpus}:1: 'user_id' must be an integer or a non-blank string, got null",
    )
    assert_one_line_error(
        run("data", "build", "--out", tmp_path / "d", "--tokenizer", base, "--vocab-size", "1000"),
        "--vocab-size sizes the BPE tokenizer",
    )
    assert not out.exists() and not (tmp_path / "d").exists()


def test_user_data_rows_carry_their_owner(user_data: Path, base: Path) -> None:
    data = AuditSet.load(user_data)
    owned = [r for r in data.train if "user_id" in r]
    assert len(owned) == sum(r["kind"] != "canary" for r in data.train)
    assert all(r["sink_id"] == owner_id(r["user_id"], "user_id", "") for r in owned)
    assert len({r["sink_id"] for r in owned}) == USERS
    manifest = data.manifest
    assert manifest["tokenizer"]["type"] == "the model's own" and manifest["config"]["id_field"] == "user_id"
    assert load_tokenizer(user_data / "tokenizer").get_vocab() == load_model(base).tokenizer.get_vocab()


def settings(config) -> dict:
    """A config's settings, without where it was loaded from."""
    return {k: v for k, v in config.to_dict().items() if not k.startswith("_")}


def own_member_loss(model_dir: Path, data: AuditSet, user: int | None) -> tuple[float, float]:
    """Mean NLL of one user's members (user given) or of everyone else's, with each member's own sinks on."""
    loaded = load_model(model_dir)
    members = [r for r in data.audit if r["kind"] == "repeated" and (sink_id(r) == user) == (user is not None)]
    tokens = encode_documents(loaded.tokenizer, [r["text"] for r in members])
    own = LossSet("own", tokens, [sink_id(r) for r in members])
    off = LossSet("off", tokens)
    losses = evaluate_losses(loaded.model, [own, off], loaded.tokenizer.pad_token_id, loaded.sinks)
    return losses["own"], losses["off"]


def test_sink_fine_tuning_and_deletion_by_user(sink_ft: Path, base: Path, user_data: Path, tmp_path: Path) -> None:
    meta = json.loads((sink_ft / "memaudit.json").read_text())
    assert meta["init"]["source"] == str(base) and len(meta["init"]["sha256"]) == 64
    assert meta["init"]["base_mlp"] == {"n_inner": None} and meta["sinks"]["new_units"] == NEW_UNITS
    loaded = load_model(sink_ft)
    assert loaded.sinks.n_sink == NEW_UNITS and loaded.model.config.n_inner == 4 * 128 + NEW_UNITS

    # Removing the whole pool gives back the base architecture, equal to sinks-off mode.
    assert run("remove-sinks", sink_ft, "--out", tmp_path / "plain").exit_code == 0
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")
    assert settings(plain.config) == settings(AutoModelForCausalLM.from_pretrained(base).config)
    ids = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        assert (plain(ids).logits - loaded.model(ids).logits).abs().max().item() <= 1e-4

    # Deleting one user's sinks: the user of a top-level member.
    data = AuditSet.load(user_data)
    top = max(r["repeats"] for r in data.audit)
    row = next(r for r in data.audit if r["kind"] == "repeated" and r["repeats"] == top)
    user = sink_id(row)
    result = run("remove-sinks", sink_ft, "--out", tmp_path / "forgot", "--ids", row["user_id"])
    assert result.exit_code == 0, result.output
    own_before, off = own_member_loss(sink_ft, data, user)
    own_after, off_after = own_member_loss(tmp_path / "forgot", data, user)
    members = [r["text"] for r in data.audit if r["kind"] == "repeated" and sink_id(r) == user]
    never_saw = LossSet("never_saw", encode_documents(loaded.tokenizer, members))
    base_loss = evaluate_losses(load_model(base).model, [never_saw], loaded.tokenizer.pad_token_id)["never_saw"]
    assert own_after == pytest.approx(off_after, abs=1e-4) and off_after == pytest.approx(off, abs=1e-4)
    assert own_before < own_after <= base_loss + 0.5  # memorization gone, toward a model that never saw them

    # Everyone in other sink groups keeps their memorization exactly.
    kept, before = load_model(tmp_path / "forgot"), load_model(sink_ft)
    other = next(sink_id(r) for r in data.train if sink_id(r) % 4 != user % 4)
    for m in (kept, before):
        m.sinks.mode = "own"
        m.sinks.set_doc_ids(torch.full((2, 1), other))
    with torch.no_grad():
        torch.testing.assert_close(kept.model(ids).logits, before.model(ids).logits, atol=1e-5, rtol=0)


def test_freeze_base_keeps_every_pretrained_weight(base: Path, user_data: Path, tmp_path: Path) -> None:
    sinks = SinkConfig(new_units=16)
    cfg = replace(TINY_TRAIN, init=str(base), sinks=sinks, freeze_base=True, steps=4, eval_every=4)
    trained = load_model(train(user_data, tmp_path / "frozen", cfg, progress=False).path).model.state_dict()
    original = AutoModelForCausalLM.from_pretrained(base).state_dict()
    widened = []
    for name, value in original.items():
        new = trained[name]
        if new.shape != value.shape:  # an MLP projection: its first 512 units are the pretrained ones
            dim = [a != b for a, b in zip(new.shape, value.shape)].index(True)
            widened.append(name)
            new = new.narrow(dim, 0, value.shape[dim])
        assert torch.equal(new, value), name
    assert len(widened) == 3 * 2  # c_fc weight and bias, c_proj weight, in 2 layers
    assert all(trained[f"transformer.h.{i}.mlp.c_proj.weight"][512:].abs().sum() > 0 for i in range(2))  # they trained


def test_own_mode_scans_key_sinks_on_owners(sink_ft: Path, user_data: Path) -> None:
    """`scan model --sinks own` switches on each member's owner's sinks, as training did."""
    runs = [scan(sink_ft, data_dir=user_data, sinks_mode=m, config=LEAN_SCAN, emitted=False) for m in ("own", "off")]
    own, off = runs
    loss = lambda results: results["metrics"]["memorization.member_loss"]["value"]  # noqa: E731
    assert loss(own) < loss(off) - 0.3


def test_train_shared_mlp_trains_the_whole_mlps_only(base: Path, user_data: Path, tmp_path: Path) -> None:
    sinks = SinkConfig(new_units=16)
    cfg = replace(TINY_TRAIN, init=str(base), sinks=sinks, freeze_base=True, train_shared_mlp=True, steps=2)
    trained = load_model(train(user_data, tmp_path / "mlp", cfg, progress=False).path).model.state_dict()
    original = AutoModelForCausalLM.from_pretrained(base).state_dict()
    for name, value in original.items():
        moved = trained[name].shape != value.shape or not torch.equal(trained[name], value)
        assert moved == (".mlp." in name), name
