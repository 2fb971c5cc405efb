"""Shared fixtures: one tiny audit set and tiny models trained once per test session (seconds
on 2 cores), so behavioural tests check real memorization, not mocks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import transformers

from memaudit.corpus.audit import write_audit_set
from memaudit.demo import QUICK
from memaudit.training.config import TrainConfig
from memaudit.training.loop import train

transformers.logging.set_verbosity_error()

# The tests' tiny setting is `memaudit demo --quick`'s: 1M-parameter GPT-2s that memorize the
# 64x members in ~15 s of training (300 steps, ~5 epochs of a small audit set, vocab 512).
TINY_DATA = QUICK.data
TINY_TRAIN = QUICK.train


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "tiny"
    write_audit_set(TINY_DATA, out)
    return out


@pytest.fixture(scope="session")
def tiny_models(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """A standard and a no-repeats model trained the same way on the tiny audit set."""
    root = tmp_path_factory.mktemp("models")
    models = {}
    for name, changes in {"standard": {}, "no-repeats": {"no_repeats": True}}.items():
        models[name] = train(
            tiny_data, root / name, TrainConfig(**{**TINY_TRAIN.__dict__, **changes}), progress=False
        ).path
    return models


@pytest.fixture(scope="session")
def tiny_memsink(tiny_data, tmp_path_factory) -> Path:
    """A MemSink model (paper defaults G=0.7, P=0.3) trained exactly like tiny_models."""
    from memaudit.models.sinks import SinkConfig

    out = tmp_path_factory.mktemp("models") / "memsink"
    return train(tiny_data, out, replace(TINY_TRAIN, sinks=SinkConfig().to_dict()), progress=False).path


def memaudit_cli(*args: str, processes: int = 1) -> subprocess.CompletedProcess:
    """Run the real `memaudit` command in a subprocess; processes=2 goes through `accelerate
    launch --multi_gpu`, which on a CPU-only machine starts two gloo processes (without
    --multi_gpu, accelerate 1.15 starts one)."""
    cmd = [sys.executable, "-m", "memaudit", *args]
    if processes > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "memaudit", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> Path:
    """`memaudit demo --quick`: the whole path, once per session (about a minute)."""
    from memaudit.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "quick"
    run_demo(out, quick=True)
    return out


@contextlib.contextmanager
def dying_at_checkpoint():
    """Inside this block, runs die right after writing their first checkpoint, as a killed job
    would (the loop turns the KeyboardInterrupt into a `--resume` hint)."""
    import memaudit.training.loop as loop

    real_checkpoint = loop._checkpoint

    def checkpoint_then_die(accelerator, work, step):
        real_checkpoint(accelerator, work, step)
        raise KeyboardInterrupt

    loop._checkpoint = checkpoint_then_die
    try:
        yield
    finally:
        loop._checkpoint = real_checkpoint
