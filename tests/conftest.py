"""Shared fixtures: one tiny audit set and tiny models trained once per test session (seconds
on 2 cores), so behavioural tests check real memorization, not mocks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from memaudit.corpus.audit import write_audit_set
from memaudit.demo import QUICK, training_plan
from memaudit.training.config import TrainConfig
from memaudit.training.loop import train

transformers.logging.set_verbosity_error()

# The tests' tiny setting is `memaudit demo --quick`'s: 1M-parameter GPT-2s that memorize the
# 64x members in ~15 s of training (300 steps, ~5 epochs of a small audit set, vocab 512). The
# fixtures train the quick demo's own three models once, and the quick demo reuses them.
TINY_DATA = QUICK.data
TINY_TRAIN = QUICK.train


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "tiny"
    write_audit_set(TINY_DATA, out)
    return out


@pytest.fixture(scope="session")
def tiny_plan(tiny_data) -> dict[str, TrainConfig]:
    """The quick demo's standard, no-repeats (as many epochs of the natural text, fewer steps)
    and MemSink (paper defaults G=0.7, P=0.3) training settings."""
    return training_plan(QUICK, tiny_data)


@pytest.fixture(scope="session")
def tiny_models(tiny_data, tiny_plan, tmp_path_factory) -> dict[str, Path]:
    """A standard and a no-repeats model, as the quick demo trains them."""
    root = tmp_path_factory.mktemp("models")
    return {
        name: train(tiny_data, root / name, tiny_plan[name], progress=False).path for name in ("standard", "no-repeats")
    }


@pytest.fixture(scope="session")
def tiny_memsink(tiny_data, tiny_plan, tmp_path_factory) -> Path:
    """A MemSink model trained exactly like the standard one of tiny_models."""
    out = tmp_path_factory.mktemp("models") / "memsink"
    return train(tiny_data, out, tiny_plan["memsink"], progress=False).path


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
def quick_demo(tiny_data, tiny_models, tiny_memsink, tmp_path_factory) -> Path:
    """`memaudit demo --quick`: the whole path, once per session. Its audit set and three models
    are the fixtures' (the same settings give the same bytes), copied in, so the demo skips their
    steps as it does on a rerun and goes on from there."""
    from memaudit.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "quick"
    shutil.copytree(tiny_data, out / "data")
    for name, path in {**tiny_models, "memsink": tiny_memsink}.items():
        shutil.copytree(path, out / "models" / name)
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
