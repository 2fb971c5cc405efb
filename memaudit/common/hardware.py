"""What machine this is: the CPU's name, its capability as torch sees it, and the cores this
process may use. Every measured figure is stated beside them, and thread counts are derived from
the usable cores (the process's affinity, not the host's core count)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_description() -> str:
    """The CPU's model name, torch's kernel capability and its core count: stated beside every figure."""
    import torch

    return f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()}, {usable_cores()} cores"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
