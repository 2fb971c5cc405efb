"""Shared fixtures: one tiny audit set and tiny models trained once per test session (seconds
on 2 cores), so behavioural tests check real memorization, not mocks. The helpers and constants
that fixtures and tests share are in tests/helpers.py.

`make test` runs pytest-xdist workers, one per usable core (at most 4), each with cores / workers
torch threads. The expensive builds (the audit set, the tiny models, the quick demo, and the
fine-tuning and unlearning modules' models) are made once for all workers, in the directory they
share, each under a lock; the workers start on different models, so two cores train two at once."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from memaudit.app.demo import QUICK, training_plan
from memaudit.common.hardware import usable_cores
from memaudit.corpus.audit import write_audit_set
from memaudit.training.config import TrainConfig
from memaudit.training.train import train
from tests.helpers import TINY_DATA, WORKER, WORKERS, built_once, in_worker_order

transformers.logging.set_verbosity_error()


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
def one_thread():
    """Tiny models run fastest on one thread; a second one only spins against other load on a 2-core machine.
    Modules of tiny-model tests ask for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
