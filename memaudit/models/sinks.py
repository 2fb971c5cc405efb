"""Memorization sinks (Ghosal et al., ICML 2025; the method as specified in docs/memsinks.md) on Hugging Face causal
LMs. Every MLP hidden layer is split into shared units (always on) and a sink pool; each document id switches on
its own subset of the pool, so what is specific to a document collects in units that can be dropped afterwards.

The mask is applied by one forward pre-hook on each down projection, as a single multiply by a full-width scale
(1 on shared units, the mask or a constant on sinks). The per-token scale is built once per batch in
`Sinks.set_doc_ids` from per-id masks cached across batches, and converted to the activation dtype (bf16 stays
bf16) by the first layer that needs it, not by every layer. Multiplying out of place keeps autograd correct for any activation,
including ones (ReLU) that save their output for the backward pass."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from memaudit.errors import MemauditError
from memaudit.models.sink_config import EVAL_MODES, SinkConfig  # SinkConfig: also imported from here
from memaudit.validation import check_choice

# The reference hash (docs/memsinks.md). `id * _BASE` wraps in int64, so the hash sees only `id mod _ID_PERIOD`.
_A, _M, _BASE = 1588635695, 4294967291, 65536
_ID_PERIOD = 2**48
_HOOKED: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # down projections that carry a sink hook


def _check_ids(ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Document ids as int64 [N]; refuses ids the reference hash maps onto id 0 (every sink on)."""
    ids = torch.as_tensor(ids)
    if ids.dim() != 1 or ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise MemauditError(f"document ids must be a 1-D integer tensor, got {ids.dtype} of shape {tuple(ids.shape)}")
    ids = ids.to(torch.int64)
    bad = ids[(ids <= 0) | (ids % _ID_PERIOD == 0)]
    if bad.numel():
        raise MemauditError(
            f"document id {bad[0].item()} is not allowed: ids must be positive and not a multiple of 2**48 "
            "(the reference hash sees only id mod 2**48, and 0 switches every sink on)"
        )
    return ids


@functools.lru_cache(maxsize=16)
def _multipliers(n_sink: int) -> torch.Tensor:
    """c[j] = (a**j as wrapping int64) mod M; integer pow wraps exactly like repeated int64 products."""
    return torch.remainder(torch.pow(torch.tensor(_A), torch.arange(n_sink)), _M)


def hash_mask(ids: torch.Tensor, n_sink: int, p: float) -> torch.Tensor:
    """The reference mask of docs/memsinks.md, bit-exact: int64 with wrap-around. ids: int64 [N] -> bool [N, n_sink].

    h / M is compared with p in float64. Raises MemauditError on ids <= 0 and on multiples of 2**48, which wrap to
    id 0 and would switch every sink on."""
    ids = _check_ids(ids)
    c = _multipliers(n_sink).to(ids.device)
    h = torch.remainder((ids[:, None] * _BASE) * c[None, :], _M)
    return h.to(torch.float64) / _M < p


def group_of(ids: torch.Tensor | Sequence[int], groups: int) -> torch.Tensor:
    """The id group (disjoint scheme): id % groups."""
    return torch.remainder(torch.as_tensor(ids, dtype=torch.int64), groups)


