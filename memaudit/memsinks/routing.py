"""Routing the repeats to their sinks (`SinkConfig.route`): the loss on the tokens of a document that occurs more
than once (every occurrence with "all", all but its first in each epoch with "copies") trains only that
document's sink units, never the shared units, attention, embeddings or LM head. It is gradient routing (Cloud et
al., 2024, "Gradient Routing: Masking Gradients to Localize Computation in Neural Networks") applied to MemSinks'
sinks: in the plain method every repeat also trains the shared weights, which keep part of the memorization after
the sinks are dropped, so that a membership test still tells members from held-out text. With routing, what the
shared weights learn from a routed occurrence is only what flows back to them through the other documents' loss
(their attention to it in a packed block). `route_scope: mlp` narrows what a routed occurrence is kept from to the
shared MLP units, letting attention, embeddings, norms and the LM head learn from it: the split that says which
part of the shared weights holds the leak (docs/results.md).

One forward, two backward passes: the routed tokens' loss is differentiated first, with respect to the MLP
tensors only, and its sink slices are added to the gradients after the ordinary backward of the rest of the
loss. The second pass computes no weight gradients outside the MLPs, so it costs less than a full backward;
docs/results.md has its measured step time."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from memaudit.memsinks.api import IGNORE_INDEX
from memaudit.memsinks.layouts import unit_dim
from memaudit.memsinks.sinks import Sinks


def split_token_loss(
    logits: torch.Tensor, labels: torch.Tensor, routed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next-token cross-entropy as transformers computes it from `labels` (shifted inside; -100 is ignored), summed
    separately over the targets that are not routed and those that are (None when none is), each divided by the
    number of all targets, so that their sum is the model's usual loss. A target is routed when the token it
    predicts is (`routed`, bool [batch, seq], per position of `labels`)."""
    targets = labels[:, 1:].flatten()
    losses = nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    target_routed = routed[:, 1:].flatten() & (targets != IGNORE_INDEX)
    n = (targets != IGNORE_INDEX).sum().clamp(min=1)
    kept = losses.masked_fill(target_routed, 0).sum() / n
    return kept, (losses.masked_fill(~target_routed, 0).sum() / n if target_routed.any() else None)


def outside_mlps(model: nn.Module, sinks: Sinks) -> list[nn.Parameter]:
    """The trainable tensors that are not part of an MLP: attention, embeddings, norms, LM head (what a routed
    occurrence still trains under `route_scope: mlp`)."""
    inside = {id(p) for mlp in sinks.mlps for p in mlp.parameters()}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in inside]


class SinkGradients:
    """The sink slices of the MLP tensors (up/gate projections: weight and bias rows of the pool; the down
    projection: its pool columns; not its bias, which every unit feeds), and the gradient of a loss that only
    they, and the tensors `in_full` (e.g. `outside_mlps`), may learn from."""

    def __init__(self, sinks: Sinks, *, in_full: Sequence[nn.Parameter] = ()) -> None:
        self.in_full = list(in_full)
        self.slices: list[tuple[nn.Parameter, int]] = []  # (tensor, dimension that indexes hidden units)
        for mlp in sinks.mlps:
            for name in (*sinks.layout.up, sinks.layout.down):
                module = getattr(mlp, name)
                outputs = name != sinks.layout.down
                self.slices.append((module.weight, unit_dim(module, outputs)))
                if outputs and module.bias is not None:
                    self.slices.append((module.bias, 0))
        self.start, self.width = sinks.n_shared, sinks.n_sink

    def of(
        self, loss: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> Callable[[], None]:
        """Differentiate `loss` now (keeping the graph for the backward of the rest of the loss) and return what
        adds its sink slices to the tensors' gradients once that backward has run. `reduce` averages a gradient
        over the processes of a distributed run, as DDP does for the ordinary backward."""
        tensors = [t for t, _ in self.slices] + self.in_full
        grads = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
        n = len(self.slices)
        pieces = [
            (t, dim, g.narrow(dim, self.start, self.width))
            for (t, dim), g in zip(self.slices, grads[:n])
            if g is not None
        ]
        pieces += [(t, None, g) for t, g in zip(self.in_full, grads[n:]) if g is not None]  # dim None: the whole tensor

        def add() -> None:
            for tensor, dim, piece in pieces:
                piece = reduce(piece) if reduce is not None else piece
                if tensor.grad is None:
                    tensor.grad = torch.zeros_like(tensor)
                (tensor.grad if dim is None else tensor.grad.narrow(dim, self.start, self.width)).add_(piece)

        return add
