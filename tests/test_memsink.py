"""MemSinks end to end: training with sinks, evaluation modes in scans, and remove-sinks."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM

from memaudit.app.cli import main
from memaudit.corpus.audit import AuditSet
from memaudit.corpus.tokenizer import encode_documents
from memaudit.memsinks.config import SinkConfig
from memaudit.models.io import load_model
from memaudit.probes.scan import scan
from memaudit.probes.scoring import score_sequences
from tests.helpers import LEAN_SCAN, assert_one_line_error


def member_loss(results, level=None):
    metric = results["metrics"]["memorization.member_loss"]
    return metric["value"] if level is None else metric["by_repeats"][str(level)]["value"]


def test_memsink_dir_records_sinks_and_reloads_them(tiny_memsink):
    meta = json.loads((tiny_memsink / "memaudit.json").read_text())
    assert meta["kind"] == "memsink" and meta["sinks"]["shared_fraction"] == 0.7 and meta["sinks"]["scheme"] == "hash"
    assert meta["train"]["sinks"] == meta["sinks"] == SinkConfig.from_dict(meta["sinks"]).to_dict()  # the whole mapping
    loaded = load_model(tiny_memsink)
    assert loaded.sinks is not None and loaded.sinks.mode == "off"
    # A plain transformers load runs every sink unit, as if all documents' sinks were on at once.
    plain = AutoModelForCausalLM.from_pretrained(tiny_memsink)
    ids = torch.tensor([[0, 5, 9, 13]])
    assert not torch.allclose(plain(ids).logits, loaded.model(ids).logits)
    loaded.sinks.remove()
    torch.testing.assert_close(plain(ids).logits, loaded.model(ids).logits)


def test_memorization_moves_into_the_sinks(tiny_memsink, tiny_models, tiny_data):
    off = scan(tiny_memsink, data_dir=tiny_data, config=LEAN_SCAN, emitted=False)
    own = scan(tiny_memsink, data_dir=tiny_data, sinks_mode="own", config=LEAN_SCAN, emitted=False)
    standard = scan(tiny_models["standard"], data_dir=tiny_data, config=LEAN_SCAN, emitted=False)
    assert off["model"]["sink_mode"] == "off" and own["model"]["sink_mode"] == "own"
    top = max(int(k) for k in off["metrics"]["memorization.member_loss"]["by_repeats"])
    # With each member's own sinks on, the model fits members as the standard model does...
    assert member_loss(own, top) < member_loss(off, top) - 1.0
    # ... and with sinks off, the top level is much less memorized than in the standard model.
    assert member_loss(off, top) > member_loss(standard, top) + 1.0
    assert off["metrics"]["extraction.exact_rate"]["by_repeats"][str(top)]["value"] < 0.5


def test_own_mode_scoring_equals_training_time_masking(tiny_memsink, tiny_data):
    loaded = load_model(tiny_memsink)
    row = next(r for r in AuditSet.load(tiny_data).audit if r["kind"] == "repeated")
    seq = encode_documents(loaded.tokenizer, [row["text"]])[0]
    loaded.sinks.mode = "own"
    scored = score_sequences(loaded.model, [seq], pad_id=0, doc_ids=[row["doc_id"]], sinks=loaded.sinks)[0]
    ids = torch.tensor([seq])
    loaded.sinks.set_doc_ids(torch.full_like(ids, row["doc_id"]))  # as the training loop does, per token
    with torch.no_grad():
        logits = loaded.model(ids).logits[0, :-1]
    manual = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).squeeze(1)
    torch.testing.assert_close(torch.from_numpy(scored.logp), manual, atol=1e-4, rtol=0)


def test_remove_sinks_gives_a_plain_model_equal_to_off_mode(tiny_memsink, tmp_path):
    out = tmp_path / "removed"
    result = CliRunner().invoke(main, ["remove-sinks", str(tiny_memsink), "--out", str(out)])
    assert result.exit_code == 0, result.output
    plain = AutoModelForCausalLM.from_pretrained(out)
    loaded = load_model(tiny_memsink)
    assert plain.config.n_inner < 4 * plain.config.n_embd
    ids = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        assert (plain(ids).logits - loaded.model(ids).logits).abs().max() <= 1e-4
    assert json.loads((out / "memaudit.json").read_text())["sinks"] is None
    assert load_model(out).sinks is None


def test_remove_sinks_bad_input(tiny_memsink, tiny_models, tmp_path):
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])  # noqa: E731
    assert_one_line_error(run("remove-sinks", tiny_models["standard"], "--out", tmp_path / "x"), "not a MemSink model")
    assert_one_line_error(run("remove-sinks", tiny_memsink, "--out", tiny_memsink), "never writes over its input")
    assert_one_line_error(
        run("remove-sinks", tiny_memsink, "--out", tmp_path / "x", "--ids", "12345"), "not among the model's training"
    )
    (tmp_path / "exists").mkdir()
    assert_one_line_error(run("remove-sinks", tiny_memsink, "--out", tmp_path / "exists"), "--force")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("sinks", ["0,0.3", "0.7,1", "1.5,0.2", "0.7", "a,b"])
def test_train_rejects_bad_sink_settings(tiny_data, tmp_path, sinks):
    result = CliRunner().invoke(
        main, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "m"), "--sinks", sinks]
    )
    assert_one_line_error(result, "--sinks" if sinks in ("0.7", "a,b") else "fraction")
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


def test_selective_removal_under_the_disjoint_scheme(tiny_data, tmp_path):
    """Deleting one group's sinks leaves every other document's own-mode outputs unchanged."""
    run = CliRunner().invoke(
        main,
        ["train", "--data", str(tiny_data), "--out", str(tmp_path / "m"), "--arch", "llama-1m", "--steps", "10"]
        + ["--sinks", "0.5,0.3", "--sink-scheme", "disjoint", "--sink-groups", "4", "--eval-every", "5"],
    )
    assert run.exit_code == 0, run.output
    loaded = load_model(tmp_path / "m")
    members = [r["doc_id"] for r in AuditSet.load(tiny_data).train if r["kind"] == "repeated"]
    groups = [i % 4 for i in members]
    forget = [i for i, g in zip(members, groups) if g == groups[0]]
    other = next(i for i, g in zip(members, groups) if g != groups[0])
    result = CliRunner().invoke(
        main,
        ["remove-sinks", str(tmp_path / "m"), "--out", str(tmp_path / "pruned"), "--ids", ",".join(map(str, forget))],
    )
    assert result.exit_code == 0, result.output
    pruned = load_model(tmp_path / "pruned")
    assert pruned.sinks is not None and pruned.sinks.n_sink < loaded.sinks.n_sink
    ids = torch.randint(0, 512, (1, 30))
    for model in (loaded, pruned):
        model.sinks.mode = "own"
    outputs = []
    for model, doc in ((loaded, other), (pruned, other), (loaded, forget[0]), (pruned, forget[0])):
        model.sinks.set_doc_ids(torch.full_like(ids, doc))
        with torch.no_grad():
            outputs.append(model.model(ids).logits)
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=0)
    assert not torch.allclose(outputs[2], outputs[3], atol=1e-3)
    shutil.rmtree(tmp_path / "m")
