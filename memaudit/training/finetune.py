"""Fine-tuning a pretrained model (`memaudit train --init`): the base model loaded as `scan model`
loads it, in fp32, checked against the data dir's tokenizer. Its sink units (`--sink-units new:N`)
and `--freeze-base` are `memaudit.memsinks`' `add_sink_units` and `FrozenBase`."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memaudit.common.errors import MemauditError
from memaudit.common.model_files import locate_model, weights_sha256
from memaudit.models.io import load_model


def load_init(source: str, tok: PreTrainedTokenizerBase, data_dir: str) -> tuple[PreTrainedModel, dict]:
    """The base model in fp32 (it trains) and what memaudit.json records of it. The data dir must be tokenized by
    the model's own tokenizer (token ids mean nothing to a model across tokenizers), and a MemSink base is refused:
    its sinks would train as ordinary units."""
    loaded = load_model(source, precision="fp32")
    if loaded.sinks is not None:
        raise MemauditError(f"init {source}: a MemSink model; fine-tune its `memaudit remove-sinks` copy instead")
    if loaded.tokenizer.get_vocab() != tok.get_vocab():
        raise MemauditError(
            f"init {source}: its tokenizer is not the one {data_dir} was built with; rebuild the data dir with "
            f"`memaudit data build --tokenizer {source}`"
        )
    _drop_quantizer(loaded.model, source)
    record = {"source": source, "model_type": loaded.model.config.model_type}
    sha = weights_sha256(locate_model(source))
    record |= {"sha256": sha} if sha else {"revision": getattr(loaded.model.config, "_commit_hash", None)}
    return loaded.model, record


def _drop_quantizer(model: PreTrainedModel, source: str) -> None:
    """A GGUF base loads as a "quantized" model even when transformers unpacked its weights to plain fp32 tensors
    (no GGUF kernel), and such a model refuses to be saved. Unpacked weights are an ordinary model: forget the
    quantizer. Weights still packed (or another quantization) cannot train here."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if not all(p.is_floating_point() for p in model.parameters()):
        method = quantizer.quantization_config.quant_method
        raise MemauditError(f"init {source}: its weights stay quantized ({method}); fine-tune a dequantized copy")
    quantizer.remove_quantization_config(model)
