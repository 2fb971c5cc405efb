"""One optimization loop, on `accelerate`, shared by `memaudit train`, `memaudit unlearn` and
relearning (`memaudit stress`).

`optimize()` runs AdamW with linear warm-up then cosine decay, gradient clipping, fp32 or bf16
autocast, a progress bar, a CSV log and checkpoints. What a step computes (its loss) and what an
eval point measures are callbacks, so training and every unlearning method differ only there.
A run works in `OUT.partial/` (checkpoints and the CSV log) and becomes `OUT/` only when it
finishes, so an interrupted run never looks like a model; `--resume` continues it exactly: the
data order is a pure function of (seed, step), and checkpoints hold model, optimizer, scheduler
and RNG states. An optional guard ends a run at an eval point and rolls the model back to the
last state that passed it (unlearning's `max_degradation`)."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from math import nan
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import atomic_dir, check_out, output_lock, write_json
from memaudit.common.hardware import cpu_description
from memaudit.common.parallel import configure_threads, cpu_only, process_state
from memaudit.common.precision import Precision, resolve_precision
from memaudit.memsinks.config import DEFAULT_EVAL_MODE
from memaudit.models.io import save_model
from memaudit.probes.scoring import mean_nll, score_sequences
from memaudit.training.config import LoopConfig


@dataclass
class StepOutput:
    """What one step of a method computed: the loss to minimize, the tokens it consumed on this
    process (for throughput), and extra scalars averaged into the next log row."""

    loss: torch.Tensor
    tokens: int
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    # Routing (memaudit.memsinks.routing): the loss back-propagated is only part of the step's loss, whose value
    # is `logged_loss`, and `after_backward` adds the gradients of the rest before clipping.
    logged_loss: torch.Tensor | None = None
    after_backward: Callable[[], None] | None = None


StepFn = Callable[[torch.nn.Module, int], StepOutput]  # (prepared model, step index) -> StepOutput


EvalFn = Callable[[torch.nn.Module, int], dict]  # (unwrapped model, steps done) -> metrics for the log row


Guard = Callable[[dict], str | None]  # a log row -> why the run must end now, or None


@dataclass
class LoopResult:
    model: PreTrainedModel  # unwrapped, holding the kept state
    steps: int  # optimizer steps behind the kept state
    tokens_per_s: float
    log_path: Path
    final: dict = field(default_factory=dict)  # the last log row of the kept state ({} if it is the start)
    stopped: str | None = None  # why the guard ended the run
    stopped_at: int | None = None  # the step whose evaluation tripped the guard


@dataclass
class LossSet:
    """A named set of sequences whose mean NLL an eval point reports."""

    name: str
    sequences: list[list[int]]
    doc_ids: list[int] | None = None  # given: scored with each document's own sinks ("own" mode)


def evaluate_losses(model: torch.nn.Module, sets: list[LossSet], pad_id: int, sinks=None) -> dict[str, float]:
    """Mean NLL of each set (sinks off unless the set carries doc ids), so a log shows
    memorization grow in training and shrink in unlearning."""
    model.eval()
    mode = sinks.mode if sinks is not None else None
    out = {}
    for s in sets:
        if sinks is not None:
            sinks.mode = "own" if s.doc_ids is not None else DEFAULT_EVAL_MODE
        scored = score_sequences(model, s.sequences, pad_id=pad_id, sinks=sinks, doc_ids=s.doc_ids)
        out[s.name] = mean_nll(scored) if s.sequences else float("nan")
    if sinks is not None:
        sinks.mode = mode
    model.train()
    return out


def lr_at(step: int, cfg: LoopConfig) -> float:
    """Multiplier of the base learning rate: linear warm-up, cosine down to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(model: torch.nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def make_accelerator(cfg: LoopConfig, *, announce: bool = True) -> tuple[Accelerator, Precision]:
    """The accelerator of a run, with its threads set and its precision chosen (and, on the main
    process, printed first: a user on an emulated-bf16 CPU must see at once what the run uses)."""
    threads = configure_threads(cfg.threads)
    device = "cpu" if cpu_only() else torch.accelerator.current_accelerator().type
    precision = resolve_precision(cfg.precision, device)
    if precision.name == "fp16" and device == "cpu":
        raise MemauditError("precision fp16 trains only on a GPU; on a CPU use fp32, bf16 or auto")
    # cpu=True on machines without an accelerator (memaudit.common.parallel). The shared state is reset (keeping the process
    # group) so that one process can train in bf16 and then unlearn in fp32; accelerate otherwise refuses the change.
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision="no" if precision.name == "fp32" else precision.name, cpu=cpu_only())
    if cfg.batch_size % accelerator.num_processes:
        raise MemauditError(f"batch_size {cfg.batch_size} does not split over {accelerator.num_processes} processes")
    set_seed(cfg.seed)
    if announce and accelerator.is_main_process:
        print(f"{precision.line}; {threads} threads", flush=True)
    return accelerator, precision


