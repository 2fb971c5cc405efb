"""Settings of the optimization loop, for training and unlearning. Torch-free on purpose: the
command line builds (and so validates) these before it imports torch, so a refused value
answers at once, and the Python API refuses exactly what the command line refuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from memaudit.common.errors import MemauditError
from memaudit.common.precision import DEFAULT_PRECISION, check_precision
from memaudit.common.validation import MAX_COUNT, MAX_STEPS, SEED, Range, check_flag, check_ranges, integer, number
from memaudit.memsinks.config import SinkConfig


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
    precision: str = DEFAULT_PRECISION  # auto | fp32 | bf16 | fp16 (memaudit.common.precision): the autocast dtype
    threads: int | None = None  # torch threads of this process; None: cores / processes on a shared CPU
    seed: int = 0
    eval_every: int = 100
    checkpoint_every: int = 100

    # An AdamW step above 1 or a decay above 1 per unit of lr only ever diverges; eval/checkpoint
    # intervals divide the step count, so 0 is refused here and not in the middle of a run.
    RANGES: ClassVar[dict[str, Range]] = {
        "steps": integer(1, MAX_STEPS),
        "batch_size": integer(1, MAX_COUNT),
        "lr": number(0, 1, low_open=True),
        "min_lr_ratio": number(0, 1),
        "warmup_steps": integer(0, MAX_STEPS),
        "weight_decay": number(0, 1),
        "grad_clip": number(0, 1e6, low_open=True),
        "threads": integer(1, 4096, optional=True),
        "seed": SEED,
        "eval_every": integer(1, MAX_STEPS),
        "checkpoint_every": integer(1, MAX_STEPS),
    }

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)
        check_precision(self.precision)


@dataclass
class TrainConfig(LoopConfig):
    """What `memaudit train` trains: `arch` from scratch (or the pretrained `init`) on a data dir's
    packed training stream; the no-repeats oracle without the planted documents (`no_repeats`), or
    a MemSink model (`sinks`). Checked on construction, so the Python API refuses what the command
    line refuses, with the same message."""

    arch: str = "gpt2-5m"
    seq_len: int = 128
    no_repeats: bool = False  # the oracle: never sees the planted documents
    # Leave-one-out: the training rows of these ids (documents, or owners for a data dir built with --id-field) are
    # left out of the stream, for a model to judge the deletion of their sinks against.
    exclude_ids: tuple[int | str, ...] = ()
    sinks: SinkConfig | None = None  # a MemSink model (its recorded mapping, SinkConfig.to_dict(), is taken too)
    eval_docs: int = 64
    init: str | None = None  # a pretrained model (dir, GGUF file, hub id) to fine-tune instead of training from scratch
    freeze_base: bool = False  # fine-tuning with new sink units: only they train
    train_shared_mlp: bool = False  # with freeze_base: the whole MLPs train too (attention and embeddings stay)

    RANGES: ClassVar[dict[str, Range]] = {
        **LoopConfig.RANGES,
        "seq_len": integer(2, MAX_COUNT),
        "eval_docs": integer(1, MAX_COUNT),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.arch, str) or not self.arch.strip():
            raise MemauditError(
                f"arch must be a zoo name, a transformers model type or a config dir, got {self.arch!r}"
            )
        check_flag("no_repeats", self.no_repeats)
        self.exclude_ids = self._checked_ids(self.exclude_ids)
        if self.sinks is not None:
            self.sinks = SinkConfig.from_dict(self.sinks)
        self._check_fine_tuning()

    @staticmethod
    def _checked_ids(ids: object) -> tuple[int | str, ...]:
        """exclude_ids as a tuple of positive integers (document ids) and non-blank strings (owners), each once."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple)):
            raise MemauditError(f"exclude_ids must be a list of document ids or owners, got {ids!r}")
        for value in ids:
            number = isinstance(value, int) and not isinstance(value, bool) and value > 0
            if not number and not (isinstance(value, str) and value.strip()):
                raise MemauditError(f"exclude_ids holds {value!r}, neither a positive document id nor an owner's id")
        return tuple(dict.fromkeys(ids))

    def _check_fine_tuning(self) -> None:
        """New sink units widen a pretrained model (or, for the sparse scheme, one trained from scratch: its pool
        then sits beside the MLP's own units, as in NULLs), and freezing keeps a pretrained model's weights."""
        if self.init is not None and (not isinstance(self.init, str) or not self.init.strip()):
            raise MemauditError(f"init must be a model dir, a GGUF file or a hub id, got {self.init!r}")
        check_flag("freeze_base", self.freeze_base)
        check_flag("train_shared_mlp", self.train_shared_mlp)
        new_units = self.sinks.new_units if self.sinks is not None else None
        if new_units and self.init is None and self.sinks.scheme != "sparse":
            raise MemauditError(
                "sink_units new:N widens a pretrained model's MLPs: pass `init` (the model); from scratch only the "
                "sparse scheme takes new units"
            )
        if self.freeze_base and not new_units:
            raise MemauditError("freeze_base trains only new sink units: pass `sinks` with `sink_units` new:N")
        if self.freeze_base and self.init is None:
            raise MemauditError("freeze_base keeps a pretrained model's weights: pass `init` (the model)")
        if self.train_shared_mlp and not self.freeze_base:
            raise MemauditError("train_shared_mlp chooses what `freeze_base` leaves trainable: pass `freeze_base` too")
