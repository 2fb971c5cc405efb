"""Memorization sinks (Ghosal et al., ICML 2025; docs/memsinks.md) for any training loop: attach them to a
Hugging Face causal LM, give every token its document's id, train with anything, then drop the sinks.

    sinks = attach_sinks(model, SinkConfig())   # mode "own": the forward now takes doc_ids=
    blocks = pack_documents(token_ids, doc_ids, seq_len=512, eos_token_id=tok.eos_token_id)
    collate = DocIdCollator(tok.pad_token_id)   # input_ids, attention_mask, labels, doc_ids
    loss = model(**collate(blocks[:8])).loss    # or transformers.Trainer(data_collator=collate, args=
                                                # TrainingArguments(..., remove_unused_columns=False))
    save_sink_model(model, tok, "memsink", sinks)   # for `memaudit scan model`, `memaudit remove-sinks`
    prune_sink_units(model, sinks)              # in place: a plain model equal to mode "off"

`prune_sink_units(model, sinks, ids=[...])` deletes only those documents' sinks, and `reattach_sinks` puts the
others' back. The other names: `SinkConfig` (G, P, scheme), `SCHEMES` and `EVAL_MODES` (the mask schemes and
what the pool does in a forward, each with its summary), `Sinks` (the hooks), `hash_mask`, `disjoint_mask` and
`sparse_mask` (which sinks an id switches on), `add_sink_units` (new sink units on a pretrained model),
`FrozenBase` (train only those), `split_token_loss` and `SinkGradients` (route the loss on repeated documents
to their sinks only, as `SinkConfig.route` does in `memaudit train`; with `outside_mlps`, to their sinks and
everything outside the MLPs, as `route_scope: mlp` does), `find_mlps` and `LAYOUTS`
(where each supported family keeps its MLP units).

Names are imported on first use, so the command line reads `memaudit.memsinks.config` without torch."""

from importlib import import_module

_API = {
    "SinkConfig": "memaudit.memsinks.config",
    "SCHEMES": "memaudit.memsinks.config",
    "EVAL_MODES": "memaudit.memsinks.config",
    "Sinks": "memaudit.memsinks.sinks",
    "hash_mask": "memaudit.memsinks.masks",
    "disjoint_mask": "memaudit.memsinks.masks",
    "sparse_mask": "memaudit.memsinks.masks",
    "find_mlps": "memaudit.memsinks.layouts",
    "LAYOUTS": "memaudit.memsinks.layouts",
    "add_sink_units": "memaudit.memsinks.surgery",
    "prune_sink_units": "memaudit.memsinks.surgery",
    "reattach_sinks": "memaudit.memsinks.surgery",
    "FrozenBase": "memaudit.memsinks.freeze",
    "SinkGradients": "memaudit.memsinks.routing",
    "split_token_loss": "memaudit.memsinks.routing",
    "outside_mlps": "memaudit.memsinks.routing",
    "attach_sinks": "memaudit.memsinks.api",
    "pack_documents": "memaudit.memsinks.api",
    "DocIdCollator": "memaudit.memsinks.api",
    "save_sink_model": "memaudit.memsinks.api",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'memaudit.memsinks' has no attribute {name!r}")
