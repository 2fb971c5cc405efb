"""Settings of the optimization loop, for training and unlearning. Torch-free on purpose: the
command line builds (and so validates) these before it imports torch, so a refused value
answers at once."""

from __future__ import annotations

from dataclasses import dataclass

from memaudit.precision import check_precision


@dataclass
class LoopConfig:
    """Optimization settings that training and unlearning share."""

    steps: int = 600
    batch_size: int = 16  # sequences per optimizer step, summed over processes
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (memaudit.precision): the autocast dtype
    threads: int | None = None  # torch threads of this process; None: cores / processes on a shared CPU
    seed: int = 0
    eval_every: int = 100
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        check_precision(self.precision)


@dataclass
class TrainConfig(LoopConfig):
    arch: str = "gpt2-5m"
    seq_len: int = 128
    no_repeats: bool = False  # the oracle: never sees the planted documents
    sinks: dict | None = None  # SinkConfig.to_dict() for a MemSink model
    eval_docs: int = 64
