"""`unlearn()`: post-hoc removal of memorized documents from a standard model by gradient
ascent, GradDiff, NPO or SimNPO, on the same optimization loop as training. The forget and
retain batches are a pure function of (seed, step), so a run resumes exactly like training;
`max_degradation` rolls back to the last evaluated state whose valid loss stayed within the
limit, so a run cannot silently destroy the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from memaudit.common.errors import MemauditError
from memaudit.corpus.tokenizer import encode_documents
from memaudit.models.checks import check_model_job
from memaudit.models.zoo import context_length
from memaudit.training.optimize import (
    Guard,
    StepFn,
    StepOutput,
    evaluate_losses,
    make_accelerator,
    optimize,
    pad_batch,
    run_environment,
    run_lock,
    shuffled_cycle,
    work_dir,
    write_model_dir,
)
from memaudit.unlearning.config import UnlearnConfig
from memaudit.unlearning.inputs import base_meta, load_base, load_sets, loss_sets
from memaudit.unlearning.losses import ForgetBatch, sequence_logp

LOG_FIELDS = [
    "step",
    "lr",
    "train_loss",
    "forget_nll",
    "retain_nll",
    "tokens_per_s",
    "valid_loss",
    "forget_loss",
    "heldout_loss",
]


@dataclass
class UnlearnResult:
    path: Path
    method: str
    steps: int  # optimizer steps behind the written model
    stopped_early: str | None  # why max_degradation ended the run, if it did
    start: dict  # valid / forget / held-out loss of the input model
    end: dict  # the same for the written model
    is_main_process: bool = True


def unlearn(
    model_dir: Path,
    data_dir: Path,
    out: Path,
    config: UnlearnConfig | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> UnlearnResult:
    """Unlearn the forget set from the model in `model_dir`; writes a plain HF model dir to `out`
    with memaudit.json (kind "unlearned") and unlearn_log.csv. The input model is never modified."""
    cfg = (config or UnlearnConfig()).resolved()
    model_dir, data_dir, out = Path(model_dir), Path(data_dir), Path(out)
    check_model_job(out, model=model_dir, data_dir=data_dir, inputs=[cfg.forget_file], force=force)
    work = work_dir(out, inputs=[model_dir, data_dir, cfg.forget_file], resume=resume, force=force)
    with run_lock(work):
        return _unlearn(model_dir, data_dir, out, work, cfg, resume=resume, force=force, progress=progress)


def _unlearn(
    model_dir: Path,
    data_dir: Path,
    out: Path,
    work: Path,
    cfg: UnlearnConfig,
    *,
    resume: bool,
    force: bool,
    progress: bool,
) -> UnlearnResult:
    sets = load_sets(data_dir, cfg.forget_file)
    method = cfg.spec
    if method.uses_retain and not sets.retain:
        raise MemauditError(f"{data_dir}: no natural training documents to retain; {cfg.method} needs them")
    accelerator, precision = make_accelerator(cfg, announce=progress)
    loaded = load_base(model_dir)
    meta = base_meta("unlearned", model_dir, loaded, sets)
    model, pad_id = loaded.model, loaded.tokenizer.pad_token_id
    forget = encode_documents(loaded.tokenizer, sets.forget, context_length(model.config))
    # Retain documents cut to the longest forget document: whole natural paragraphs (10 to 256+
    # tokens) padded to the longest of a batch spent ~2.5x the step's compute on padding.
    retain = encode_documents(loaded.tokenizer, sets.retain, max(map(len, forget)))
    evals = loss_sets(loaded, sets, cfg.eval_docs)
    start = evaluate_losses(model, evals, pad_id)
    ref_logp = _reference_logp(model, forget, pad_id, accelerator) if method.needs_reference else None
    result = optimize(
        accelerator,
        model,
        cfg,
        _method_step(cfg, accelerator, forget, retain, ref_logp, pad_id),
        lambda m, _: evaluate_losses(m, evals, pad_id),
        work=work,
        log_fields=LOG_FIELDS,
        label="unlearn",
        resume=resume,
        progress=progress,
        guard=_degradation_guard(start["valid_loss"], cfg.max_degradation),
    )
    # No row for the kept state when the guard tripped at the first eval of a run (or a resumed one).
    end = {k: result.final[k] for k in start} if result.final else evaluate_losses(result.model, evals, pad_id)
    meta |= {
        "method": cfg.method,
        "unlearn": asdict(cfg),
        "seed": cfg.seed,
        "steps": cfg.steps,
        "steps_done": result.steps,
        "stopped_early": result.stopped is not None,
        "stop_reason": result.stopped,
        "stopped_at_step": result.stopped_at,
        "start": start,
        "end": end,
        "processes": accelerator.num_processes,
        "tokens_per_s": round(result.tokens_per_s, 1),
        **run_environment(accelerator, precision),
    }
    write_model_dir(accelerator, result.model, loaded.tokenizer, out, work, meta, result.log_path, force)
    return UnlearnResult(out, cfg.method, result.steps, result.stopped, start, end, accelerator.is_main_process)


def _method_step(
    cfg: UnlearnConfig,
    accelerator: Accelerator,
    forget: list[list[int]],
    retain: list[list[int]],
    ref_logp: torch.Tensor | None,
    pad_id: int,
) -> StepFn:
    """One step of the method: this process's share of a forget batch and, for methods with a
    retain term, as many retain documents, in one forward pass; batches are a pure function of
    (seed, step), so a resumed run continues exactly."""
    method, local = cfg.spec, cfg.batch_size // accelerator.num_processes
    forget_loss = method.forget_loss()

    def step(model: torch.nn.Module, index: int) -> StepOutput:
        first = index * cfg.batch_size + accelerator.process_index * local
        chosen = shuffled_cycle(len(forget), first, local, cfg.seed, 0)
        seqs = [forget[i] for i in chosen]
        if method.uses_retain:
            seqs += [retain[i] for i in shuffled_cycle(len(retain), first, local, cfg.seed, 1)]
        ids, mask, labels = pad_batch(seqs, pad_id, accelerator.device)
        logp, lengths = sequence_logp(model(input_ids=ids, attention_mask=mask).logits, labels)
        batch = ForgetBatch(logp[:local], lengths[:local])
        if ref_logp is not None:
            batch.ref_logp = ref_logp[chosen].to(batch.logp.device)
        loss = forget_loss(batch, cfg)
        logs = {"forget_nll": -batch.logp.sum() / batch.lengths.sum()}
        if method.uses_retain:
            logs["retain_nll"] = -logp[local:].sum() / lengths[local:].sum()
            loss = loss + cfg.retain_weight * logs["retain_nll"]
        return StepOutput(loss, int(mask.sum()), logs)

    return step


def _degradation_guard(start_valid: float, max_degradation: float | None) -> Guard | None:
    """Ends a run at the eval point whose valid loss is more than `max_degradation` nats above the
    start (NaN too); optimize() then keeps the last state within the limit."""
    if max_degradation is None:
        return None
    limit = start_valid + max_degradation

    def guard(row: dict) -> str | None:
        if row["valid_loss"] <= limit:  # False for NaN too
            return None
        return (
            f"valid loss {row['valid_loss']:.3f} at step {row['step']} is more than max_degradation "
            f"{max_degradation} above the starting {start_valid:.3f}"
        )

    return guard


@torch.no_grad()
def _reference_logp(
    model: torch.nn.Module, forget: list[list[int]], pad_id: int, accelerator: Accelerator
) -> torch.Tensor:
    """log pi_ref(y|x) of every forget document under the starting model, computed once (the
    reference is frozen), with the same autocast as the steps so that pi_theta/pi_ref starts at 1."""
    model.eval()
    out = []
    for i in range(0, len(forget), 16):
        ids, mask, labels = pad_batch(forget[i : i + 16], pad_id, next(model.parameters()).device)
        with accelerator.autocast():
            out.append(sequence_logp(model(input_ids=ids, attention_mask=mask).logits, labels)[0])
    model.train()
    return torch.cat(out).cpu()
