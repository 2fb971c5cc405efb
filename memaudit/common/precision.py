"""Which floating-point precision a run computes in, chosen by what the hardware runs natively.

bf16 autocast speeds training up on a CPU with native bf16 (AVX512-BF16, AMX) but runs many times
slower than fp32 where the CPU only emulates it (AVX2; docs/results.md). So `auto` never guesses from the CPU's
name: on a CPU it asks oneDNN whether bf16 is native, then confirms with a short micro-benchmark
(a training-shaped matmul forward and backward), cached per CPU, torch version and thread count.
Every run records the precision it used and why."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from memaudit.common.errors import MemauditError
from memaudit.common.hardware import cpu_model

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_PRECISION = "auto"  # what every command and config computes in unless asked otherwise
# bf16 must beat fp32 by this factor in the micro-benchmark: a tie is not worth bf16's rounding.
BF16_MIN_SPEEDUP = 1.15


@dataclass(frozen=True)
class Precision:
    """The precision a run uses (`name`: fp32, bf16 or fp16) and why (`reason`)."""

    name: str
    reason: str
    requested: str = DEFAULT_PRECISION

    @property
    def line(self) -> str:
        """The first line a command prints, so the user sees at once what the run computes in."""
        return f"precision: {self.name} ({self.reason})"

    def to_dict(self) -> dict:
        return asdict(self)

    def torch_dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]


def check_precision(value: str) -> str:
    """Refuses an unknown precision name before anything heavy is imported."""
    if value not in PRECISIONS:
        raise MemauditError(f"unknown precision {value!r}; use one of {', '.join(PRECISIONS)}")
    return value


def resolve_precision(requested: str, device_type: str, *, purpose: str = "train") -> Precision:
    """`requested` as a concrete precision on `device_type` ("cpu", "cuda", ...).

    purpose "train": autocast compute; "scan": the dtype of the weights. On a CPU, `auto` scans
    in fp32 even where bf16 is native, so that scores reproduce across machines to float
    tolerance; on a GPU it scans in bf16 (fp16 without bf16), or an 8B model would not fit."""
    check_precision(requested)
    if requested != "auto":
        return Precision(requested, "asked for", requested)
    if device_type == "cuda":
        import torch

        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "auto: this GPU runs bf16 natively", requested)
        if purpose == "scan":
            return Precision("fp16", "auto: this GPU has no bf16, fp16 weights halve memory", requested)
        return Precision("fp32", "auto: this GPU has no native bf16", requested)
    if device_type != "cpu":
        return Precision("fp32", f"auto: no bf16 check for {device_type} devices", requested)
    if purpose == "scan":
        return Precision("fp32", "auto: CPU scans stay fp32 so scores reproduce across machines", requested)
    verdict = cpu_bf16_verdict()
    return Precision("bf16" if verdict["native"] else "fp32", f"auto: {verdict['reason']}", requested)


def cpu_bf16_verdict() -> dict:
    """{"native": bool, "reason": str, ...}: oneDNN's answer, then the micro-benchmark's, cached."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return {"native": False, "reason": f"oneDNN reports no native bf16 on this CPU ({capability})"}
    key = "|".join(
        [
            cpu_model(),
            capability,
            torch.__version__,
            str(torch.get_num_threads()),
            os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        ]
    )
    cache = _cache_file()
    cached = _read_cache(cache)
    if key not in cached:
        speedup = bf16_speedup()
        native = speedup >= BF16_MIN_SPEEDUP
        cached[key] = {"native": native, "speedup": round(speedup, 2)}
        _write_cache(cache, cached)
    entry = cached[key]
    verdict = "faster" if entry["native"] else "not faster"
    return {
        "native": entry["native"],
        "speedup": entry["speedup"],
        "reason": f"oneDNN reports bf16 on this CPU ({capability}) and it ran {entry['speedup']:.2f}x fp32's speed, "
        f"{verdict} than fp32",
    }


def bf16_speedup(repeats: int = 5) -> float:
    """fp32 time / bf16-autocast time of a training-shaped step (a 256 -> 1024 linear layer on
    2048 tokens, forward and backward): about 0.2 s in all on a 2-core CPU."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 256, generator=gen, requires_grad=True)
    w = torch.randn(1024, 256, generator=gen, requires_grad=True)

    def timed(bf16: bool) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = torch.nn.functional.linear(x, w)
            y.float().square().mean().backward()
            best = min(best, time.perf_counter() - start)
        return best

    timed(False), timed(True)  # first calls pay for oneDNN's kernel selection
    return timed(False) / timed(True)


def _cache_file() -> Path:
    root = os.environ.get("MEMAUDIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "memaudit"
    )
    return Path(root) / "precision.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict) -> None:
    """Best effort: a read-only home only costs the next run another 0.2 s benchmark."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass
