"""GradNorm as OpenUnlearning defines it (`evals/metrics/mia/gradnorm.py`, p = 2; MIMIR's
`attacks/gradnorm.py` is the same with p = inf by default): the gradient of a text's mean token NLL
with respect to every parameter tensor of the model, the L2 norm of each tensor's gradient, and the
mean of those norms over the tensors; negated, so that higher = more member-like (a trained-on text
sits nearer a minimum of the loss, where the gradient is small).

Per-sample gradients come from torch.func (functional_call + vmap(grad)): one batched backward per
chunk of texts, not one backward per text in a Python loop. A chunk holds every text's gradient at
once, so the chunk size comes from the memory there is, and a model whose gradient for a single
text does not fit is refused before the pass starts."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.func import functional_call, grad, vmap
from transformers import PreTrainedModel

from memaudit.common.errors import MemauditError

MAX_CHUNK = 64  # texts per batched backward, at most


def available_memory(device: torch.device) -> int:
    """Bytes free for the pass: the GPU's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def bytes_per_text(model: PreTrainedModel, tokens: int) -> int:
    """A generous estimate of what one text of `tokens` tokens costs the batched backward: its
    gradient (one per parameter, and a copy while the norms are taken) and the activations the
    backward keeps (per layer about 40 hidden-size vectors and the attention scores per token, and
    the logits three times over)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", 12)
    hidden = getattr(cfg, "hidden_size", 768)
    heads = getattr(cfg, "num_attention_heads", 12)
    vocab = getattr(cfg, "vocab_size", 50257)
    activations = 4 * tokens * (layers * (40 * hidden + 3 * heads * tokens) + 3 * vocab)
    return 2 * params + activations


@dataclass(frozen=True)
class GradNormPlan:
    chunk: int  # texts per batched backward


def plan_gradnorm(model: PreTrainedModel, max_tokens: int, sinks=None, *, free: int | None = None) -> GradNormPlan:
    """How many texts go into one batched backward; one clear MemauditError, before the pass, when
    the gradient of a single text would not fit in memory or the model cannot be differentiated per
    text (a MemSink model in `own` mode, whose sinks follow each token's document)."""
    if sinks is not None and sinks.mode == "own":
        raise MemauditError(
            "gradnorm: a MemSink model in sink mode 'own' has no per-text gradient here; scan it in another "
            "sink mode, or drop gradnorm from the suite's mia_attacks"
        )
    device = next(model.parameters()).device
    free = available_memory(device) if free is None else free
    need = bytes_per_text(model, max_tokens)
    if need > 0.8 * free:
        n = sum(p.numel() for p in model.parameters())
        raise MemauditError(
            f"gradnorm: the gradient of one text ({n / 1e6:,.1f}M parameters, up to {max_tokens} tokens) needs about "
            f"{need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free on {device.type}; drop gradnorm from "
            "the suite's mia_attacks, or scan on a machine with more memory"
        )
    return GradNormPlan(chunk=max(1, min(MAX_CHUNK, math.floor(0.5 * free / need))))


def gradient_norms(
    model: PreTrainedModel, sequences: Sequence[Sequence[int]], *, pad_id: int, chunk: int
) -> list[float]:
    """GradNorm's statistic of each sequence (boundary token first): the mean over the model's
    parameter tensors of ||d(mean NLL of the text tokens) / d(tensor)||_2, in the weights' dtype.
    Not negated here: membership scores negate it."""
    device = next(model.parameters()).device
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def text_loss(weights: dict, ids: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        # An all-ones mask: without one, transformers looks for pad ids in the batch (a data-dependent branch vmap
        # refuses); the pads after the text need no masking under causal attention.
        inputs = {"input_ids": ids[None], "attention_mask": torch.ones_like(ids)[None]}
        logits = functional_call(model, (weights, buffers), args=(), kwargs=inputs).logits[0, :-1].float()
        logp = logits.log_softmax(-1).gather(1, ids[1:, None])[:, 0]
        scored = (torch.arange(ids.shape[0] - 1, device=ids.device) < length - 1).to(logp.dtype)
        return -(logp * scored).sum() / scored.sum()

    per_text = vmap(grad(text_loss), in_dims=(None, 0, 0))
    # Eager attention: vmap batches its matmuls, where fused attention kernels branch on the mask's values.
    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in (None, "eager") and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    out: list[float] = [float("nan")] * len(sequences)
    try:
        order = sorted((i for i in range(len(sequences)) if len(sequences[i]) > 1), key=lambda i: -len(sequences[i]))
        for start in range(0, len(order), chunk):
            batch = order[start : start + chunk]
            width = len(sequences[batch[0]])
            # Right-padded: under causal attention a pad after a text changes nothing before it.
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(sequences[i])] = torch.as_tensor(sequences[i])
            lengths = torch.tensor([len(sequences[i]) for i in batch])
            grads = per_text(params, ids.to(device), lengths.to(device))
            norms = torch.stack([g.float().flatten(1).norm(dim=1) for g in grads.values()]).mean(0)
            for i, v in zip(batch, norms.tolist()):
                out[i] = v
            del grads
    finally:
        if impl not in (None, "eager") and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(impl)
    return out
