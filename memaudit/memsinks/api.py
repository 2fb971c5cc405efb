"""What a training loop of your own needs to train with memorization sinks. `attach_sinks` puts them on a
Hugging Face causal LM and lets its forward take `doc_ids=`; `pack_documents` and `DocIdCollator` give
every token its own document's id, packed or padded; `save_sink_model` writes a dir that memaudit's
commands load. The masks, the removal and the deletion of ids are the code `memaudit train` and
`memaudit remove-sinks` run, so a model trained this way is audited and pruned like one of theirs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import atomic_dir, write_json
from memaudit.common.model_files import META_FILE
from memaudit.common.validation import check_choice
from memaudit.corpus.packing import PackedStream
from memaudit.memsinks.config import EVAL_MODES, SinkConfig
from memaudit.memsinks.layouts import find_mlps, units_in
from memaudit.memsinks.masks import check_ids
from memaudit.memsinks.sinks import Sinks, has_sinks
from memaudit.memsinks.surgery import add_sink_units

IGNORE_INDEX = -100  # the label transformers' loss skips


def attach_sinks(model: PreTrainedModel, config: SinkConfig, *, mode: str = "own") -> Sinks:
    """Sinks on a model about to train with them, as `memaudit train` attaches them. From then on the model's
    forward takes `doc_ids=` (per-token document ids, [batch, seq], or [batch, 1] for one id per row), so
    `model(**batch)` works for a batch that carries them, in a loop of your own or in `transformers.Trainer`.

    A config with `new_units` first widens every MLP by that many units, which become the pool
    (`--sink-units new:N`); the returned sinks keep the base's MLP size for `save_sink_model`. Widening twice
    would give a second pool, so to put sinks back on a model that already has its units (one you saved), use
    `Sinks(model, config)`, or `memaudit.load_model` for a saved dir. `sinks.remove()` undoes the hooks."""
    check_choice("sink mode", mode, EVAL_MODES)
    if has_sinks(model):
        raise MemauditError("this model already has sinks attached: call remove() on them first")
    base_mlp = add_sink_units(model, config.new_units) if config.new_units else None
    sinks = Sinks(model, config)
    sinks.base_mlp = base_mlp
    sinks.mode = mode
    return sinks


def pack_documents(
    token_ids: Sequence[Sequence[int]], doc_ids: Sequence[int], *, seq_len: int, eos_token_id: int, seed: int = 0
) -> list[dict[str, list[int]]]:
    """Documents packed into blocks of `seq_len` tokens exactly as `memaudit train` packs one epoch: laid end to
    end as `text <eos> text <eos> ...` in a seeded random order, every token carrying its own document's id, so a
    block that spans documents masks each part with its own document's sinks. Give token ids without a closing
    end token (one is added); the tail shorter than a block is dropped. One {"input_ids", "doc_ids"} per block,
    a dataset for `DocIdCollator`."""
    if len(token_ids) != len(doc_ids):
        raise MemauditError(f"{len(token_ids)} documents but {len(doc_ids)} doc_ids: give one id per document")
    if not doc_ids:
        raise MemauditError("no documents to pack")
    if seq_len < 1:
        raise MemauditError(f"seq_len must be a positive number of tokens, got {seq_len}")
    ids = check_ids(list(doc_ids))
    try:
        stream = PackedStream(
            [list(t) for t in token_ids], ids.tolist(), [1] * len(ids), eos_id=eos_token_id, seq_len=seq_len, seed=seed
        )
    except ValueError as e:
        raise MemauditError(f"{e}: lower seq_len or pass more documents") from None
    tokens, block_ids = stream.epoch_blocks(0)
    return [{"input_ids": t.tolist(), "doc_ids": d.tolist()} for t, d in zip(tokens, block_ids, strict=True)]


@dataclass(frozen=True)
class DocIdCollator:
    """Batches for a model with sinks from features that hold `input_ids` and either one document's `doc_id` or
    per-token `doc_ids` (packed blocks): rows padded at the right to the longest, with attention_mask, labels
    (IGNORE_INDEX on pads, which the loss skips) and doc_ids. A pad takes its row's last real id, because id 0 is
    not a document (it would switch every sink on) and any real id is harmless on a token nothing learns from.

    Give it to `transformers.Trainer` as `data_collator` with `remove_unused_columns=False` (otherwise Trainer
    drops doc_ids, which the model's signature does not name, before the collator sees them), or to a
    DataLoader as `collate_fn`."""

    pad_token_id: int

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [_row(i, f) for i, f in enumerate(features)]
        if not rows:
            raise MemauditError("an empty batch: the collator needs at least one feature")
        input_ids = torch.full((len(rows), max(len(t) for t, _ in rows)), self.pad_token_id, dtype=torch.int64)
        doc_ids = torch.empty_like(input_ids)
        attention_mask = torch.zeros_like(input_ids)
        for row, (tokens, ids) in enumerate(rows):
            n = len(tokens)
            input_ids[row, :n] = tokens
            doc_ids[row, :n] = ids
            doc_ids[row, n:] = ids[-1]
            attention_mask[row, :n] = 1
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "doc_ids": doc_ids}


def _row(index: int, feature: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """One feature's tokens and per-token document ids, both int64 [n]."""
    if "input_ids" not in feature:
        raise MemauditError(f"feature {index} has no input_ids (keys: {', '.join(map(str, feature))})")
    tokens = torch.as_tensor(feature["input_ids"], dtype=torch.int64)
    if tokens.dim() != 1 or not len(tokens):
        raise MemauditError(f"feature {index}: input_ids must be a non-empty list of token ids")
    if ("doc_id" in feature) == ("doc_ids" in feature):
        raise MemauditError(
            f"feature {index} needs exactly one of doc_id (its document's id) or doc_ids (one per token), has "
            f"keys {', '.join(map(str, feature))}; under transformers.Trainer pass remove_unused_columns=False, "
            "which keeps them"
        )
    if "doc_id" in feature:
        return tokens, torch.full_like(tokens, int(feature["doc_id"]))
    ids = torch.as_tensor(feature["doc_ids"], dtype=torch.int64)
    if ids.shape != tokens.shape:
        raise MemauditError(f"feature {index}: {len(ids.reshape(-1))} doc_ids for {len(tokens)} input_ids")
    return tokens, ids


def save_sink_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: str | Path,
    sinks: Sinks,
    *,
    meta: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """A model dir that memaudit's commands take (`memaudit scan model`, `memaudit remove-sinks`,
    `memaudit.load_model`): Hugging Face safetensors and tokenizer, and memaudit.json with what rebuilds every
    mask (the sink settings, and after a deletion of ids the kept units) and the base MLP size that removal gives
    back. `meta` adds fields to memaudit.json, e.g. {"data": {"dir": ...}}, the audit set that `remove-sinks
    --ids` checks ids against. The dir appears whole or not at all; an existing `out` needs `force`."""
    layout, mlps = find_mlps(model)
    if list(map(id, mlps)) != list(map(id, sinks.mlps)):
        raise MemauditError("these sinks are attached to another model")
    if units_in(getattr(mlps[0], layout.down)) != sinks.n_hidden:
        raise MemauditError(
            "the model's MLPs no longer match these sinks (pruned by prune_sink_units): after deleting ids save "
            "with the sinks of reattach_sinks(model, report); with the whole pool removed the model is a plain "
            "one, saved by model.save_pretrained"
        )
    record: dict[str, Any] = {"kind": "memsink", "sinks": sinks.config.to_dict()}
    if sinks.kept_sink_units is not None:
        record["kind"] = "memsink-pruned"
        record["sink_pool"] = {"pool_size": sinks.pool_size, "kept_sink_units": sinks.kept_sink_units.tolist()}
    if sinks.base_mlp is not None:
        record["init"] = {"base_mlp": sinks.base_mlp}
    record.update(meta or {})
    with atomic_dir(Path(out), force=force) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / META_FILE, record)
    return Path(out)
