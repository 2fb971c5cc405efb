"""The one scoring pass (docs/architecture.md): a batched, teacher-forced forward over every audited
sequence that keeps per-token statistics instead of logits. From these arrays every probe is
computed, with no generation: greedy extraction at every prefix length (`hit`), loss and
membership scores (`logp`, `mu`, `sigma`), (n,p)-discoverability (`topk_logp`).

The LM head is applied in row chunks, so peak memory is bounded for any vocabulary size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel

from memaudit.probes.config import TOPK

LOGIT_BYTES_PER_CHUNK = 64 << 20


@dataclass
class ScoredSequence:
    """Statistics for each text token j (predicted from the boundary token and tokens < j)."""

    logp: np.ndarray  # log-prob of the true token
    hit: np.ndarray  # the true token is the argmax (greedy decoding would emit it)
    mu: np.ndarray  # mean log-prob under the model's own next-token distribution
    sigma: np.ndarray  # std of log-probs under that distribution
    topk_logp: np.ndarray  # log-prob of the true token in the renormalized top-k, -inf outside

    def __len__(self) -> int:
        return len(self.logp)


def _token_stats(logits: torch.Tensor, targets: torch.Tensor, topk: int) -> torch.Tensor:
    """[N, V] logits, [N] targets -> [N, 5]: logp, hit, mu, sigma, topk_logp."""
    logits = logits.float()
    logz = torch.logsumexp(logits, dim=-1)
    true = logits.gather(1, targets[:, None]).squeeze(1)
    probs = torch.softmax(logits, dim=-1)
    mean_logit = (probs * logits).sum(-1)
    var = (probs * (logits - mean_logit[:, None]).square()).sum(-1)
    top_vals, top_idx = logits.topk(min(topk, logits.shape[-1]), dim=-1)
    in_top = (top_idx == targets[:, None]).any(-1)
    topk_logp = torch.where(in_top, true - torch.logsumexp(top_vals, -1), torch.full_like(true, -torch.inf))
    hit = (logits.argmax(-1) == targets).float()
    return torch.stack([true - logz, hit, mean_logit - logz, var.clamp_min(0).sqrt(), topk_logp], dim=1)


def _batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest-first so that padding is small and each batch fits the budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * width > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@torch.inference_mode()
def score_sequences(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    *,
    pad_id: int,
    doc_ids: Sequence[int] | None = None,
    sinks=None,
    max_batch_tokens: int = 16384,
    topk: int = TOPK,
) -> list[ScoredSequence]:
    """Score token sequences that each start with the boundary token (BOS/EOS).

    `doc_ids` are needed only for MemSink models in `own` mode: each sequence's document id."""
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    chunk_rows = max(1, LOGIT_BYTES_PER_CHUNK // (4 * head.weight.shape[0] * 4))
    out: list[ScoredSequence | None] = [None] * len(sequences)
    for batch in _batches([len(s) for s in sequences], max_batch_tokens):
        width = len(sequences[batch[0]])
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(sequences[i])] = torch.as_tensor(sequences[i])
            mask[row, : len(sequences[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        if sinks is not None and sinks.mode == "own":
            sinks.set_doc_ids(torch.tensor([doc_ids[i] for i in batch], device=device)[:, None].expand(-1, width))
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        # Position t predicts token t+1; keep only positions whose next token is real text.
        valid = mask[:, 1:].bool()
        rows, targets = hidden[:, :-1][valid], ids[:, 1:][valid]
        stats = []
        for start in range(0, len(rows), chunk_rows):
            logits = head(rows[start : start + chunk_rows])
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            stats.append(_token_stats(logits, targets[start : start + chunk_rows], topk))
        flat = torch.cat(stats).cpu().numpy() if stats else np.zeros((0, 5), np.float32)
        offset = 0
        for i in batch:
            n = len(sequences[i]) - 1
            s = flat[offset : offset + n]
            offset += n
            out[i] = ScoredSequence(s[:, 0], s[:, 1] > 0.5, s[:, 2], s[:, 3], s[:, 4])
    return out  # type: ignore[return-value]


def mean_nll(scored: Sequence[ScoredSequence], token_weighted: bool = False) -> float:
    """Mean NLL: over sequences of each one's per-token mean, or over all tokens pooled."""
    if not scored:
        return float("nan")
    if token_weighted:
        return float(-np.concatenate([s.logp for s in scored]).mean())
    return float(np.mean([-s.logp.mean() for s in scored]))
