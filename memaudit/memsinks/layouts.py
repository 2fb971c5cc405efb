"""Where each model family keeps its MLP hidden units: what sinks mask, what surgery deletes or
adds, and what ablation zeroes. A family is supported once its `model_type` is in `LAYOUTS`."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers.pytorch_utils import Conv1D

from memaudit.common.errors import MemauditError


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


def unit_dim(module: nn.Module, outputs: bool) -> int:
    """The weight dimension that indexes hidden units: output features of an up/gate projection, input features
    of a down projection (GPT-2's Conv1D stores weight as [in, out], a Linear as [out, in])."""
    conv = isinstance(module, Conv1D)
    return int(conv) if outputs else int(not conv)
