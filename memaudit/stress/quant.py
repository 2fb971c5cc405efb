"""Weight-only quantization as a deployment would apply it, simulated in plain torch on any device:
each weight is rounded to a signed integer of `bits` bits and multiplied back by its group's scale
(quantize, then dequantize to the weights' own dtype). Symmetric round-to-nearest (RTN) with one
scale per group of `group_size` input columns of each output row, the scheme of GPTQ/AWQ's
group-wise baselines and llama.cpp's Q8_0/Q4_0 family (the last group of a row may be shorter).

What is quantized: every 2-D weight of a `Linear` or GPT-2 `Conv1D` layer, i.e. the attention and
MLP projections of the transformer blocks. Embeddings (token and position) and the LM head (tied
to the token embedding in GPT-2) stay in full precision, as most 4-bit deployments keep them;
biases and norms are untouched."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from memaudit.stress.attacks import GROUP_SIZE


def fake_quantize(weight: torch.Tensor, bits: int, group_size: int = GROUP_SIZE, in_dim: int = -1) -> torch.Tensor:
    """`weight` after a round trip through `bits`-bit integers: per output row, groups of
    `group_size` consecutive entries along `in_dim` (the input columns) share the scale
    max|w| / (2^(bits-1) - 1), so the largest entry of a group is exact and every entry moves by
    at most half a scale step. Integers stay within +-(2^(bits-1) - 1), so w -> -w quantizes to
    the negation. Computed in float32, returned in the weight's dtype and shape."""
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float().movedim(in_dim, -1)
    rows = w.reshape(-1, w.shape[-1])
    out = torch.empty_like(rows)
    for start in range(0, rows.shape[1], group_size):
        group = rows[:, start : start + group_size]
        scale = group.abs().amax(dim=1, keepdim=True) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group stays zero
        out[:, start : start + group_size] = torch.round(group / scale).clamp(-qmax, qmax) * scale
    return out.reshape(w.shape).movedim(-1, in_dim).to(weight.dtype)


def quantized_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, int]]:
    """(name, layer, input dim of its weight) of every projection that is quantized: each Linear
    ([out, in]) and Conv1D ([in, out]) but the output embedding."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if module is head:
            continue
        if isinstance(module, nn.Linear):
            yield name, module, 1
        elif isinstance(module, Conv1D):
            yield name, module, 0


@torch.no_grad()
def quantize_model(model: nn.Module, bits: int, group_size: int = GROUP_SIZE) -> dict:
    """Quantizes the model's projections in place; returns what was done, for the results: layers,
    weights quantized (and their share of all parameters), and the relative weight error
    ||w - q(w)|| / ||w|| over them."""
    layers, quantized, err, norm = 0, 0, 0.0, 0.0
    for _, layer, in_dim in quantized_layers(model):
        q = fake_quantize(layer.weight, bits, group_size, in_dim)
        err += float((layer.weight.float() - q.float()).square().sum())
        norm += float(layer.weight.float().square().sum())
        layer.weight.copy_(q)
        layers, quantized = layers + 1, quantized + layer.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    return {
        "bits": bits,
        "group_size": group_size,
        "scheme": "symmetric round-to-nearest, weight only",
        "layers": layers,
        "weights": quantized,
        "share_of_parameters": quantized / total if total else 0.0,
        "relative_error": (err / norm) ** 0.5 if norm else 0.0,
    }