def run_environment(accelerator: Accelerator, precision: Precision) -> dict:
    """What a run's throughput depends on, recorded beside it in memaudit.json."""
    device = cpu_description() if accelerator.device.type == "cpu" else torch.cuda.get_device_name(accelerator.device)
    return {"precision": precision.to_dict(), "device": device, "threads": torch.get_num_threads()}


def work_dir(out: Path, *, inputs: Iterable[Path | str | None] = (), resume: bool, force: bool) -> Path:
    """`OUT.partial/`, once it is clear that a run may start (or resume) there: `out` passes the
    checks of every output (fileio.check_out: not an input, writable, not there without `force`),
    and an interrupted run is neither discarded nor continued unless asked."""
    check_out(out, force=force, inputs=inputs)
    work = out.with_name(out.name + ".partial")
    if work.exists() and not resume and not force:
        raise MemauditError(f"{work} holds an interrupted run; pass `resume` to continue it or `force` to start over")
    if resume and not (work / "checkpoint" / "state.json").is_file():
        raise MemauditError(f"resume: no checkpoint in {work}; run without it to start")
    return work


@contextlib.contextmanager
def run_lock(work: Path) -> Iterator[None]:
    """Held by a run's main process from start to end, so two runs to one `out` can never share
    its work dir (the second is refused at once); a lock left by a killed run is released by the
    kernel. The other processes of a multi-process launch follow the main one."""
    if process_state().is_main_process:
        work.parent.mkdir(parents=True, exist_ok=True)  # the lock file lives beside the work dir
        with output_lock(work):
            yield
    else:
        yield


StepHook = Callable[[int, float], None]  # (steps done, mean seconds per step so far) after every step


@dataclass
class _Meter:
    """Running sums between log rows, and throughput over every timed step."""

    sums: dict[str, float] = field(default_factory=dict)
    n: int = 0
    tokens: float = 0.0
    seconds: float = 0.0
    steps: int = 0

    def add(self, values: dict[str, float], tokens: float, seconds: float | None) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.n += 1
        if seconds is not None:  # None: an untimed step (the first pays for warm-up allocations)
            self.tokens, self.seconds, self.steps = self.tokens + tokens, self.seconds + seconds, self.steps + 1

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def take_averages(self) -> dict[str, float]:
        averages = {key: value / self.n for key, value in self.sums.items()}
        self.sums, self.n = {}, 0
        return averages


def optimize(
    accelerator: Accelerator,
    model: PreTrainedModel,
    cfg: LoopConfig,
    step_fn: StepFn,
    evaluate: EvalFn,
    *,
    work: Path,
    log_fields: list[str],
    label: str = "train",
    resume: bool = False,
    progress: bool = True,
    guard: Guard | None = None,
    on_step: StepHook | None = None,
    after_step: Callable[[], None] | None = None,
) -> LoopResult:
    """Run steps [start, cfg.steps) of `step_fn` under AdamW; evaluate every `eval_every` steps
    and at the end (and before each checkpoint when a guard is set, so every checkpoint is a
    state that passed it). Log rows: step, lr, train_loss, tokens_per_s, the step's extra logs
    (averaged since the last row) and the evaluation's metrics. `after_step` runs after every
    optimizer step (e.g. to put frozen weights back). One loop, longer than most functions here,
    on purpose: the order of step, evaluation, guard and checkpoint within it is what makes a
    resumed run and a rolled-back one exact, and it reads best in one place."""
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    start = _start(accelerator, work, resume)
    log_path = _open_log(accelerator, work / f"{label}_log.csv", log_fields, start if resume else None)
    meter, last = _Meter(), {}
    # With a guard, the state to fall back on: (steps, CPU copy of the weights, its log row).
    kept = (start, _weights(accelerator.unwrap_model(model)), {}) if guard else None
    stopped, stopped_at = None, None
    bar = _progress_bar(label, show=progress and accelerator.is_main_process)
    with bar:
        task = bar.add_task(work.name.removesuffix(".partial"), total=cfg.steps, completed=start, loss=nan, tps=0.0)
        model.train()
        try:
            for step in range(start, cfg.steps):
                t0 = time.perf_counter()
                values, tokens = _step(accelerator, model, optimizer, scheduler, step_fn, step, cfg.grad_clip)
                if after_step:
                    after_step()
                meter.add(values, tokens, time.perf_counter() - t0 if step > start else None)
                bar.update(task, advance=1, loss=values["train_loss"], tps=meter.tokens_per_s)
                done = step + 1
                if on_step and meter.steps:
                    on_step(done, meter.seconds / meter.steps)
                checkpoint_due = done % cfg.checkpoint_every == 0 and done < cfg.steps
                if done % cfg.eval_every == 0 or done == cfg.steps or (guard and checkpoint_due):
                    row = {"step": done, "lr": scheduler.get_last_lr()[0], **meter.take_averages()}
                    row |= {"tokens_per_s": round(meter.tokens_per_s, 1)}
                    row |= evaluate(accelerator.unwrap_model(model), done)
                    _append_row(accelerator, log_path, log_fields, row)
                    if guard:
                        stopped = guard(row)
                        if stopped:
                            stopped_at = done
                            break
                        kept = (done, _weights(accelerator.unwrap_model(model)), row)
                    last = row
                if checkpoint_due:
                    _checkpoint(accelerator, work, done)
        except KeyboardInterrupt:
            raise MemauditError(f"interrupted; {work} holds the last checkpoint, continue with --resume") from None

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    steps = cfg.steps
    if stopped:
        steps, weights, last = kept
        unwrapped.load_state_dict(weights)
    return LoopResult(unwrapped, steps, meter.tokens_per_s, log_path, last, stopped, stopped_at)


