"""Precision is chosen by what the hardware runs natively, recorded, and printed; threads are
split between processes that share a CPU; the demo estimates its time from measured steps."""

import json

import pytest
import torch
from rich.console import Console

from memaudit.app.demo import _Estimate
from memaudit.common import precision as prec
from memaudit.common.errors import MemauditError
from memaudit.common.parallel import configure_threads
from memaudit.training.config import TrainConfig
from tests.helpers import TINY_TRAIN


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMAUDIT_CACHE", str(tmp_path))
    return tmp_path / "precision.json"


def test_explicit_precisions_are_taken_as_asked():
    for name in ("fp32", "bf16", "fp16"):
        chosen = prec.resolve_precision(name, "cpu")
        assert (chosen.name, chosen.requested) == (name, name)
    with pytest.raises(MemauditError, match="unknown precision 'fp8'"):
        prec.resolve_precision("fp8", "cpu")
    with pytest.raises(MemauditError, match="unknown precision"):
        TrainConfig(precision="half")


def test_auto_is_fp32_where_onednn_has_no_bf16(cache, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    monkeypatch.setattr(prec, "bf16_speedup", lambda: pytest.fail("no benchmark without oneDNN bf16"))
    chosen = prec.resolve_precision("auto", "cpu")
    assert chosen.name == "fp32" and "no native bf16" in chosen.reason
    assert chosen.line.startswith("precision: fp32 (auto: ")


@pytest.mark.parametrize(("speedup", "expected"), [(2.5, "bf16"), (1.0, "fp32"), (0.05, "fp32")])
def test_auto_on_a_bf16_cpu_follows_the_cached_benchmark(cache, monkeypatch, speedup, expected):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    calls = []
    monkeypatch.setattr(prec, "bf16_speedup", lambda: calls.append(1) or speedup)
    assert prec.resolve_precision("auto", "cpu").name == expected
    assert prec.resolve_precision("auto", "cpu").name == expected  # from the cache: no second benchmark
    assert len(calls) == 1
    (entry,) = json.loads(cache.read_text()).values()
    assert entry == {"native": expected == "bf16", "speedup": speedup}


def test_auto_scans_fp32_on_cpu_and_half_precision_on_gpu(monkeypatch):
    assert prec.resolve_precision("auto", "cpu", purpose="scan").name == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert prec.resolve_precision("auto", "cuda", purpose="scan").name == "bf16"
    assert prec.resolve_precision("auto", "cuda").name == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert prec.resolve_precision("auto", "cuda", purpose="scan").name == "fp16"
    assert prec.resolve_precision("auto", "cuda").name == "fp32"


def test_the_micro_benchmark_returns_a_ratio():
    assert prec.bf16_speedup(repeats=1) > 0


def test_trained_models_record_precision_and_device(tiny_models):
    meta = json.loads((tiny_models["standard"] / "memaudit.json").read_text())
    assert meta["precision"] == {"name": "fp32", "reason": "asked for", "requested": TINY_TRAIN.precision}
    assert "cores" in meta["device"] and meta["threads"] >= 1


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_processes_sharing_a_cpu_split_its_cores(monkeypatch, restore_threads):
    monkeypatch.setattr("memaudit.common.parallel.usable_cores", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert configure_threads() == 4
    assert configure_threads(3) == 3  # --threads wins
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert configure_threads() == 3  # one process: torch's own setting stays


def test_bf16_alias_and_conflicts_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from memaudit.app.cli import main

    result = CliRunner().invoke(
        main, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--bf16", "--precision", "fp32"]
    )
    assert result.exit_code == 2 and "--bf16 contradicts --precision fp32" in result.output

    for command in (["demo", "--out", str(tmp_path / "d")], ["unlearn", str(tmp_path), "--data", str(tmp_path)]):
        result = CliRunner().invoke(main, [*command, "--fp32", "--precision", "bf16", "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and "contradicts --precision bf16" in result.output, command


def test_demo_estimates_once_after_the_first_steps():
    console = Console(record=True, width=200)
    estimate = _Estimate(console, training_steps=900, begin=0.0, other_work_ratio=0.6)
    estimate(5, 0.5)
    assert console.export_text() == ""
    estimate(10, 0.5)
    estimate(20, 0.5)
    text = console.export_text()
    assert text.count("estimate:") == 1
    total = 900 * 0.5 * (1 + 0.6)
    assert f"about {total / 60:.1f} min in all" in text and "0.50 s a training step" in text
