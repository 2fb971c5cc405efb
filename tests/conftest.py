"""Shared fixtures: one tiny audit set and tiny models trained once per test session (seconds
on 2 cores), so behavioural tests check real memorization, not mocks.

`make test` runs pytest-xdist workers, one per usable core (at most 4), each with cores / workers
torch threads. The expensive builds (the audit set, the tiny models, the quick demo, and the
fine-tuning and unlearning modules' models) are made once for all workers, in the directory they
share, each under a lock; the workers start on different models, so two cores train two at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch
import transformers

from memaudit.app.demo import QUICK, training_plan
from memaudit.common.hardware import usable_cores
from memaudit.corpus.audit import write_audit_set
from memaudit.probes.config import ScanConfig
from memaudit.training.config import TrainConfig
from memaudit.training.train import train

transformers.logging.set_verbosity_error()

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist; "" without it
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)


def pytest_configure(config) -> None:
    if WORKERS > 1:  # each worker its share of the cores: two torch processes on all of them thrash
        torch.set_num_threads(max(1, usable_cores() // WORKERS))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per core this process may use (its affinity, not the host's cores), at most 4."""
    return min(4, usable_cores())


# Fixtures that train models: every test that uses one, directly or through another fixture, is
# `slow` (left out of `make test-fast`). Tests that train inline or launch processes carry the mark
# themselves.
TRAINING_FIXTURES = {"tiny_trained", "base"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    """Where builds shared by every worker of the session go: the parent of the workers' own
    temporary dirs under xdist, the session's temporary dir without it."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if WORKER else base


def in_worker_order(names: Iterable[str]) -> list[str]:
    """`names` rotated by the worker's number, so that workers building a list of things with
    built_once each start on a different one."""
    names = list(names)
    first = int(WORKER.removeprefix("gw") or 0) % len(names)
    return names[first:] + names[:first]


def built_once(out: Path, build: Callable[[Path], object], done: str = ".") -> Path:
    """`out`, built by whichever worker asks first while the others wait for it. `out / done`
    exists once a build is complete (a run dir is renamed into place whole, so by default `out`
    itself); after a failed build the next worker that asks tries again (training and unlearning
    builds pass `force`, so they start over rather than stop at what a failed run left behind).
    Tests only read what it built: a test that writes works on a copy."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / done).exists():
            build(out)
    return out


# The tests' tiny setting is `memaudit demo --quick`'s: 1M-parameter GPT-2s that memorize the
# 64x members in ~15 s of training (300 steps, ~5 epochs of a small audit set, vocab 512). The
# fixtures train the quick demo's own three models once, and the quick demo reuses them.
TINY_DATA = QUICK.data
TINY_TRAIN = QUICK.train
# For tests that read losses and extraction only: no canary exposure, prefix sweep or intervals.
LEAN_SCAN = ScanConfig(name="lean", prefix_lens=(32,), exposure_candidates=0, bootstrap=0)


@pytest.fixture(scope="session")
def tiny_data(shared_dir) -> Path:
    return built_once(shared_dir / "tiny-data", lambda out: write_audit_set(TINY_DATA, out))


@pytest.fixture(scope="session")
def tiny_plan(tiny_data) -> dict[str, TrainConfig]:
    """The quick demo's standard, no-repeats (as many epochs of the natural text, fewer steps)
    and MemSink (paper defaults G=0.7, P=0.3) training settings."""
    return training_plan(QUICK, tiny_data)


@pytest.fixture(scope="session")
def tiny_trained(tiny_data, tiny_plan, shared_dir) -> dict[str, Path]:
    """The quick demo's three models. Each worker starts on another one and then takes the rest,
    each trained by whichever worker reaches it first."""
    return {
        name: built_once(
            shared_dir / "tiny-models" / name,
            lambda out, cfg=tiny_plan[name]: train(tiny_data, out, cfg, force=True, progress=False),
        )
        for name in in_worker_order(tiny_plan)
    }


@pytest.fixture(scope="session")
def tiny_models(tiny_trained) -> dict[str, Path]:
    """A standard and a no-repeats model, as the quick demo trains them."""
    return {name: tiny_trained[name] for name in ("standard", "no-repeats")}


@pytest.fixture(scope="session")
def tiny_memsink(tiny_trained) -> Path:
    """A MemSink model trained exactly like the standard one of tiny_models."""
    return tiny_trained["memsink"]


def memaudit_cli(*args: str, processes: int = 1) -> subprocess.CompletedProcess:
    """Run the real `memaudit` command in a subprocess; processes=2 goes through `accelerate
    launch --multi_gpu`, which on a CPU-only machine starts two gloo processes (without
    --multi_gpu, accelerate 1.15 starts one)."""
    cmd = [sys.executable, "-m", "memaudit", *args]
    if processes > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += ["--main_process_port", "0", "-m", "memaudit", *args]  # 0: a free port, as test workers launch at once
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="session")
def quick_demo(tiny_data, tiny_trained, shared_dir) -> Path:
    """`memaudit demo --quick`: the whole path, once per session. Its audit set and three models
    are the fixtures' (the same settings give the same bytes), copied in, so the demo skips their
    steps as it does on a rerun and goes on from there."""
    from memaudit.app.demo import run_demo

    def build(out: Path) -> None:
        shutil.copytree(tiny_data, out / "data", dirs_exist_ok=True)
        for name, path in tiny_trained.items():
            shutil.copytree(path, out / "models" / name, dirs_exist_ok=True)
        run_demo(out, quick=True)

    return built_once(shared_dir / "quick-demo", build, done="report/results.json")


@pytest.fixture
def dying_at_checkpoint(monkeypatch):
    """A context manager: inside it, runs die right after writing their first checkpoint, as a
    killed job would (the loop turns the KeyboardInterrupt into a `--resume` hint)."""
    import memaudit.training.optimize as optimize

    real_checkpoint = optimize._checkpoint

    def checkpoint_then_die(accelerator, work, step):
        real_checkpoint(accelerator, work, step)
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def dying():
        with monkeypatch.context() as patch:
            patch.setattr(optimize, "_checkpoint", checkpoint_then_die)
            yield

    return dying