def _step(accelerator, model, optimizer, scheduler, step_fn: StepFn, step: int, grad_clip: float):
    """One optimizer step; returns the loss and extra logs averaged over processes (one
    reduction for all of them) and the tokens all processes consumed."""
    with accelerator.autocast():
        out = step_fn(model, step)
    accelerator.backward(out.loss)
    if out.after_backward is not None:
        out.after_backward()
    accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loss = out.loss if out.logged_loss is None else out.logged_loss
    values = [loss.detach().float(), torch.tensor(float(out.tokens), device=loss.device)]
    values += [v.detach().float() for v in out.logs.values()]
    reduced = accelerator.reduce(torch.stack(values), reduction="mean").tolist()
    if not math.isfinite(reduced[0]):
        raise MemauditError(
            f"the loss became {reduced[0]} at step {step + 1}: the run diverged; lower `lr` (or raise "
            "`warmup_steps`) and start over with `force`"
        )
    logs = dict(zip(["train_loss", *out.logs], [reduced[0], *reduced[2:]]))
    return logs, reduced[1] * accelerator.num_processes


def _append_row(accelerator: Accelerator, log_path: Path, fields: list[str], row: dict) -> None:
    if accelerator.is_main_process:
        with open(log_path, "a", newline="") as f:
            csv.DictWriter(f, fields).writerow(row)


def _start(accelerator: Accelerator, work: Path, resume: bool) -> int:
    """The step a run starts from: its checkpoint's when resuming, else 0 in a fresh work dir."""
    start = 0
    if resume:
        accelerator.load_state(str(work / "checkpoint"))
        start = json.loads((work / "checkpoint" / "state.json").read_text())["step"]
    elif accelerator.is_main_process:  # file system changes happen once, on the main process
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    accelerator.wait_for_everyone()
    return start


def _open_log(accelerator: Accelerator, log_path: Path, fields: list[str], resumed_at: int | None) -> Path:
    """A fresh CSV log, keeping the rows up to the checkpoint of a resumed run."""
    if accelerator.is_main_process:
        kept_rows = []
        if resumed_at is not None and log_path.is_file():
            with open(log_path) as f:
                kept_rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resumed_at]
        with open(log_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(kept_rows)
    return log_path


def _progress_bar(label: str, show: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn(f"[bold]{label}[/] {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  {task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(),
        disable=not show,
    )


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def write_model_dir(
    accelerator: Accelerator,
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    out: Path,
    work: Path,
    meta: dict,
    log_path: Path,
    force: bool,
) -> None:
    """The finished run becomes `out` (atomically, with its log), and its work dir goes."""
    if accelerator.is_main_process:
        with atomic_dir(out, force=force) as tmp:
            save_model(model, tok, tmp, meta)
            shutil.copy(log_path, tmp / log_path.name)
        shutil.rmtree(work)
    accelerator.wait_for_everyone()


def _checkpoint(accelerator: Accelerator, work: Path, step: int) -> None:
    ckpt = work / "checkpoint"
    accelerator.save_state(str(ckpt))
    if accelerator.is_main_process:
        write_json(ckpt / "state.json", {"step": step})  # atomic: a kill mid-write must not break --resume
    accelerator.wait_for_everyone()


def pad_batch(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Right-padded (input_ids, attention_mask, labels), labels -100 at padding."""
    ids = torch.full((len(seqs), max(map(len, seqs))), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.as_tensor(seq)
        mask[row, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids.to(device), mask.to(device), labels.to(device)


@functools.lru_cache(maxsize=8)
def _order(n: int, seed: int, stream: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(n)


def shuffled_cycle(n: int, first: int, size: int, seed: int, stream: int) -> list[int]:
    """Items first..first+size-1 of an endless run of shuffled passes over range(n): a batch order
    that is a pure function of (seed, stream, step), so a resumed run continues it exactly (also
    used by relearning, memaudit.stress)."""
    return [int(_order(n, seed, stream, g // n)[g % n]) for g in range(first, first + size)]
