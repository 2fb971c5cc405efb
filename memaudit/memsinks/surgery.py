"""Unit surgery on a model's MLPs: deleting sink units (all of them, or one set of ids') and adding
new ones for sink fine-tuning. A zeroed hidden unit contributes nothing to the down projection, so
deleting it (its rows of the up/gate projections, its column of the down projection) gives the same outputs as
masking it, in a smaller model that any `transformers` install loads with no memaudit code."""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from memaudit.common.errors import MemauditError
from memaudit.memsinks.config import SinkConfig
from memaudit.memsinks.layouts import find_mlps, unit_dim, units_in
from memaudit.memsinks.sinks import Sinks


def _keep_units(module: nn.Module, keep: torch.Tensor, *, outputs: bool) -> None:
    """Keep only hidden units `keep` of a projection: its output features (up/gate) or input features (down).
    GPT-2's Conv1D stores weight as [in, out], a Linear as [out, in]."""
    keep = keep.to(module.weight.device)
    module.weight = nn.Parameter(
        module.weight.detach().index_select(unit_dim(module, outputs), keep), module.weight.requires_grad
    )
    if outputs and module.bias is not None:
        module.bias = nn.Parameter(module.bias.detach()[keep], module.bias.requires_grad)
    setattr(module, _width_attr(module, outputs), len(keep))


def _width_attr(module: nn.Module, outputs: bool) -> str:
    conv = isinstance(module, Conv1D)
    return ("nf" if conv else "out_features") if outputs else ("nx" if conv else "in_features")


def _add_units(module: nn.Module, n: int, *, outputs: bool) -> None:
    """Append `n` hidden units to a projection: random rows (at the spread of the pretrained ones, so they start
    as ordinary units) on an up/gate projection, zero columns on the down projection."""
    weight = module.weight.detach()
    dim = unit_dim(module, outputs)
    shape = [*weight.shape]
    shape[dim] = n
    fresh = torch.randn(shape, dtype=weight.dtype, device=weight.device) * weight.std() if outputs else None
    fresh = weight.new_zeros(shape) if fresh is None else fresh
    module.weight = nn.Parameter(torch.cat([weight, fresh], dim), module.weight.requires_grad)
    if outputs and module.bias is not None:
        module.bias = nn.Parameter(
            torch.cat([module.bias.detach(), module.bias.new_zeros(n)]), module.bias.requires_grad
        )
    attr = _width_attr(module, outputs)
    setattr(module, attr, getattr(module, attr) + n)


def add_sink_units(model: nn.Module, n: int) -> dict:
    """Widen every MLP by `n` hidden units after its pretrained ones: the sink pool of `--sink-units new:N`. Their
    down-projection columns start at zero, so the model computes what it did before (its knowledge is untouched at
    step 0) and gradients reach the new units from the first step. Returns the config field it changed with its
    old value, so `remove_sinks` can give back the base model's config exactly."""
    layout, mlps = find_mlps(model)
    for mlp in mlps:
        for name in layout.up:
            _add_units(getattr(mlp, name), n, outputs=True)
        _add_units(getattr(mlp, layout.down), n, outputs=False)
    base = {layout.size_attr: getattr(model.config, layout.size_attr)}
    setattr(model.config, layout.size_attr, units_in(getattr(mlps[0], layout.down)))
    return base


def prune_sink_units(
    model: nn.Module, sinks: Sinks, ids: list[int] | None = None, keep_ids: list[int] | None = None
) -> dict:
    """Delete sink units from every MLP, in place, and detach the sinks' hooks (replaced parameters: rebuild any
    optimizer). ids=None deletes the whole pool: the model then equals `off` mode and is a plain HF model. ids
    given deletes the union of those ids' sinks; the rest keep working for the other ids through
    `reattach_sinks(model, report)`.

    Report: units_before/units_after/removed (per MLP), pool_fraction_removed (for ids: the fraction of the pool
    their sinks cover), sink_config, pool_size (original pool width) and kept_sink_units (surviving original pool
    indices), which with the config rebuild the masks. With keep_ids (ids whose memorization should stay), how
    much the deletion hits their sinks: keep_ids_sinks_removed_mean / _max (fraction of each one's sinks deleted;
    ids with no sinks skipped) and keep_ids_hit (how many lost any). Under the hash scheme a few ids already cover
    most of the pool, so expect these near 1; the disjoint scheme keeps them at 0 for ids of other groups; under the
    sparse scheme an id shares about k * k / pool units with each other one."""
    layout, mlps = find_mlps(model)
    if list(map(id, mlps)) != list(map(id, sinks.mlps)):
        raise MemauditError("these sinks are attached to another model")
    if any(units_in(getattr(m, layout.down)) != sinks.n_hidden for m in mlps):
        raise MemauditError("the model's MLPs no longer match these sinks (pruned already?): use reattach_sinks")
    if ids is None:
        drop = torch.ones(sinks.n_sink, dtype=torch.bool)
    elif not ids:
        raise MemauditError("ids is empty: pass the document ids whose sinks to delete, or None for the whole pool")
    else:
        drop = sinks.mask_for_ids(ids).any(0)
    report = {
        "units_before": sinks.n_hidden,
        "units_after": sinks.n_hidden - int(drop.sum()),
        "removed": int(drop.sum()),
        "pool_fraction_removed": drop.float().mean().item(),
        "sink_config": sinks.config.to_dict(),
        "pool_size": sinks.pool_size,
        "kept_sink_units": _pool_units(sinks)[~drop].tolist(),
    }
    if keep_ids:
        if ids is not None and set(ids) & set(keep_ids):
            raise MemauditError(f"ids {sorted(set(ids) & set(keep_ids))} are both deleted and kept")
        kept_masks = sinks.mask_for_ids(keep_ids)
        kept_masks = kept_masks[kept_masks.any(1)].float()
        hit = (kept_masks * drop.float()).sum(1) / kept_masks.sum(1)
        report["keep_ids_sinks_removed_mean"] = hit.mean().item() if len(hit) else None
        report["keep_ids_sinks_removed_max"] = hit.max().item() if len(hit) else None
        report["keep_ids_hit"] = int((hit > 0).sum())
    sinks.remove()
    keep = torch.cat([torch.arange(sinks.n_shared), sinks.n_shared + (~drop).nonzero().squeeze(1)])
    for mlp in mlps:
        for name in layout.up:
            _keep_units(getattr(mlp, name), keep, outputs=True)
        _keep_units(getattr(mlp, layout.down), keep, outputs=False)
    setattr(model.config, layout.size_attr, len(keep))
    return report


def _pool_units(sinks: Sinks) -> torch.Tensor:
    """Original pool index of each current sink unit (a pool pruned twice keeps its original numbering)."""
    return torch.arange(sinks.n_sink) if sinks.kept_sink_units is None else sinks.kept_sink_units


def reattach_sinks(model: nn.Module, report: dict) -> Sinks:
    """Sinks for a model whose pool was partly deleted by prune_sink_units(ids=...): each id's mask is its original
    mask restricted to the kept units, so ids whose sinks survived behave as before the deletion."""
    return Sinks(
        model,
        SinkConfig.from_dict(report["sink_config"]),
        pool_size=report["pool_size"],
        kept_sink_units=report["kept_sink_units"],
    )
