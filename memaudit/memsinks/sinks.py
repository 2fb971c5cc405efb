"""`Sinks`: memorization sinks (Ghosal et al., ICML 2025; the method as specified in docs/memsinks.md)
attached to a Hugging Face causal LM. Every MLP hidden layer is split into shared units (always on)
and a sink pool; each document id switches on its own subset of the pool, so what is specific to a
document collects in units that can be dropped afterwards.

The mask is applied by one forward pre-hook on each down projection, as a single multiply by a
full-width scale (1 on shared units, the mask or a constant on sinks). The per-token scale is built
once per batch in `Sinks.set_doc_ids` from per-id masks cached across batches, and converted to the
activation dtype (bf16 stays bf16) by the first layer that needs it, not by every layer. Multiplying
out of place keeps autograd correct for any activation, including ones (ReLU) that save their output
for the backward pass.

The model's forward also takes `doc_ids=` (a pre-hook on the model hands them to `set_doc_ids`), so a
training loop that only calls the model with a batch dict, as `transformers.Trainer` does, can carry
the ids in the batch."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import nn

from memaudit.common.errors import MemauditError
from memaudit.common.validation import check_choice
from memaudit.memsinks.config import EVAL_MODES, SinkConfig
from memaudit.memsinks.layouts import find_mlps, units_in
from memaudit.memsinks.masks import check_ids, disjoint_mask, hash_mask, sparse_mask

_HOOKED: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # down projections that carry a sink hook


def has_sinks(model: nn.Module) -> bool:
    """Whether sinks are attached to the model now. A second set would mask twice, so `Sinks` refuses one; a
    caller that changes the MLPs before attaching (widening them for new sink units) must ask first."""
    layout, mlps = find_mlps(model)
    return any(getattr(m, layout.down) in _HOOKED for m in mlps)


class Sinks:
    """Sink masking attached to a Hugging Face causal LM (GPT-2, Llama, Qwen2, Mistral, GPT-NeoX).

    Hidden units [0, n_shared) are shared, [n_shared, n_hidden) are the sink pool. `mode` says what the pool does
    in the next forward calls: "own" (training, and "memorization on"): each token's document mask, from
    `set_doc_ids`; "off" (the paper's evaluation): pool zeroed; "off-rescaled": pool zeroed, shared units times
    (g + p) / g; "mean": pool times p (for the sparse scheme p is k / pool: `active_fraction`). Default "own", so an
    evaluation that forgets to pick a mode fails loudly.

    A model whose pool was partly deleted (surgery.prune_sink_units with ids) keeps the sinks of the other ids:
    pass the prune report's `pool_size` (original pool width) and `kept_sink_units` (surviving original pool
    indices, ascending); masks are then the original masks restricted to those units.

    `model(..., doc_ids=ids)` equals `set_doc_ids(ids)` before that forward, for that forward only: a later
    forward without ids runs with none, so mode "own" refuses rather than reuse the previous batch's masks. Ids
    from `set_doc_ids` hold until replaced, because generation runs many forwards over one batch."""

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
        if config.scheme == "sparse" and self.pool_size < config.k:
            raise MemauditError(
                f"a sparse sink pool of {self.pool_size} units cannot give each id k = {config.k} units; lower `k`, "
                "or widen the pool (a lower shared fraction G, or more new units)"
            )
        if any(d in _HOOKED for d in downs):
            raise MemauditError("this model already has sinks attached: call remove() on them first")
        self._weight = downs[0].weight  # dtype and device for masks built ahead of the forward
        self._masks: dict[int, torch.Tensor] = {}  # id -> bool [n_sink]; ids repeat across batches
        self._mode = "own"
        self._own: torch.Tensor | None = None  # [batch, seq, n_hidden] scale from set_doc_ids
        self._scales: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}  # scale by activation dtype/device
        self._ids_from_forward = False  # the ids came with the last forward's doc_ids, so they expire with it
        # The MLP size field before attach_sinks widened the model with new sink units, for whoever saves it:
        # removing the sinks then gives back the base model's config exactly. None: the pool was split off.
        self.base_mlp: dict | None = None
        self._handles = [d.register_forward_pre_hook(self._hook) for d in downs]
        self._handles.append(model.register_forward_pre_hook(self._take_doc_ids, with_kwargs=True))
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
    def active_fraction(self) -> float:
        """The share of the pool one id switches on, which `mean` and `off-rescaled` scale by: P, or for the sparse
        scheme k over the original pool."""
        cfg = self.config
        return cfg.k / self.pool_size if cfg.scheme == "sparse" else cfg.active_fraction

    @property
    def mode(self) -> str:
        """What the sink pool does in the next forwards: one of EVAL_MODES ("own" to train)."""
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = check_choice("sink mode", mode, EVAL_MODES)
        self._scales.clear()

    def mask_for_ids(self, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """bool [N, n_sink]: each id's sinks under this config's scheme (restricted to kept units if pruned)."""
        ids = check_ids(ids).cpu()
        wanted = ids.tolist()
        missing = [i for i in dict.fromkeys(wanted) if i not in self._masks]
        if missing:
            cfg = self.config
            fresh = torch.tensor(missing)
            if cfg.scheme == "hash":
                masks = hash_mask(fresh, self.pool_size, cfg.active_fraction)
            elif cfg.scheme == "disjoint":
                masks = disjoint_mask(fresh, self.pool_size, cfg.active_fraction, cfg.groups)
            else:
                masks = sparse_mask(fresh, self.pool_size, cfg.k)
            if self.kept_sink_units is not None:
                masks = masks[:, self.kept_sink_units]
            self._masks.update(zip(missing, masks, strict=True))
        if not wanted:
            return torch.zeros(0, self.n_sink, dtype=torch.bool)
        return torch.stack([self._masks[i] for i in wanted])

    def set_doc_ids(self, doc_ids: torch.Tensor | None, without_sinks: torch.Tensor | None = None) -> None:
        """Per-token document ids [batch, seq] (int64) for the next forward calls in "own" mode; [batch, 1] gives
        each row one id for any length (generation with a KV cache). Builds the per-token scale here, once. The
        tokens where `without_sinks` (bool, the ids' shape) is true run with the pool off, as the deployed model
        does (`SinkConfig.sinks_for` "repeated": documents seen once)."""
        self._scales.clear()
        self._ids_from_forward = False
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
        if without_sinks is not None:
            self._own[..., self.n_shared :] *= ~torch.as_tensor(without_sinks, device=table.device)[..., None]

    def _take_doc_ids(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Model forward pre-hook: `doc_ids=` leaves the forward's keywords (the model does not know it) for
        `set_doc_ids`; a forward without them drops ids that came with an earlier forward."""
        if "doc_ids" in kwargs:
            kwargs = dict(kwargs)
            self.set_doc_ids(kwargs.pop("doc_ids"))
            self._ids_from_forward = True
            return args, kwargs
        if self._ids_from_forward:
            self.set_doc_ids(None)
        return None

    def _base_scale(self) -> torch.Tensor:
        if self._mode == "own":
            if self._own is None:
                raise MemauditError(
                    "sink mode 'own' needs each token's document id: pass doc_ids ([batch, seq] or [batch, 1]) to "
                    "the model's forward, or call Sinks.set_doc_ids(doc_ids) before it (with transformers.Trainer: "
                    "a collator that adds doc_ids, such as memaudit.memsinks.DocIdCollator, and "
                    "remove_unused_columns=False); or set another mode "
                    f"({', '.join(m for m in EVAL_MODES if m != 'own')})"
                )
            return self._own
        shared, sink = EVAL_MODES[self._mode].scales(self.config.shared_fraction, self.active_fraction)
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
                "tokens: give this batch's ids ([batch, seq] or [batch, 1]) as doc_ids= or through Sinks.set_doc_ids"
            )
        return (hidden * scale, *args[1:])

    def remove(self) -> None:
        """Detach the hooks, the one that takes `doc_ids` included: the model runs as if it had no sinks (every
        sink unit on)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for mlp in self.mlps:
            _HOOKED.discard(getattr(mlp, self.layout.down))
