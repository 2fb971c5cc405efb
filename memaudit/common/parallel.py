"""The process group of a multi-process launch (`accelerate launch --multi_gpu`, `torchrun`), and
how many threads each process may use."""

from __future__ import annotations

import os

import torch
from accelerate import PartialState

from memaudit.common.hardware import usable_cores


def cpu_only() -> bool:
    """No GPU (or other accelerator) here: accelerate must then be told cpu=True."""
    return not torch.accelerator.is_available()


def process_state() -> PartialState:
    """accelerate's shared process state. On a machine without an accelerator it must be built
    with cpu=True: only then does accelerate (1.15) join the gloo group that the launcher set up;
    otherwise every process silently runs alone. The first call fixes it for the process."""
    return PartialState(cpu=cpu_only())


def configure_threads(threads: int | None = None) -> int:
    """Sets this process's torch threads and returns them. `threads` given: exactly that many.
    Otherwise, when several processes of one launch share this machine's CPU, each takes
    cores / processes: with every process on all cores (torch's default), OpenMP oversubscribes
    and two processes on 2 cores each run ~5x slower instead of 2x; and the launchers' own
    default (torchrun and accelerate set OMP_NUM_THREADS=1) leaves most cores idle on a big CPU."""
    if threads is not None:  # checked (1..4096) by the config that carries it
        torch.set_num_threads(threads)
        return threads
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    if local_processes > 1 and cpu_only():
        torch.set_num_threads(max(1, usable_cores() // local_processes))
    return torch.get_num_threads()
