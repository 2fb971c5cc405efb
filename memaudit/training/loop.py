"""One training loop, on `accelerate`, used by `memaudit train` (and later by unlearning).

AdamW, linear warm-up then cosine decay, gradient clipping, fp32 or bf16 autocast. A run
works in `MODEL.partial/` (checkpoints and the CSV log) and becomes `MODEL/` only when it
finishes, so an interrupted run never looks like a model; `--resume` continues it exactly:
the data order is a pure function of (seed, step), and checkpoints hold model, optimizer,
scheduler and RNG states."""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from memaudit import __version__
from memaudit.corpus.audit import AuditSet
from memaudit.corpus.packing import PackedStream
from memaudit.corpus.tokenizer import encode_documents, load_tokenizer
from memaudit.errors import MemauditError
from memaudit.fileio import atomic_dir, sha256_file
from memaudit.models.io import save_model
from memaudit.models.zoo import build_config, build_model, n_params
from memaudit.probes.scoring import mean_nll, score_sequences

LOG_FIELDS = ["step", "epoch", "lr", "train_loss", "tokens_per_s", "valid_loss", "member_loss", "member_loss_own"]


@dataclass
class TrainConfig:
    arch: str = "gpt2-5m"
    steps: int = 600
    batch_size: int = 16  # sequences per optimizer step, summed over processes
    seq_len: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bf16: bool = False
    seed: int = 0
    no_repeats: bool = False  # the oracle: never sees the planted documents
    sinks: dict | None = None  # SinkConfig.to_dict() for a MemSink model
    eval_every: int = 100
    checkpoint_every: int = 100
    eval_docs: int = 64


@dataclass
class TrainResult:
    path: Path
    steps: int
    tokens_per_s: float
    final: dict = field(default_factory=dict)
    is_main_process: bool = True  # in a multi-process run, the one that reports


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate: linear warm-up, cosine down to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


class _Evaluator:
    """Valid loss and member loss at eval points, so the CSV log shows memorization grow."""

    def __init__(self, data: AuditSet, tok, cfg: TrainConfig, max_len: int):
        valid = data.valid[: cfg.eval_docs]
        members = [r for r in data.audit if r["kind"] == "repeated"]
        self.valid = encode_documents(tok, [r["text"] for r in valid], max_len)
        self.members = encode_documents(tok, [r["text"] for r in members], max_len)
        self.member_ids = [r["doc_id"] for r in members]
        self.pad_id = tok.pad_token_id

    def __call__(self, model, sinks) -> dict[str, float]:
        model.eval()
        score = lambda seqs, **kw: mean_nll(score_sequences(model, seqs, pad_id=self.pad_id, sinks=sinks, **kw))  # noqa: E731
        if sinks is not None:
            sinks.mode = "off"
        out = {"valid_loss": score(self.valid), "member_loss": score(self.members) if self.members else float("nan")}
        if sinks is not None:
            sinks.mode = "own"
            out["member_loss_own"] = score(self.members, doc_ids=self.member_ids) if self.members else float("nan")
        model.train()
        return out


