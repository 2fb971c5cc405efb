import csv
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from memaudit.common.errors import MemauditError
from memaudit.training.config import TrainConfig
from memaudit.training.optimize import lr_at
from memaudit.training.train import train
from tests.helpers import TINY_TRAIN, memaudit_cli

SHORT = replace(TINY_TRAIN, steps=20, eval_every=10, checkpoint_every=10)


def test_model_dir_is_plain_hugging_face(tiny_models):
    path = tiny_models["standard"]
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.get_input_embeddings().num_embeddings == len(tok)
    meta = json.loads((path / "memaudit.json").read_text())
    assert meta["kind"] == "standard" and meta["steps"] == TINY_TRAIN.steps and meta["sinks"] is None
    assert meta["data"]["manifest_sha256"] and meta["tokens_per_s"] > 0
    with open(path / "train_log.csv") as f:
        log = list(csv.DictReader(f))
    assert [int(r["step"]) for r in log] == [100, 200, 300]
    assert float(log[-1]["member_loss"]) < float(log[0]["member_loss"])
    assert not (path.parent / "standard.partial").exists()


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, TINY_TRAIN) for s in range(TINY_TRAIN.steps)]
    assert lrs[0] < lrs[TINY_TRAIN.warmup_steps - 1] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(TINY_TRAIN.min_lr_ratio, abs=0.01)


@pytest.mark.slow
def test_resume_continues_exactly(tiny_data, tmp_path, dying_at_checkpoint):
    straight = train(tiny_data, tmp_path / "new" / "folders" / "straight", SHORT, progress=False).path
    with dying_at_checkpoint(), pytest.raises(MemauditError, match="--resume"):
        train(tiny_data, tmp_path / "resumed", SHORT, progress=False)
    assert (tmp_path / "resumed.partial" / "checkpoint").is_dir() and not (tmp_path / "resumed").exists()
    with pytest.raises(MemauditError, match="interrupted run"):
        train(tiny_data, tmp_path / "resumed", SHORT, progress=False)
    resumed = train(tiny_data, tmp_path / "resumed", SHORT, resume=True, progress=False).path
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    with open(resumed / "train_log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [10, 20]


@pytest.mark.slow
def test_two_process_training_with_accelerate_launch(tiny_data, tmp_path):
    """On CPU, `accelerate launch --num_processes 2` alone starts ONE process (accelerate 1.15);
    with --multi_gpu it starts two, which join a gloo group. The global batch is split between
    them, so the run matches a one-process run of the same settings."""
    args = [
        "train",
        "--data",
        str(tiny_data),
        "--arch",
        "gpt2-1m",
        "--steps",
        "6",
        "--batch-size",
        "8",
        "--eval-every",
        "3",
    ]
    result = memaudit_cli(*args, "--out", str(tmp_path / "ddp"), processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote") == 1  # only the main process reports
    two = json.loads((tmp_path / "ddp" / "memaudit.json").read_text())
    cfg = TrainConfig(arch="gpt2-1m", steps=6, batch_size=8, eval_every=3)  # the command's settings, in this process
    train(tiny_data, tmp_path / "one", cfg, progress=False)
    one = json.loads((tmp_path / "one" / "memaudit.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["final"]["valid_loss"] == pytest.approx(one["final"]["valid_loss"], abs=1e-3)