def disjoint_mask(ids: torch.Tensor, n_sink: int, p: float, groups: int) -> torch.Tensor:
    """Group g = id % groups owns the g-th of `groups` contiguous, near-equal slices of the pool; within it an id
    switches on its hash_mask over the slice (about p of it). Ids of different groups never share a sink, so
    deleting one group's sinks leaves every other group's intact. ids: int64 [N] -> bool [N, n_sink]."""
    ids = _check_ids(ids)
    if n_sink < groups:
        raise MemauditError(f"the sink pool has {n_sink} units, fewer than the {groups} disjoint groups; lower groups")
    bounds = [g * n_sink // groups for g in range(groups + 1)]
    group = group_of(ids, groups)
    out = torch.zeros(len(ids), n_sink, dtype=torch.bool, device=ids.device)
    for g in group.unique().tolist():
        rows = group == g
        out[rows, bounds[g] : bounds[g + 1]] = hash_mask(ids[rows], bounds[g + 1] - bounds[g], p)
    return out


@dataclass(frozen=True)
class MlpLayout:
    """Where one model family keeps its MLP hidden units: the `up` projections produce them (output features), the
    `down` projection consumes them (input features), and config field `size_attr` holds their number."""

    up: tuple[str, ...]
    down: str
    size_attr: str


_GATED = MlpLayout(("gate_proj", "up_proj"), "down_proj", "intermediate_size")
LAYOUTS: dict[str, MlpLayout] = {
    "gpt2": MlpLayout(("c_fc",), "c_proj", "n_inner"),
    "llama": _GATED,
    "qwen2": _GATED,
    "mistral": _GATED,
    "gpt_neox": MlpLayout(("dense_h_to_4h",), "dense_4h_to_h", "intermediate_size"),
}


def find_mlps(model: nn.Module) -> tuple[MlpLayout, list[nn.Module]]:
    """The model's MLP layout and its MLP modules, one per block, in order; MemauditError for other models."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    layout = LAYOUTS.get(model_type)
    if layout is None:
        raise MemauditError(
            f"memorization sinks do not support {type(model).__name__} (model_type {model_type!r}); "
            f"supported model types: {', '.join(LAYOUTS)}"
        )
    names = (*layout.up, layout.down)
    mlps = [m for m in model.modules() if all(isinstance(getattr(m, n, None), nn.Module) for n in names)]
    if len(mlps) != config.num_hidden_layers:
        raise MemauditError(
            f"found {len(mlps)} MLPs with {', '.join(names)} in {type(model).__name__}, "
            f"expected one per layer ({config.num_hidden_layers})"
        )
    return layout, mlps


def units_in(down: nn.Module) -> int:
    """Number of hidden units a down projection consumes (GPT-2's Conv1D stores its weight transposed)."""
    return down.nx if isinstance(down, Conv1D) else down.in_features


class Sinks:
    """Sink masking attached to a Hugging Face causal LM (GPT-2, Llama, Qwen2, Mistral, GPT-NeoX).

    Hidden units [0, n_shared) are shared, [n_shared, n_hidden) are the sink pool. `mode` says what the pool does
    in the next forward calls: "own" (training, and "memorization on"): each token's document mask, from
    `set_doc_ids`; "off" (the paper's evaluation): pool zeroed; "off-rescaled": pool zeroed, shared units times
    (g + p) / g; "mean": pool times p. Default "own", so an evaluation that forgets to pick a mode fails loudly.

    A model whose pool was partly deleted (surgery.prune_sink_units with ids) keeps the sinks of the other ids:
    pass the prune report's `pool_size` (original pool width) and `kept_sink_units` (surviving original pool
    indices, ascending); masks are then the original masks restricted to those units."""

    def __init__(
        self,
        model: nn.Module,
        config: SinkConfig,
        *,
        pool_size: int | None = None,
        kept_sink_units: Sequence[int] | None = None,
    ) -> None:
        self.config = config
        self.layout, self.mlps = find_mlps(model)
        downs = [getattr(m, self.layout.down) for m in self.mlps]
        widths = {units_in(d) for d in downs}
        if len(widths) != 1:
            raise MemauditError(f"MLP widths differ between layers ({sorted(widths)}); sinks need one width")
        self.n_hidden = widths.pop()
        self.kept_sink_units = self._kept(kept_sink_units, pool_size)
        if self.kept_sink_units is None:
            self.n_shared = self._shared_units(self.n_hidden)
            self.pool_size = self.n_hidden - self.n_shared
        else:
            self.n_shared = self.n_hidden - len(self.kept_sink_units)
            self.pool_size = pool_size
            if self._shared_units(self.n_shared + pool_size) != self.n_shared:
                raise MemauditError(
                    f"the model's MLP width {self.n_hidden} does not fit a pool of {pool_size} units with "
                    f"{len(self.kept_sink_units)} kept at shared fraction {config.shared_fraction}"
                )
        self.n_sink = self.n_hidden - self.n_shared
        if self.n_shared < 1 or self.n_sink < 1:
            raise MemauditError(
                f"an MLP width of {self.n_hidden} at shared fraction {config.shared_fraction} leaves "
                f"{self.n_shared} shared and {self.n_sink} sink units; both need at least one"
            )
        if config.scheme == "disjoint" and self.pool_size < config.groups:
            raise MemauditError(f"a sink pool of {self.pool_size} units cannot hold {config.groups} disjoint groups")
        if any(d in _HOOKED for d in downs):
            raise MemauditError("this model already has sinks attached: call remove() on them first")
        self._weight = downs[0].weight  # dtype and device for masks built ahead of the forward
        self._masks: dict[int, torch.Tensor] = {}  # id -> bool [n_sink]; ids repeat across batches
        self._mode = "own"
        self._own: torch.Tensor | None = None  # [batch, seq, n_hidden] scale from set_doc_ids
        self._scales: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}  # scale by activation dtype/device
        self._handles = [d.register_forward_pre_hook(self._hook) for d in downs]
        _HOOKED.update(downs)

    def _shared_units(self, width: int) -> int:
        """Shared units of an MLP `width` wide: all but the N new ones of a sink fine-tuned model, else the first
        int(width * G)."""
        new = self.config.new_units
        return width - new if new is not None else int(width * self.config.shared_fraction)

    @staticmethod
    def _kept(kept: Sequence[int] | None, pool_size: int | None) -> torch.Tensor | None:
        if kept is None and pool_size is None:
            return None
        if kept is None or pool_size is None:
            raise MemauditError("a pruned sink pool needs both pool_size and kept_sink_units (from the prune report)")
        units = torch.as_tensor(list(kept), dtype=torch.int64)
        if len(units) and (units[0] < 0 or units[-1] >= pool_size or (units.diff() <= 0).any()):
            raise MemauditError(f"kept_sink_units must be ascending, distinct and within [0, {pool_size})")
        return units

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = check_choice("sink mode", mode, EVAL_MODES)
        self._scales.clear()

    def mask_for_ids(self, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """bool [N, n_sink]: each id's sinks under this config's scheme (restricted to kept units if pruned)."""
        ids = _check_ids(ids).cpu()
        wanted = ids.tolist()
        missing = [i for i in dict.fromkeys(wanted) if i not in self._masks]
        if missing:
            cfg = self.config
            fresh = torch.tensor(missing)
            if cfg.scheme == "hash":
                masks = hash_mask(fresh, self.pool_size, cfg.active_fraction)
            else:
                masks = disjoint_mask(fresh, self.pool_size, cfg.active_fraction, cfg.groups)
            if self.kept_sink_units is not None:
                masks = masks[:, self.kept_sink_units]
            self._masks.update(zip(missing, masks, strict=True))
        if not wanted:
            return torch.zeros(0, self.n_sink, dtype=torch.bool)
        return torch.stack([self._masks[i] for i in wanted])

    def set_doc_ids(self, doc_ids: torch.Tensor | None) -> None:
        """Per-token document ids [batch, seq] (int64) for the next forward calls in "own" mode; [batch, 1] gives
        each row one id for any length (generation with a KV cache). Builds the per-token scale here, once."""
        self._scales.clear()
        if doc_ids is None:
            self._own = None
            return
        doc_ids = torch.as_tensor(doc_ids)
        if doc_ids.dim() != 2:
            raise MemauditError(f"doc_ids must be [batch, seq], got shape {tuple(doc_ids.shape)}")
        unique, inverse = torch.unique(doc_ids, return_inverse=True)
        table = torch.ones(len(unique), self.n_hidden, dtype=self._weight.dtype, device=self._weight.device)
        table[:, self.n_shared :] = self.mask_for_ids(unique).to(table.device)
        self._own = table[inverse.to(table.device)]

    def _base_scale(self) -> torch.Tensor:
        if self._mode == "own":
            if self._own is None:
                raise MemauditError(
                    "sink mode 'own' needs each token's document id: call Sinks.set_doc_ids(doc_ids) before the "
                    f"forward, or set another mode ({', '.join(m for m in EVAL_MODES if m != 'own')})"
                )
            return self._own
        shared, sink = EVAL_MODES[self._mode].scales(self.config.shared_fraction, self.config.active_fraction)
        return torch.cat([torch.full((self.n_shared,), shared), torch.full((self.n_sink,), sink)])

    def _hook(self, module: nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        key = (hidden.dtype, hidden.device)
        scale = self._scales.get(key)
        if scale is None:
            scale = self._scales[key] = self._base_scale().to(device=hidden.device, dtype=hidden.dtype)
        if scale.dim() > 1 and (scale.shape[0] != hidden.shape[0] or scale.shape[1] not in (1, hidden.shape[1])):
            raise MemauditError(
                f"doc_ids of shape {tuple(scale.shape[:-1])} do not match a forward over {tuple(hidden.shape[:-1])} "
                "tokens: call Sinks.set_doc_ids with this batch's ids ([batch, seq] or [batch, 1])"
            )
        return (hidden * scale, *args[1:])

    def remove(self) -> None:
        """Detach the hooks: the model runs as if it had no sinks (every sink unit on)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for mlp in self.mlps:
            _HOOKED.discard(getattr(mlp, self.layout.down))