def train(
    data_dir: Path, out: Path, cfg: TrainConfig, *, resume: bool = False, force: bool = False, progress: bool = True
) -> TrainResult:
    data_dir, out = Path(data_dir), Path(out)
    work = out.with_name(out.name + ".partial")
    if out.exists() and not force:
        raise MemauditError(f"{out} already exists; choose another --out or pass --force to replace it")
    if work.exists() and not resume and not force:
        raise MemauditError(f"{work} holds an interrupted run; pass --resume to continue it or --force to start over")
    if resume and not (work / "checkpoint" / "state.json").is_file():
        raise MemauditError(f"--resume: no checkpoint in {work}; run without --resume to start")
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.seq_len < 2:
        raise MemauditError(
            f"steps, batch size and sequence length must be positive, got {cfg.steps}, {cfg.batch_size}, {cfg.seq_len}"
        )

    # cpu=True on machines without an accelerator: only then does a plain Accelerator() join
    # the gloo process group that torchrun sets up (accelerate 1.15 otherwise runs alone).
    accelerator = Accelerator(mixed_precision="bf16" if cfg.bf16 else "no", cpu=not torch.accelerator.is_available())
    if cfg.batch_size % accelerator.num_processes:
        raise MemauditError(f"--batch-size {cfg.batch_size} does not split over {accelerator.num_processes} processes")
    set_seed(cfg.seed)
    data = AuditSet.load(data_dir)
    tok = load_tokenizer(data_dir / "tokenizer")
    rows = [r for r in data.train if not (cfg.no_repeats and r["kind"] != "natural")]
    config = build_config(cfg.arch, len(tok), tok.bos_token_id, tok.eos_token_id)
    model = build_model(config, cfg.seed)
    max_len = getattr(config, "n_positions", None) or config.max_position_embeddings
    if cfg.seq_len > max_len:
        raise MemauditError(f"--seq-len {cfg.seq_len} exceeds the model's context of {max_len} tokens")
    sinks = None
    if cfg.sinks:
        from memaudit.models.sinks import SinkConfig, Sinks

        sinks = Sinks(model, SinkConfig.from_dict(cfg.sinks))
        sinks.mode = "own"
    stream = PackedStream(
        [ids[1:] for ids in encode_documents(tok, [r["text"] for r in rows])],
        [r["doc_id"] for r in rows],
        [r["repeats"] for r in rows],
        eos_id=tok.eos_token_id,
        seq_len=cfg.seq_len,
        seed=cfg.seed,
    )
    evaluate = _Evaluator(data, tok, cfg, max_len)
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    start = 0
    if resume:
        accelerator.load_state(str(work / "checkpoint"))
        start = json.loads((work / "checkpoint" / "state.json").read_text())["step"]
    elif accelerator.is_main_process:  # file system changes happen once, on the main process
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    accelerator.wait_for_everyone()
    log_path = work / "train_log.csv"
    if accelerator.is_main_process:
        kept = []
        if resume and log_path.is_file():
            with open(log_path) as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
        with open(log_path, "w", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(kept)

    local = cfg.batch_size // accelerator.num_processes
    device = accelerator.device
    tokens_per_step = cfg.batch_size * cfg.seq_len
    losses: list[float] = []
    timed_steps, timed_seconds = 0, 0.0
    last: dict = {}
    show = progress and accelerator.is_main_process
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("[bold]train[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  {task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(),
        disable=not show,
    )
    with bar:
        task = bar.add_task(out.name, total=cfg.steps, completed=start, loss=float("nan"), tps=0.0)
        model.train()
        try:
            for step in range(start, cfg.steps):
                t0 = time.perf_counter()
                tokens, ids = stream.batch(step * cfg.batch_size + accelerator.process_index * local, local)
                tokens = torch.from_numpy(tokens).to(device)
                if sinks is not None:
                    sinks.set_doc_ids(torch.from_numpy(ids).to(device))
                with accelerator.autocast():
                    loss = model(input_ids=tokens, labels=tokens).loss
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(accelerator.reduce(loss.detach(), reduction="mean").item())
                elapsed = time.perf_counter() - t0
                if step > start:  # the first step pays for warm-up allocations
                    timed_steps, timed_seconds = timed_steps + 1, timed_seconds + elapsed
                tps = tokens_per_step * timed_steps / timed_seconds if timed_seconds else 0.0
                bar.update(task, advance=1, loss=losses[-1], tps=tps)
                done = step + 1
                if done % cfg.eval_every == 0 or done == cfg.steps:
                    last = {
                        "step": done,
                        "epoch": round(done * cfg.batch_size / stream.blocks_per_epoch, 3),
                        "lr": scheduler.get_last_lr()[0],
                        "train_loss": float(np.mean(losses)),
                        "tokens_per_s": round(tps, 1),
                        **evaluate(accelerator.unwrap_model(model), sinks),
                    }
                    losses = []
                    if sinks is not None:
                        sinks.mode = "own"
                    if accelerator.is_main_process:
                        with open(log_path, "a", newline="") as f:
                            csv.DictWriter(f, LOG_FIELDS).writerow(last)
                if done % cfg.checkpoint_every == 0 and done < cfg.steps:
                    _checkpoint(accelerator, work, done)
        except KeyboardInterrupt:
            raise MemauditError(f"interrupted; {work} holds the last checkpoint, continue with --resume") from None

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        if sinks is not None:
            sinks.mode = "off"
        meta = {
            "memaudit_version": __version__,
            "kind": "memsink" if cfg.sinks else ("no-repeats" if cfg.no_repeats else "standard"),
            "arch": cfg.arch,
            "parameters": n_params(unwrapped),
            "data": {"dir": str(data_dir), "manifest_sha256": sha256_file(data_dir / "manifest.json")},
            "train": asdict(cfg),
            "sinks": cfg.sinks,
            "seed": cfg.seed,
            "steps": cfg.steps,
            "tokens_seen": cfg.steps * tokens_per_step,
            "epochs": round(cfg.steps * cfg.batch_size / stream.blocks_per_epoch, 3),
            "processes": accelerator.num_processes,
            "tokens_per_s": round(timed_steps and tokens_per_step * timed_steps / timed_seconds, 1),
            "final": last,
        }
        with atomic_dir(out, force=force) as tmp:
            save_model(unwrapped, tok, tmp, meta)
            shutil.copy(log_path, tmp / "train_log.csv")
        shutil.rmtree(work)
    accelerator.wait_for_everyone()
    tps = tokens_per_step * timed_steps / timed_seconds if timed_seconds else 0.0
    return TrainResult(
        path=out, steps=cfg.steps, tokens_per_s=tps, final=last, is_main_process=accelerator.is_main_process
    )


def _checkpoint(accelerator: Accelerator, work: Path, step: int) -> None:
    ckpt = work / "checkpoint"
    accelerator.save_state(str(ckpt))
    if accelerator.is_main_process:
        (ckpt / "state.json").write_text(json.dumps({"step": step}))
    accelerator.wait_for_everyone()
