"""Model dirs in and out. A memaudit model dir is a plain Hugging Face dir (safetensors,
config, tokenizer) plus `memaudit.json`, which says how it was trained and, for MemSink models,
how to re-attach the sinks. Loading is safe by default: safetensors only, no remote code."""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import read_json, write_json
from memaudit.common.model_files import META_FILE, locate_model
from memaudit.common.parallel import cpu_only, process_state
from memaudit.common.precision import Precision, resolve_precision
from memaudit.corpus.tokenizer import load_tokenizer

# What a model's files that passed locate_model's checks can still raise in from_pretrained: a
# config transformers does not know, tensors that do not fit the config, a broken pickle, a GGUF
# file cut short after its header.
LOAD_ERRORS = (OSError, ValueError, EOFError, RuntimeError, struct.error, pickle.UnpicklingError, SafetensorError)


@dataclass
class LoadedModel:
    """A model with everything needed to score it: tokenizer, training metadata, sinks."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: str
    meta: dict[str, Any] = field(default_factory=dict)
    sinks: Any = None  # memaudit.memsinks.sinks.Sinks for MemSink models
    precision: Precision = Precision("fp32", "asked for", "fp32")  # the dtype of the weights, and why

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path, meta: dict) -> None:
    """Write into an existing (temporary) dir; callers make it atomic with `atomic_dir`."""
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    write_json(Path(out) / META_FILE, meta)


def check_tokenizer_fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, where: str) -> None:
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise MemauditError(
            f"{where}: the tokenizer has {len(tokenizer)} tokens but the model embeds only {n_embed}; "
            "they do not belong together (pass the model's own tokenizer)"
        )


def load_model(
    source: str | Path,
    *,
    tokenizer: str | Path | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    precision: str = "fp32",
) -> LoadedModel:
    """Load a local model dir, a GGUF file, or a hub id; re-attach MemSinks if memaudit.json
    records them. Placement: one device per process in a multi-process launch, `device_map=
    "auto"` (spread over the GPUs accelerate sees) in a single process with GPUs, else the CPU.
    `precision` is the weights' dtype: fp32 for models that go on training (unlearning), `auto`
    for scans (memaudit.common.precision: bf16 or fp16 on a GPU, fp32 on a CPU)."""
    located = locate_model(source, allow_pickle=allow_pickle)
    gguf_file, load_from = located.gguf_file, located.load_from
    if gguf_file:
        try:
            import gguf  # noqa: F401  (transformers reads GGUF through it)
        except ImportError:
            raise MemauditError(
                f"{gguf_file}: reading GGUF files needs the `gguf` package (pip install gguf)"
            ) from None
    state = process_state()
    device_map = "auto" if state.num_processes == 1 and not cpu_only() else None
    chosen = resolve_precision(precision, state.device.type, purpose="scan")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            load_from,
            dtype=chosen.torch_dtype(),
            use_safetensors=None if (allow_pickle or gguf_file) else True,
            trust_remote_code=trust_remote_code,
            gguf_file=gguf_file,
            device_map=device_map,
        )
    except LOAD_ERRORS as e:  # the files passed the checks of locate_model, but still do not load
        raise MemauditError(f"{source}: could not load the model ({type(e).__name__}: {e})".splitlines()[0]) from None
    if state.num_processes > 1:
        model.to(state.device)
    model.eval()
    tok = load_tokenizer(tokenizer) if tokenizer else load_tokenizer(load_from, gguf_file=gguf_file)
    check_tokenizer_fits(model, tok, str(source))
    # A GGUF file is its own model: a memaudit.json beside it describes some other model.
    path = located.path
    meta = read_json(path / META_FILE) if path is not None and path.is_dir() and (path / META_FILE).is_file() else {}
    sinks = None
    if meta.get("sinks"):
        from memaudit.memsinks.config import DEFAULT_EVAL_MODE, SinkConfig
        from memaudit.memsinks.sinks import Sinks

        # `sink_pool` is there when remove-sinks --ids deleted some documents' sinks.
        pool = meta.get("sink_pool", {})
        if not isinstance(pool, dict):
            raise MemauditError(f"{path / META_FILE}: 'sink_pool' must be an object, got {pool!r}")
        sinks = Sinks(model, SinkConfig.from_dict(meta["sinks"]), **pool)
        sinks.mode = DEFAULT_EVAL_MODE  # the paper's deployment setting; scans say so
        sinks.base_mlp = meta.get("init", {}).get("base_mlp")  # new:N: the base's MLP size, kept on a re-save
    return LoadedModel(model=model, tokenizer=tok, path=str(source), meta=meta, sinks=sinks, precision=chosen)
