"""One optimization loop, on `accelerate`, shared by `memaudit train` and `memaudit unlearn`.

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
import json
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from math import nan
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memaudit import __version__
from memaudit.corpus.audit import AuditSet, sink_id
from memaudit.corpus.packing import PackedStream
from memaudit.corpus.tokenizer import encode_documents, load_tokenizer
from memaudit.errors import MemauditError
from memaudit.fileio import atomic_dir, check_out, output_lock, sha256_file, write_json
from memaudit.models.io import save_model
from memaudit.models.zoo import build_config, build_model, context_length, n_params
from memaudit.parallel import configure_threads, cpu_only, process_state
from memaudit.precision import Precision, cpu_description, resolve_precision
from memaudit.probes.scoring import mean_nll, score_sequences
from memaudit.training.config import LoopConfig, TrainConfig

LOG_FIELDS = ["step", "epoch", "lr", "train_loss", "tokens_per_s", "valid_loss", "member_loss", "member_loss_own"]


@dataclass
class TrainResult:
    path: Path
    steps: int
    tokens_per_s: float
    final: dict = field(default_factory=dict)
    is_main_process: bool = True  # in a multi-process run, the one that reports


@dataclass
class StepOutput:
    """What one step of a method computed: the loss to minimize, the tokens it consumed on this
    process (for throughput), and extra scalars averaged into the next log row."""

    loss: torch.Tensor
    tokens: int
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


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
            sinks.mode = "own" if s.doc_ids is not None else "off"
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
    # cpu=True on machines without an accelerator (memaudit.parallel). The shared state is reset (keeping the process
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
    accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    values = [out.loss.detach().float(), torch.tensor(float(out.tokens), device=out.loss.device)]
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


def train(
    data_dir: Path,
    out: Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    on_step: StepHook | None = None,
) -> TrainResult:
    """Train `cfg.arch` from scratch, or fine-tune the pretrained `cfg.init`, on a data dir's
    training rows (all but the planted ones for the no-repeats oracle; with sinks masked per
    document, or per owner, for a MemSink model), logging valid and member loss as memorization
    grows, and write a Hugging Face model dir with memaudit.json."""
    data_dir, out = Path(data_dir), Path(out)
    work = work_dir(out, inputs=[data_dir], resume=resume, force=force)
    with run_lock(work):
        return _train(data_dir, out, work, cfg, resume=resume, force=force, progress=progress, on_step=on_step)


def _train(
    data_dir: Path,
    out: Path,
    work: Path,
    cfg: TrainConfig,
    *,
    resume: bool,
    force: bool,
    progress: bool,
    on_step: StepHook | None,
) -> TrainResult:
    accelerator, precision = make_accelerator(cfg, announce=progress)
    data = AuditSet.load(data_dir)
    tok = load_tokenizer(data_dir / "tokenizer")
    model, init = _initial_model(cfg, tok, data_dir)
    config = model.config
    if cfg.seq_len > context_length(config):
        raise MemauditError(f"seq_len {cfg.seq_len} exceeds the model's context of {context_length(config)} tokens")
    sinks, frozen = _attach_sinks(model, cfg, init)
    stream = training_stream(data, tok, cfg)
    loss_sets = _loss_sets(data, tok, context_length(config), cfg.eval_docs, with_own=sinks is not None)

    def evaluate(model: torch.nn.Module, done: int) -> dict:
        epoch = round(done * cfg.batch_size / stream.blocks_per_epoch, 3)
        return {"epoch": epoch, **evaluate_losses(model, loss_sets, tok.pad_token_id, sinks)}

    result = optimize(
        accelerator,
        model,
        cfg,
        _packed_step(stream, sinks, cfg, accelerator),
        evaluate,
        work=work,
        log_fields=LOG_FIELDS,
        resume=resume,
        progress=progress,
        on_step=on_step,
        after_step=frozen.restore if frozen else None,
    )
    if sinks is not None:
        sinks.mode = "off"
    meta = {
        "memaudit_version": __version__,
        "kind": "memsink" if cfg.sinks else ("no-repeats" if cfg.no_repeats else "standard"),
        "arch": init["model_type"] if init else cfg.arch,
        **({"init": init} if init else {}),
        "parameters": n_params(result.model),
        "data": {"dir": str(data_dir), "manifest_sha256": sha256_file(data_dir / "manifest.json")},
        "train": asdict(cfg),
        "sinks": cfg.sinks,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
        "epochs": round(cfg.steps * cfg.batch_size / stream.blocks_per_epoch, 3),
        "processes": accelerator.num_processes,
        "tokens_per_s": round(result.tokens_per_s, 1),
        **run_environment(accelerator, precision),
        "final": result.final,
    }
    write_model_dir(accelerator, result.model, tok, out, work, meta, result.log_path, force)
    return TrainResult(out, cfg.steps, result.tokens_per_s, result.final, accelerator.is_main_process)


def _initial_model(
    cfg: TrainConfig, tok: PreTrainedTokenizerBase, data_dir: Path
) -> tuple[PreTrainedModel, dict | None]:
    """The model a run starts from, and what `init` records: `cfg.arch` built from scratch, or
    the pretrained `cfg.init` (whose tokenizer must be the data dir's)."""
    if not cfg.init:
        return build_model(build_config(cfg.arch, len(tok), tok.bos_token_id, tok.eos_token_id), cfg.seed), None
    from memaudit.training.finetune import load_init

    return load_init(cfg.init, tok, str(data_dir))


def _packed_step(stream: PackedStream, sinks, cfg: TrainConfig, accelerator: Accelerator) -> StepFn:
    """Next-token loss on this process's share of the step's packed sequences, with each
    token's document (or owner) switching its sinks on in a MemSink run."""
    local = cfg.batch_size // accelerator.num_processes

    def step(model: torch.nn.Module, index: int) -> StepOutput:
        tokens, ids = stream.batch(index * cfg.batch_size + accelerator.process_index * local, local)
        tokens = torch.from_numpy(tokens).to(accelerator.device)
        if sinks is not None:
            sinks.set_doc_ids(torch.from_numpy(ids).to(accelerator.device))
        return StepOutput(model(input_ids=tokens, labels=tokens).loss, tokens.numel())

    return step


def _attach_sinks(model: PreTrainedModel, cfg: TrainConfig, init: dict | None):
    """A MemSink run's sinks (in training mode `own`), after widening every MLP by the new sink units of
    `--sink-units new:N` (recording the base's MLP size in `init`), and the frozen base of `--freeze-base`."""
    if not cfg.sinks:
        return None, None
    from memaudit.models.sinks import SinkConfig, Sinks
    from memaudit.models.surgery import add_sink_units
    from memaudit.training.finetune import FrozenBase

    sink_config = SinkConfig.from_dict(cfg.sinks)
    if sink_config.new_units:
        init["base_mlp"] = add_sink_units(model, sink_config.new_units)
    sinks = Sinks(model, sink_config)
    sinks.mode = "own"
    frozen = FrozenBase(model, sinks.n_shared, train_shared_mlp=cfg.train_shared_mlp) if cfg.freeze_base else None
    return sinks, frozen


def blocks_per_epoch(data_dir: Path, configs: list[TrainConfig]) -> list[int]:
    """Training sequences in one pass over a data dir's training stream under each config (the
    oracle's without the planted documents): what equal exposure to a text means in steps. The
    data dir is read and tokenized once for all of them."""
    data_dir = Path(data_dir)
    data, tok = AuditSet.load(data_dir), load_tokenizer(data_dir / "tokenizer")
    return [training_stream(data, tok, cfg).blocks_per_epoch for cfg in configs]


def training_stream(data: AuditSet, tok: PreTrainedTokenizerBase, cfg: TrainConfig) -> PackedStream:
    """The training rows packed into sequences (the oracle's without the planted documents)."""
    rows = [r for r in data.train if not (cfg.no_repeats and r["kind"] != "natural")]
    return PackedStream(
        [ids[1:] for ids in encode_documents(tok, [r["text"] for r in rows])],
        [sink_id(r) for r in rows],
        [r["repeats"] for r in rows],
        eos_id=tok.eos_token_id,
        seq_len=cfg.seq_len,
        seed=cfg.seed,
    )


def _loss_sets(
    data: AuditSet, tok: PreTrainedTokenizerBase, max_len: int, eval_docs: int, *, with_own: bool
) -> list[LossSet]:
    """What training logs at each eval point: valid loss, member loss (sinks off) and, for a
    MemSink model, member loss with each member's own sinks on."""
    members = [r for r in data.audit if r["kind"] == "repeated"]
    member_tokens = encode_documents(tok, [r["text"] for r in members], max_len)
    sets = [
        LossSet("valid_loss", encode_documents(tok, [r["text"] for r in data.valid[:eval_docs]], max_len)),
        LossSet("member_loss", member_tokens),
    ]
    if with_own:
        sets.append(LossSet("member_loss_own", member_tokens, [sink_id(r) for r in members]))
    return sets


def _checkpoint(accelerator: Accelerator, work: Path, step: int) -> None:
    ckpt = work / "checkpoint"
    accelerator.save_state(str(ckpt))
    if accelerator.is_main_process:
        write_json(ckpt / "state.json", {"step": step})  # atomic: a kill mid-write must not break --resume
    accelerator.wait_for_everyone()
