"""ReCaLL (Xie et al., "ReCaLL: Membership Inference via Relative Conditional Log-Likelihoods", EMNLP
2024): how much a text's log-likelihood changes when the text follows a prefix of known non-member
text. Members lose more of their likelihood to such a prefix than non-members do, so the score
LL(x | P) / LL(x) (both mean token log-likelihoods, negative) is higher for members.

This needs a forward pass of its own: each audited sequence after one shared prefix P, as long as
the context leaves room for beside the longest audited sequence. The prefix runs once and its
key-value cache is reused by every batch, so the pass costs about one forward over the audited
tokens, not one over the whole context per text."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from memaudit.common.errors import MemauditError

LOGIT_BYTES_PER_CHUNK = 64 << 20  # rows of the LM head at a time, as the scoring pass


def recall_prefix(documents: Sequence[Sequence[int]], room: int) -> list[int]:
    """The prefix P: the last `room` tokens of the known non-member documents, each already encoded
    as `[boundary] + tokens` (documents joined as the model saw them in training). Fewer tokens when
    the documents hold fewer."""
    joined = [t for doc in documents for t in doc]
    return joined[-room:] if room > 0 else []


def prefix_room(context: int, lengths: Sequence[int]) -> int:
    """Tokens of prefix the context leaves beside the longest audited sequence."""
    return context - max(lengths, default=0)


def check_prefix_room(context: int, lengths: Sequence[int], has_text: bool) -> int:
    """The room for the ReCaLL prefix, or one clear MemauditError when there is no prefix text or
    no room for even one token of it."""
    if not has_text:
        raise MemauditError(
            "recall needs known non-member text for its prefix (a data dir's valid.jsonl, or --valid with --audit); "
            "give some, or drop recall from the suite's mia_attacks"
        )
    room = prefix_room(context, lengths)
    if room < 1:
        raise MemauditError(
            f"recall: no room in the model's context ({context} tokens) for any prefix beside the longest audited "
            f"text ({max(lengths)} tokens with its boundary token); audit shorter texts or drop recall from the "
            "suite's mia_attacks"
        )
    return room


def _cache_keyword(model: PreTrainedModel) -> str:
    """How this transformers version names the key-value cache argument of a forward."""
    return "cache" if "cache" in inspect.signature(model.base_model.forward).parameters else "past_key_values"


def _batches(lengths: Sequence[int], max_batch_tokens: int, prefix_len: int) -> list[list[int]]:
    """Indices longest first, each batch within the token budget (its prefix cache included)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        width = (lengths[current[0]] if current else lengths[i]) + prefix_len
        if current and (len(current) + 1) * width > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    return batches + ([current] if current else [])


@torch.inference_mode()
def conditional_nll(
    model: PreTrainedModel,
    prefix: Sequence[int],
    sequences: Sequence[Sequence[int]],
    *,
    pad_id: int,
    doc_ids: Sequence[int] | None = None,
    prefix_doc_ids: Sequence[int] | None = None,
    sinks=None,
    max_batch_tokens: int = 16384,
) -> list[float]:
    """Mean NLL of each sequence's text tokens (every token after its first, the boundary token,
    exactly the tokens the scoring pass scores) when the sequence follows `prefix`.

    `doc_ids` (one per sequence) and `prefix_doc_ids` (one per prefix token) are needed only for
    MemSink models in `own` mode: each token runs with its own document's sinks."""
    if not prefix:
        raise MemauditError("recall: the prefix is empty")
    device = next(model.parameters()).device
    own = sinks is not None and sinks.mode == "own"
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    chunk_rows = max(1, LOGIT_BYTES_PER_CHUNK // (4 * head.weight.shape[0] * 4))
    keyword = _cache_keyword(model)
    cache = DynamicCache(config=model.config)
    if own:
        sinks.set_doc_ids(torch.tensor([list(prefix_doc_ids)], device=device))
    # All-ones masks: the pads come after each text (nothing to mask under causal attention), and a mask keeps
    # transformers from warning that the pad id (often the boundary token) may be padding.
    prefix_ids = torch.tensor([list(prefix)], device=device)
    model.base_model(
        input_ids=prefix_ids, attention_mask=torch.ones_like(prefix_ids), use_cache=True, **{keyword: cache}
    )
    out: list[float] = [float("nan")] * len(sequences)
    for batch in _batches([len(s) for s in sequences], max_batch_tokens, len(prefix)):
        width = len(sequences[batch[0]])
        # Right-padded: under causal attention a pad after a text changes nothing before it.
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(sequences[i])] = torch.as_tensor(sequences[i])
        ids = ids.to(device)
        if own:
            sinks.set_doc_ids(torch.tensor([doc_ids[i] for i in batch], device=device)[:, None].expand(-1, width))
        batch_cache = copy.deepcopy(cache)
        batch_cache.batch_repeat_interleave(len(batch))
        mask = torch.ones((len(batch), len(prefix) + width), dtype=torch.long, device=device)
        hidden = model.base_model(
            input_ids=ids, attention_mask=mask, use_cache=True, **{keyword: batch_cache}
        ).last_hidden_state
        lengths = torch.tensor([len(sequences[i]) for i in batch], device=device)
        valid = torch.arange(width - 1, device=device)[None, :] < (lengths[:, None] - 1)
        rows, targets = hidden[:, :-1][valid], ids[:, 1:][valid]
        nll = []
        for start in range(0, len(rows), chunk_rows):
            logits = head(rows[start : start + chunk_rows]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            logp = logits.log_softmax(-1).gather(1, targets[start : start + chunk_rows, None])[:, 0]
            nll.append(-logp)
        flat = torch.cat(nll).double().cpu() if nll else torch.zeros(0, dtype=torch.float64)
        offset = 0
        for i in batch:
            n = len(sequences[i]) - 1
            if n > 0:
                out[i] = float(flat[offset : offset + n].mean())
            offset += n
    if own:
        sinks.set_doc_ids(None)
    return out


def recall_score(conditional: float, unconditional: float) -> float:
    """LL(x | P) / LL(x) from the two mean NLLs (the same ratio of positive numbers); higher = more
    member-like. The unconditional NLL is floored at 1e-12 nats, so a text predicted perfectly gets a
    large finite score, not a division by zero."""
    return conditional / max(unconditional, 1e-12)
