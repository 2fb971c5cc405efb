"""The one scoring pass (docs/architecture.md): a batched, teacher-forced forward over every audited
sequence that keeps per-token statistics instead of logits. From these arrays every probe is
computed, with no generation: greedy extraction at every prefix length (`hit`), loss and
membership scores (`logp`, `mu`, `sigma`), (n,p)-discoverability (`topk_logp`).

What it adds to a raw forward of the same tokens (benchmarks/scoring_throughput.py):
- sequences are batched longest-first, within a token budget and with little padding (`_batches`);
- the body runs without the last position of each batch, whose prediction has no target;
- the LM head runs in row chunks (LOGIT_BYTES_PER_CHUNK of float32 logits, MIN_CHUNK_ROWS at
  least) filled across batches, so peak memory is bounded for any number of tokens, the full logits
  are never materialized and the head's matrix products are all full-sized;
- the statistics over the vocabulary are a few vectorized passes per chunk: the maxima of k parts of
  each row, one softmax (log Z from its largest probability), two products (mean and variance);
- the top-k (a per-row partial sort, the costliest step) counts only on the rows whose true logit
  reaches the least of those k part maxima: on no other row can it be a top-k or greedy hit. It runs on
  those rows alone when they are few, and on the whole chunk when they are most (copying them out of a
  wide vocabulary would cost more than sorting the rest)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel

from memaudit.probes.config import TOPK

LOGIT_BYTES_PER_CHUNK = 16 << 20  # float32 logits per LM-head chunk, and at least
MIN_CHUNK_ROWS = 256  # rows: fewer make the head's matrix product slow at large vocabularies
PAD_SHARE, PAD_TOKENS = 0.1, 8  # the most padding a sequence gets: this share of its batch's width, or tokens


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


def _token_stats(
    logits: torch.Tensor, targets: torch.Tensor, topk: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """[N, V] logits, [N] targets -> [N, 5]: logp, hit, mu, sigma, topk_logp (into `out` when given).

    Overwrites `logits` when they are float32 already."""
    logits = logits.float()
    n, vocab = logits.shape
    k = min(topk, vocab)
    out = torch.empty(n, 5, device=logits.device) if out is None else out
    true = logits.gather(1, targets[:, None]).squeeze(1)
    # The maxima of max(k, 1) disjoint parts of each row: their largest is the row's maximum, their least a
    # lower bound on its k-th largest logit. A true logit under that bound is neither a greedy nor a top-k hit.
    parts = max(k, 1)
    width = vocab // parts
    part_max = logits[:, : parts * width].view(n, parts, width).amax(-1)
    top, bound = part_max.amax(-1), part_max.amin(-1)
    if parts * width < vocab:
        top = torch.maximum(top, logits[:, parts * width :].amax(-1))
    out[:, 1] = 0.0  # hit
    out[:, 4] = -torch.inf  # topk_logp
    rows = (true >= bound).nonzero().squeeze(1)
    if len(rows):
        tgt = targets[rows]
        if 2 * len(rows) > n:  # most rows: sorting the others too costs less than copying these out
            vals, idx = (t.index_select(0, rows) for t in logits.topk(parts, dim=-1))
        else:  # topk breaks ties the same way on a copy of a row as in place
            vals, idx = logits.index_select(0, rows).topk(parts, dim=-1)
        hit = idx[:, 0] == tgt
        tie = vals[:, 0] == vals[:, 1] if k > 1 else torch.ones_like(hit)
        if tie.any():  # a tied maximum: argmax takes the first, as greedy decoding does
            hit[tie] = logits[rows[tie]].argmax(-1) == tgt[tie]
        out[rows, 1] = hit.float()
        if k >= 1:
            in_top = (idx == tgt[:, None]).any(-1)
            lse_top = torch.logsumexp(vals, -1)
            out[rows, 4] = torch.where(in_top, true[rows] - lse_top, torch.full_like(lse_top, -torch.inf))
    # Moments of the log-probs from one softmax, with the logits shifted by their maximum (y = x - max):
    # the largest probability is exactly 1 / sum(exp(y)), so log Z = max + log sum(exp(y)).
    shifted = logits.sub_(top[:, None])
    probs = torch.softmax(shifted, dim=-1)
    log_sum = probs.amax(-1).log_().neg_()
    weighted = probs.mul_(shifted)
    mean_shift = weighted.sum(-1)  # E[y]
    second = weighted.mul_(shifted).sum(-1)  # E[y^2]
    out[:, 0] = true - top - log_sum
    out[:, 2] = mean_shift - log_sum
    out[:, 3] = (second - mean_shift.square()).clamp_min(0).sqrt()
    return out


def _batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest-first. A batch ends where the next sequence would not fit the token budget, or
    would be padded by more than PAD_SHARE of the batch's width (and more than PAD_TOKENS): padding costs a
    forward as much as text does, and a few more, smaller batches cost little."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        too_many = (len(current) + 1) * width > max_batch_tokens
        too_short = width - lengths[i] > max(PAD_TOKENS, PAD_SHARE * width)
        if current and (too_many or too_short):
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
    chunk_rows = max(MIN_CHUNK_ROWS, LOGIT_BYTES_PER_CHUNK // (4 * head.weight.shape[0]))
    batches = _batches([len(s) for s in sequences], max_batch_tokens)
    order = [i for batch in batches for i in batch]
    flat = torch.empty(sum(len(sequences[i]) - 1 for i in order), 5, device=device)  # rows in `order`
    # Hidden rows wait here for the head, across batches, so that it always runs on full chunks.
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    done = 0  # rows of `flat` written

    def head_and_stats(final: bool) -> None:
        nonlocal pending, done
        rows = torch.cat([r for r, _ in pending]) if len(pending) > 1 else pending[0][0]
        targets = torch.cat([t for _, t in pending]) if len(pending) > 1 else pending[0][1]
        end = len(rows) if final else len(rows) - len(rows) % chunk_rows
        for start in range(0, end, chunk_rows):
            stop = min(start + chunk_rows, end)
            logits = head(rows[start:stop])
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            _token_stats(logits, targets[start:stop], topk, out=flat[done + start : done + stop])
        done += end
        pending = [(rows[end:], targets[end:])] if end < len(rows) else []

    for batch in batches:
        # The last position predicts no token: the body runs on width - 1 positions.
        width = len(sequences[batch[0]]) - 1
        if width == 0:
            continue
        ids = torch.full((len(batch), width + 1), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width + 1), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(sequences[i])] = torch.as_tensor(sequences[i])
            mask[row, : len(sequences[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        if sinks is not None and sinks.mode == "own":
            sinks.set_doc_ids(torch.tensor([doc_ids[i] for i in batch], device=device)[:, None].expand(-1, width))
        hidden = model.base_model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1]).last_hidden_state
        # Position t predicts token t+1; keep only positions whose next token is real text.
        valid = mask[:, 1:].bool()
        pending.append((hidden[valid], ids[:, 1:][valid]))
        if sum(len(r) for r, _ in pending) >= chunk_rows:
            head_and_stats(final=False)
    if pending:
        head_and_stats(final=True)
    stats = flat.cpu().numpy()
    out: list[ScoredSequence | None] = [None] * len(sequences)
    offset = 0
    for i in order:
        n = len(sequences[i]) - 1
        s = stats[offset : offset + n]
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
