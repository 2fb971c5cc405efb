"""Generation where it is needed: showing what a model actually emits after a true prefix
(where it diverges from the truth), and the sampling extraction attack. Extraction verdicts
themselves come from the scoring pass; these are batched, left-padded, KV-cached `generate`
calls, so they cost one short decode per batch, not one per sequence."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel


def _left_padded(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.as_tensor(p)
        mask[row, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def generate_continuations(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    pad_id: int,
    doc_ids: Sequence[int] | None = None,
    sinks=None,
    batch_size: int = 64,
    samples: int = 1,
    top_k: int = 40,
    seed: int = 0,
) -> list[list[list[int]]]:
    """For each prompt, `samples` continuations of exactly `max_new_tokens` tokens: greedy
    when samples == 1, else top-k sampling at temperature 1 (seeded)."""
    device = next(model.parameters()).device
    sample = samples > 1
    settings = dict(
        max_new_tokens=max_new_tokens,
        eos_token_id=None,  # run the full length: an emitted EOS is just another (wrong) token here
        do_sample=sample,
        top_k=top_k if sample else None,
        temperature=1.0 if sample else None,
        top_p=None,
        num_return_sequences=samples,
        pad_token_id=pad_id,
        use_cache=True,
    )
    out: list[list[list[int]]] = []
    per_batch = max(1, batch_size // samples)
    for start in range(0, len(prompts), per_batch):
        chunk = prompts[start : start + per_batch]
        ids, mask = _left_padded(chunk, pad_id, device)
        if sinks is not None and sinks.mode == "own":
            # One id per row, broadcast over positions: the KV-cached decode feeds one token at a time.
            rows = torch.tensor(doc_ids[start : start + per_batch], device=device).repeat_interleave(samples)
            sinks.set_doc_ids(rows[:, None])
        if sample:
            torch.manual_seed(seed + start)
        gen = model.generate(input_ids=ids, attention_mask=mask, **settings)[:, ids.shape[1] :].tolist()
        out += [gen[i * samples : (i + 1) * samples] for i in range(len(chunk))]
    return out
