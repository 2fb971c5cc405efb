"""Bad input: one clear line on stderr, exit 2, no traceback, nothing half-written."""

import shutil

import click
import pytest
from click.testing import CliRunner

from memaudit.app.cli import _as_flags, main
from memaudit.app.requests import ReportRequest, ScanRequest, report_and_write
from memaudit.common.errors import MemauditError
from memaudit.corpus.config import DEFAULT_VOCAB_SIZE, AuditConfig, ScanDataConfig
from memaudit.memsinks.config import SinkConfig
from memaudit.models.removal import remove_sinks
from memaudit.training.config import TrainConfig
from memaudit.training.train import train
from memaudit.unlearning.ablate import ablate
from memaudit.unlearning.run import unlearn
from tests.helpers import assert_one_line_error


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def test_help_has_examples():
    for cmd in (["data", "build"], ["train"], ["scan", "model"], ["demo"]):
        result = run(*cmd, "--help")
        assert result.exit_code == 0 and "Example" in result.output


def test_bad_repeats(tmp_path):
    assert_one_line_error(run("data", "build", "--out", tmp_path / "d", "--repeats", "1,0,8"), "--repeats")
    assert_one_line_error(run("data", "build", "--out", tmp_path / "d", "--repeats", "a,b"), "--repeats")
    assert not (tmp_path / "d").exists()


def test_missing_or_bad_corpus(tmp_path):
    assert_one_line_error(
        run("data", "build", "--out", tmp_path / "d", "--corpus", tmp_path / "nope.jsonl"), "no such file"
    )
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    assert_one_line_error(run("data", "build", "--out", tmp_path / "d", "--corpus", bad), "latin1.txt:1", "UTF-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_one_line_error(run("data", "build", "--out", tmp_path / "d", "--corpus", empty), "no non-empty documents")
    small = tmp_path / "small.txt"
    small.write_text("\n\n".join(f"Short paragraph number {i}." for i in range(800)))
    assert_one_line_error(run("data", "build", "--out", tmp_path / "d", "--corpus", small, "--n-valid", "10"), "tokens")
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.*"))


def test_model_dir_problems(tiny_models, tiny_data, tmp_path):
    assert_one_line_error(
        run("scan", "model", tmp_path / "none", "--data", tiny_data, "--out", tmp_path / "r"), "no such model dir"
    )
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models["standard"], broken)
    (broken / "model.safetensors").unlink()
    assert_one_line_error(
        run("scan", "model", broken, "--data", tiny_data, "--out", tmp_path / "r"), "no model weights"
    )
    (broken / "pytorch_model.bin").write_bytes(b"")
    assert_one_line_error(run("scan", "model", broken, "--data", tiny_data, "--out", tmp_path / "r"), "--allow-pickle")
    (tmp_path / "not-data").mkdir()
    assert_one_line_error(
        run("scan", "model", tiny_models["standard"], "--data", tmp_path / "not-data", "--out", tmp_path / "r"),
        "manifest.json",
    )
    assert not (tmp_path / "r").exists()


def test_tokenizer_that_does_not_match(tiny_models, tiny_data, tmp_path):
    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_models["standard"], mismatched)
    from transformers import AutoTokenizer

    from memaudit.corpus.tokenizer import train_tokenizer

    big = train_tokenizer([f"word{i} " * 3 for i in range(3000)], 2048)
    for f in mismatched.glob("tokenizer*"):
        f.unlink()
    big.save_pretrained(mismatched)
    assert len(AutoTokenizer.from_pretrained(mismatched)) > 512
    assert_one_line_error(
        run("scan", "model", mismatched, "--data", tiny_data, "--out", tmp_path / "r"), "do not belong together"
    )


def test_audit_too_short_for_probes(tiny_models, tiny_data, tmp_path):
    result = run(
        "scan", "model", tiny_models["standard"], "--data", tiny_data, "--out", tmp_path / "r", "--prefix-len", "500"
    )
    assert_one_line_error(result, "shorter than prefix 500")
    assert not (tmp_path / "r").exists()


