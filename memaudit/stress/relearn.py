"""Relearning attacks: a few steps of fine-tuning on the shared optimization loop (`optimize`:
same precision, threads, checkpoints and `--resume` as training and unlearning), with member loss
measured before and at regular points, so the steps memorization takes to come back can be read
off the curve."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from memaudit.corpus.tokenizer import encode_documents
from memaudit.models.io import LoadedModel
from memaudit.models.zoo import context_length
from memaudit.stress.attacks import StressConfig
from memaudit.training.config import LoopConfig
from memaudit.training.optimize import (
    LossSet,
    StepOutput,
    evaluate_losses,
    make_accelerator,
    optimize,
    pad_batch,
    shuffled_cycle,
)

LOG_FIELDS = ["step", "lr", "train_loss", "tokens_per_s", "member_loss"]


def loop_config(steps: int, config: StressConfig) -> LoopConfig:
    """Relearning's optimizer: the attack's steps at the stress settings, no warm-up (a few dozen
    steps are all there is), no weight decay (nothing to regularize towards), `eval_points`
    evaluations spread over the run."""
    return LoopConfig(
        steps=steps,
        batch_size=config.relearn_batch_size,
        lr=config.relearn_lr,
        warmup_steps=0,
        weight_decay=0.0,
        precision=config.precision,
        threads=config.threads,
        seed=config.seed,
        eval_every=max(1, steps // config.eval_points),
    )


def relearn(
    loaded: LoadedModel,
    texts: list[str],
    measured: list[str],
    steps: int,
    config: StressConfig,
    *,
    work: Path,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Fine-tunes `loaded.model` in place on `texts` (whole documents, `relearn_batch_size` a
    step, in a seeded order) and returns the record of the run: the member loss of `measured`
    (mean token NLL per document, averaged, as a scan's member_loss) before it and at each
    evaluation, and the settings. The model is left in eval mode, ready to scan."""
    cfg = loop_config(steps, config)
    accelerator, precision = make_accelerator(cfg, announce=progress)
    model, pad_id = loaded.model, loaded.tokenizer.pad_token_id
    ctx = context_length(model.config)
    train_tokens = encode_documents(loaded.tokenizer, texts, ctx)
    evals = [LossSet("member_loss", encode_documents(loaded.tokenizer, measured, ctx))]
    start = evaluate_losses(model, evals, pad_id, loaded.sinks)
    local = cfg.batch_size // accelerator.num_processes

    def step(model: torch.nn.Module, index: int) -> StepOutput:
        first = index * cfg.batch_size + accelerator.process_index * local
        seqs = [train_tokens[i] for i in shuffled_cycle(len(train_tokens), first, local, cfg.seed, 2)]
        ids, mask, labels = pad_batch(seqs, pad_id, accelerator.device)
        return StepOutput(model(input_ids=ids, attention_mask=mask, labels=labels).loss, int(mask.sum()))

    result = optimize(
        accelerator,
        model,
        cfg,
        step,
        lambda m, _: evaluate_losses(m, evals, pad_id, loaded.sinks),
        work=work,
        log_fields=LOG_FIELDS,
        label="relearn",
        resume=resume,
        progress=progress,
    )
    result.model.eval()
    loaded.model = result.model
    with open(result.log_path, newline="") as f:
        logged = [{"step": int(r["step"]), "member_loss": float(r["member_loss"])} for r in csv.DictReader(f)]
    return {
        "curve": [{"step": 0, "member_loss": start["member_loss"]}, *logged],
        "documents": len(texts),
        "measured_members": len(measured),
        "optimizer": {k: getattr(cfg, k) for k in ("steps", "batch_size", "lr", "warmup_steps", "weight_decay")},
        "precision": precision.to_dict(),
        "tokens_per_s": round(result.tokens_per_s, 1),
    }
