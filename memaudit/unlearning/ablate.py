"""`ablate()`: the localize-and-ablate baseline. Score every MLP hidden unit (the input of the
down projection, where MemSinks puts its masks) by how much more it fires on forget text than on
retain text, and zero the top `ratio` of all units.

Score: (mean |a| on forget tokens - mean |a| on retain tokens) / (std of |a| on retain tokens),
an effect size in retain standard deviations. Plain differences favour units that are large
everywhere; plain ratios favour units that almost never fire; the standardized difference is
comparable across layers, so the top units are picked over all layers at once.

Zeroing (a unit's up/gate rows and bias, and its down-projection column) rather than deleting
keeps one MLP width per layer, which a Hugging Face config needs; the output stays a plain model."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import atomic_dir
from memaudit.corpus.tokenizer import encode_documents
from memaudit.memsinks.layouts import find_mlps
from memaudit.models.checks import check_model_job
from memaudit.models.io import save_model
from memaudit.models.zoo import context_length
from memaudit.training.optimize import evaluate_losses, pad_batch
from memaudit.unlearning.config import AblateConfig
from memaudit.unlearning.inputs import base_meta, load_base, load_sets, loss_sets

SCORE = "(mean|a| forget - mean|a| retain) / std|a| retain, over all MLP units of all layers"


@dataclass
class AblateResult:
    path: Path
    units: dict[int, list[int]]  # layer -> zeroed hidden units
    start: dict  # valid / forget / held-out loss of the input model
    end: dict  # the same after ablation


@torch.inference_mode()
def activation_stats(
    model: nn.Module, sequences: list[list[int]], pad_id: int, batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of |activation| of every MLP hidden unit over the real tokens of `sequences`:
    two [layers, units] tensors."""
    layout, mlps = find_mlps(model)
    state: dict = {}

    def hook(layer: int):
        def record(module: nn.Module, args: tuple) -> None:
            a = args[0][state["mask"]].abs().float()
            if layer not in state:
                state[layer] = [a.sum(0), a.square().sum(0)]
            else:
                state[layer][0] += a.sum(0)
                state[layer][1] += a.square().sum(0)

        return record

    handles = [getattr(m, layout.down).register_forward_pre_hook(hook(i)) for i, m in enumerate(mlps)]
    device = next(model.parameters()).device
    count = 0
    try:
        model.eval()
        ordered = sorted(sequences, key=len)
        for i in range(0, len(ordered), batch_size):
            ids, mask, _ = pad_batch(ordered[i : i + batch_size], pad_id, device)
            state["mask"] = mask.bool()
            model.base_model(input_ids=ids, attention_mask=mask)
            count += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    sums = torch.stack([state[i][0] for i in range(len(mlps))]).cpu()
    squares = torch.stack([state[i][1] for i in range(len(mlps))]).cpu()
    mean = sums / count
    return mean, (squares / count - mean.square()).clamp_min(0).sqrt()


def zero_units(model: nn.Module, units: dict[int, list[int]]) -> None:
    """Zero hidden units in place: their rows (and bias) in the up/gate projections and their
    column in the down projection. GPT-2's Conv1D stores weight as [in, out], a Linear as [out, in]."""
    layout, mlps = find_mlps(model)
    with torch.no_grad():
        for layer, idx in units.items():
            index = torch.as_tensor(idx, dtype=torch.long)
            for name, outputs in [*((n, True) for n in layout.up), (layout.down, False)]:
                module = getattr(mlps[layer], name)
                conv = isinstance(module, Conv1D)
                module.weight.index_fill_(int(conv) if outputs else int(not conv), index.to(module.weight.device), 0)
                if outputs and module.bias is not None:
                    module.bias[index.to(module.bias.device)] = 0


def ablate(
    model_dir: Path,
    data_dir: Path,
    out: Path,
    ratio: float = AblateConfig.ratio,
    *,
    forget_file: str | Path | None = None,
    retain_docs: int = AblateConfig.retain_docs,
    eval_docs: int = AblateConfig.eval_docs,
    seed: int = AblateConfig.seed,
    force: bool = False,
) -> AblateResult:
    """Zero the `ratio` of MLP units that fire most specifically on the forget set (scored
    against a seeded sample of `retain_docs` retain documents); writes a plain HF model dir with
    memaudit.json (kind "ablated"). The input model is never modified."""
    cfg = AblateConfig(ratio=ratio, retain_docs=retain_docs, eval_docs=eval_docs, seed=seed)
    model_dir, data_dir, out = Path(model_dir), Path(data_dir), Path(out)
    check_model_job(out, model=model_dir, data_dir=data_dir, inputs=[forget_file], force=force)
    sets = load_sets(data_dir, forget_file)
    if not sets.retain:
        raise MemauditError(f"{data_dir}: no natural training documents to compare the forget set with")
    loaded = load_base(model_dir)
    meta = base_meta("ablated", model_dir, loaded, sets)
    model, pad_id = loaded.model, loaded.tokenizer.pad_token_id
    evals = loss_sets(loaded, sets, cfg.eval_docs)
    start = evaluate_losses(model, evals, pad_id)
    retain = random.Random(cfg.seed).sample(sets.retain, min(cfg.retain_docs, len(sets.retain)))
    forget_mean, _ = activation_stats(
        model, encode_documents(loaded.tokenizer, sets.forget, context_length(loaded.model.config)), pad_id
    )
    retain_mean, retain_std = activation_stats(
        model, encode_documents(loaded.tokenizer, retain, context_length(loaded.model.config)), pad_id
    )
    scores = (forget_mean - retain_mean) / (retain_std + 1e-6)
    n_zero = max(1, round(cfg.ratio * scores.numel()))
    top = scores.flatten().topk(n_zero).indices
    units: dict[int, list[int]] = {}
    for layer, unit in zip((top // scores.shape[1]).tolist(), (top % scores.shape[1]).tolist()):
        units.setdefault(layer, []).append(unit)
    units = {layer: sorted(units[layer]) for layer in sorted(units)}
    zero_units(model, units)
    end = evaluate_losses(model, evals, pad_id)
    meta |= {
        "ablate": {**asdict(cfg), "score": SCORE, "retain_docs": len(retain)},
        "units_zeroed": n_zero,
        "units_total": scores.numel(),
        "units": {str(layer): idx for layer, idx in units.items()},
        "start": start,
        "end": end,
    }
    with atomic_dir(out, force=force) as tmp:
        save_model(model, loaded.tokenizer, tmp, meta)
    return AblateResult(path=out, units=units, start=start, end=end)