def test_existing_outputs_are_never_overwritten(tiny_models, tiny_data, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(run("scan", "model", tiny_models["standard"], "--data", tiny_data, "--out", out), "--force")
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_train_bad_numbers(tiny_data, tmp_path, steps):
    assert_one_line_error(
        run("train", "--data", tiny_data, "--out", tmp_path / "m", "--steps", steps),
        "--steps must be an integer from 1",
    )
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


@pytest.mark.slow
def test_scan_and_train_end_to_end(tiny_data, tmp_path):
    result = run(
        "train", "--data", tiny_data, "--out", tmp_path / "m", "--arch", "llama-1m", "--steps", "4", "--eval-every", "2"
    )
    assert result.exit_code == 0, result.output
    result = run("scan", "model", tmp_path / "m", "--data", tiny_data, "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "report.html").is_file()


def test_scan_with_suite_and_reference(tiny_models, tiny_data, tmp_path):
    import json

    out = tmp_path / "r"
    result = run(
        "scan", "model", tiny_models["standard"], "--data", tiny_data, "--out", out, "--force", "--suite", "ci",
        "--reference", tiny_models["no-repeats"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["suite"]["name"] == "ci" and results["reference"]["path"] == str(tiny_models["no-repeats"])
    assert results["metrics"]["privacy.mia.ref.auc"]["value"] > 0.8
    assert results["metrics"]["memorization.forgetting"]["value"] < 0  # members fit better than the oracle does
    assert_one_line_error(
        run(
            "scan", "model", tiny_models["standard"], "--data", tiny_data, "--out", tmp_path / "x", "--suite", "defualt"
        ),
        "default",
    )


def test_unlearn_and_ablate_commands(tiny_models, tiny_data, tmp_path):
    model, data = tiny_models["standard"], tiny_data
    result = run(
        "unlearn",
        model,
        "--data",
        data,
        "--method",
        "npo",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--out",
        tmp_path / "u",
    )
    assert result.exit_code == 0, result.output
    assert "forget loss" in result.output and (tmp_path / "u" / "model.safetensors").is_file()
    result = run("ablate", model, "--data", data, "--ratio", "0.05", "--out", tmp_path / "a")
    assert result.exit_code == 0 and "units zeroed" in result.output, result.output
    bad = run("unlearn", model, "--data", data, "--max-degradation", "lots", "--out", tmp_path / "x")
    assert_one_line_error(bad, "--max-degradation")
    assert_one_line_error(run("ablate", model, "--data", data, "--ratio", "2", "--out", tmp_path / "x"), "--ratio")
    assert not (tmp_path / "x").exists()


def test_python_api_mirrors_the_cli():
    import memaudit

    for name in memaudit.__all__:
        assert getattr(memaudit, name) is not None, name
    with pytest.raises(AttributeError):
        memaudit.no_such_thing  # noqa: B018


# -- the Python API refuses what the command line refuses, with the same message ---------------------

# (command line, the same request through the Python API, given the test's folder)
REFUSED_ALIKE = {
    "vocab size beside a tokenizer": (
        ["data", "build", "--out", "{out}", "--tokenizer", "m", "--vocab-size", "1000"],
        lambda t: AuditConfig(tokenizer="m", vocab_size=1000),
    ),
    "new sink units without sinks": (
        ["train", "--data", "{data}", "--out", "{out}", "--sink-units", "new:8"],
        lambda t: SinkConfig.parse(None, sink_units="new:8"),
    ),
    "stress without a data dir": (
        ["scan", "model", "m", "--audit", "{text}", "--out", "{out}", "--stress", "quant:int8"],
        lambda t: ScanRequest(model="m", out=t / "out", audit=t / "a.txt", stress=["quant:int8"]),
    ),
    "stress with redaction": (
        ["scan", "model", "m", "--data", "{data}", "--out", "{out}", "--redact", "--stress", "quant:int8"],
        lambda t: ScanRequest(model="m", out=t / "out", data_dir=t / "data", redact=True, stress=["quant:int8"]),
    ),
    "a bad attack": (
        ["scan", "model", "m", "--data", "{data}", "--out", "{out}", "--stress", "qaunt:int8"],
        lambda t: ScanRequest(model="m", out=t / "out", data_dir=t / "data", stress=["qaunt:int8"]),
    ),
    "scan data settings": (["scan", "data", "{text}", "--near", "0"], lambda t: ScanDataConfig(near_threshold=0.0)),
    "a report of no scan": (
        ["report", "{data}", "--out", "{out}"],
        lambda t: report_and_write(ReportRequest(runs=[t / "data"], out=t / "out")),
    ),
    "train without a data dir": (
        ["train", "--data", "{missing}", "--out", "{out}"],
        lambda t: train(t / "missing", t / "out", TrainConfig()),
    ),
    "train over its data": (
        ["train", "--data", "{data}", "--out", "{data}"],
        lambda t: train(t / "data", t / "data", TrainConfig()),
    ),
    "unlearn without a model": (
        ["unlearn", "{missing}", "--data", "{data}", "--out", "{out}"],
        lambda t: unlearn(t / "missing", t / "data", t / "out"),
    ),
    "ablate without a model": (
        ["ablate", "{missing}", "--data", "{data}", "--out", "{out}"],
        lambda t: ablate(t / "missing", t / "data", t / "out"),
    ),
    "remove-sinks without a model": (
        ["remove-sinks", "{missing}", "--out", "{out}"],
        lambda t: remove_sinks(t / "missing", t / "out"),
    ),
}


def _command(args: list[str]) -> click.Command:
    command = main
    for word in args:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
    return command


@pytest.mark.parametrize("case", REFUSED_ALIKE)
def test_the_python_api_refuses_what_the_cli_refuses_with_the_same_message(case, tmp_path):
    args, call = REFUSED_ALIKE[case]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text("{}")
    (tmp_path / "a.txt").write_text("one text to audit\n")
    paths = {
        "out": tmp_path / "out",
        "data": tmp_path / "data",
        "text": tmp_path / "a.txt",
        "missing": tmp_path / "missing",
    }
    result = run(*(a.format(**paths) for a in args))
    assert_one_line_error(result)
    with pytest.raises(MemauditError) as refused:
        call(tmp_path)
    assert result.stderr.strip() == f"error: {_as_flags(str(refused.value), _command(args))}"
    assert not (tmp_path / "out").exists()


def test_requests_and_configs_hold_typed_values(tmp_path):
    config = AuditConfig(tokenizer="m")
    assert config.vocab_size is None and config.bpe_vocab_size == AuditConfig().bpe_vocab_size == DEFAULT_VOCAB_SIZE
    request = ScanRequest(model="m", out=tmp_path / "r", data_dir=tmp_path, stress=["quant:int4"])
    assert [a.name for a in request.stress] == ["quant:int4"] and request.stress_out == tmp_path / "r" / "stress"
    assert request.stress_config.attacks == request.stress and request.stress_config.precision == request.precision
    assert ScanRequest(model="m", out=tmp_path / "r", data_dir=tmp_path).stress_config is None
    report = ReportRequest(runs=[str(tmp_path)], out=str(tmp_path / "c"), reference=str(tmp_path))
    assert report.runs == (tmp_path,) and report.inputs == [tmp_path, tmp_path]
    with pytest.raises(MemauditError, match="runs must be a list of scan run dirs"):
        ReportRequest(runs=[], out=tmp_path / "c")
    with pytest.raises(MemauditError, match="fail_on must be a list of gate expressions"):
        ReportRequest(runs=[tmp_path], out=tmp_path / "c", fail_on="x>0")
