"""The process group of a multi-process launch (`accelerate launch --multi_gpu`, `torchrun`)."""

from __future__ import annotations

import torch
from accelerate import PartialState


def cpu_only() -> bool:
    """No GPU (or other accelerator) here: accelerate must then be told cpu=True."""
    return not torch.accelerator.is_available()


def process_state() -> PartialState:
    """accelerate's shared process state. On a machine without an accelerator it must be built
    with cpu=True: only then does accelerate (1.15) join the gloo group that the launcher set up;
    otherwise every process silently runs alone. The first call fixes it for the process."""
    return PartialState(cpu=cpu_only())
