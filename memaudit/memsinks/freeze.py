"""Training only the sink units of a sink fine-tuned model (`--freeze-base`)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from memaudit.memsinks.layouts import find_mlps, unit_dim


class FrozenBase:
    """`--freeze-base`: only the new sink units train (with `train_shared_mlp`, the whole MLPs). Parameters outside
    the MLPs stop requiring gradients. The pretrained units live in the same tensors as the new ones, so their
    slices get zero gradients (clipping then sees only what trains) and are copied back after every optimizer
    step, because AdamW's decoupled weight decay moves a weight even when its gradient is zero."""

    def __init__(self, model: PreTrainedModel, n_base: int, *, train_shared_mlp: bool) -> None:
        layout, mlps = find_mlps(model)
        projections = [(getattr(m, name), name != layout.down) for m in mlps for name in (*layout.up, layout.down)]
        trainable = {id(p) for module, _ in projections for p in module.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        self._kept: list[tuple[torch.nn.Parameter, int, int, torch.Tensor]] = []
        if train_shared_mlp:
            return
        for module, outputs in projections:
            self._freeze_slice(module.weight, unit_dim(module, outputs), n_base)
            if module.bias is not None:
                if outputs:  # one bias per unit: the new units' train
                    self._freeze_slice(module.bias, 0, n_base)
                else:  # the down projection's bias belongs to the base model
                    module.bias.requires_grad_(False)

    def _freeze_slice(self, param: torch.nn.Parameter, dim: int, n: int) -> None:
        def zero_frozen(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()
            grad.narrow(dim, 0, n).zero_()
            return grad

        param.register_hook(zero_frozen)
        self._kept.append((param, dim, n, param.detach().narrow(dim, 0, n).clone()))

    def restore(self) -> None:
        """Put the pretrained slices back exactly as they were."""
        with torch.no_grad():
            for param, dim, n, original in self._kept:
                param.narrow(dim, 0, n).copy_(original)
