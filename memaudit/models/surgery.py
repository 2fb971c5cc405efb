"""Deleting sink units from a MemSink model. A zeroed hidden unit contributes nothing to the down projection, so
deleting it (its rows of the up/gate projections, its column of the down projection) gives the same outputs as
masking it, in a smaller model that any `transformers` install loads with no memaudit code."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from memaudit.corpus.audit import AuditSet, sink_id
from memaudit.corpus.sources import owner_id
from memaudit.errors import MemauditError
from memaudit.fileio import atomic_dir, check_out
from memaudit.models.sinks import SinkConfig, Sinks, find_mlps, units_in


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


def unit_dim(module: nn.Module, outputs: bool) -> int:
    """The weight dimension that indexes hidden units: output features of an up/gate projection, input features
    of a down projection (GPT-2's Conv1D stores weight as [in, out], a Linear as [out, in])."""
    conv = isinstance(module, Conv1D)
    return int(conv) if outputs else int(not conv)


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
    ids with no sinks skipped). Under the hash scheme a few ids already cover most of the pool, so expect these
    near 1; the disjoint scheme keeps them at 0 for ids of other groups."""
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


def _resolve_ids(ids: list[int | str], data: AuditSet, source: Path) -> dict[int | str, int]:
    """Each given id -> its sink id: an owner's id (hashed as at `data build --id-field`) when the data dir has
    owners, else the document id itself, which is an integer."""
    field = data.manifest.get("config", {}).get("id_field")
    if field:
        return {value: owner_id(value, field, "ids") for value in ids}
    bad = [v for v in ids if not isinstance(v, int) or isinstance(v, bool)]
    if bad:
        raise MemauditError(f"ids: {bad[0]!r} is not a document id (an integer); {source} was built without --id-field")
    return {value: value for value in ids}


def remove_sinks(
    model_dir: Path,
    out: Path,
    *,
    ids: list[int | str] | None = None,
    data_dir: Path | None = None,
    force: bool = False,
) -> dict:
    """`memaudit remove-sinks`: write a copy of a MemSink model dir with sink units deleted.

    ids=None deletes the whole pool: the result is a plain, smaller HF model equal to `off` mode.
    ids given deletes only those documents' sinks; the copy keeps the others' (memaudit.json
    records the kept units, and memaudit's loader re-attaches them). The ids must be documents
    the model was trained on (train.jsonl of `data_dir`, default the data dir it was trained on),
    or, for a data dir built with `--id-field`, the owners of its rows (e.g. user ids).
    A model sink fine-tuned with new units gets its base model's config back whole."""
    from memaudit.models.io import load_model, save_model

    model_dir, out = Path(model_dir), Path(out)
    check_out(out, force=force, inputs=[model_dir, data_dir])
    loaded = load_model(model_dir)
    if loaded.sinks is None:
        raise MemauditError(f"{model_dir}: not a MemSink model (its memaudit.json records no sinks)")
    keep_ids = None
    if ids is not None:
        source = Path(data_dir or loaded.meta.get("data", {}).get("dir", ""))
        if not (source / "train.jsonl").is_file():
            raise MemauditError(f"ids need the training data to check them against: pass `data_dir`; tried {source}")
        data = AuditSet.load(source)
        resolved = _resolve_ids(ids, data, source)
        trained = {sink_id(r) for r in data.train}
        unknown = sorted((given for given, sink in resolved.items() if sink not in trained), key=str)
        ids = sorted(set(resolved.values()))
        if unknown:
            shown = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            raise MemauditError(
                f"ids: {len(unknown)} id(s) not among the model's training documents in {source}: {shown}"
            )
        keep_ids = sorted(trained - set(ids))
    report = prune_sink_units(loaded.model, loaded.sinks, ids=ids, keep_ids=keep_ids)
    meta = {**loaded.meta, "kind": "memsink-removed" if ids is None else "memsink-pruned", "base_model": str(model_dir)}
    summary = {k: v for k, v in report.items() if k != "kept_sink_units"}
    if ids is None:
        meta["sinks"] = None  # a plain model now: nothing to re-attach
        for name, value in loaded.meta.get("init", {}).get("base_mlp", {}).items():  # new:N: the base's own value
            setattr(loaded.model.config, name, value)
        meta["removed_sinks"] = summary
    else:
        meta["sink_pool"] = {"pool_size": report["pool_size"], "kept_sink_units": report["kept_sink_units"]}
        meta["removed_sinks"] = {**summary, "ids": sorted(ids)}
    with atomic_dir(out, force=force) as tmp:
        save_model(loaded.model, loaded.tokenizer, tmp, meta)
    return summary
