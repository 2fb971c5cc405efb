"""Sink fine-tuning of a pretrained model (`memaudit train --init`): the base model loaded as
`scan model` loads it, checked against the data dir's tokenizer, widened with new sink units
(`--sink-units new:N`), and optionally frozen but for them (`--freeze-base`)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memaudit.errors import MemauditError
from memaudit.models.files import locate_model, weights_sha256
from memaudit.models.io import load_model
from memaudit.models.sinks import find_mlps
from memaudit.models.surgery import unit_dim


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


class FrozenBase:
    """`--freeze-base`: only the new sink units train (with `train_shared_mlp`, the whole MLPs). Parameters outside
    the MLPs stop requiring gradients. The pretrained units live in the same tensors as the new ones, so their
    slices get zero gradients (clipping then sees only what trains) and are copied back after every optimizer
    step, because AdamW's decoupled weight decay moves a weight even when its gradient is zero."""

    def __init__(self, model: PreTrainedModel, n_base: int, *, train_shared_mlp: bool) -> None:
        layout, mlps = find_mlps(model)
        projections = [(getattr(m, name), name != layout.down) for m in mlps for name in (*layout.up, layout.down)]
        trainable = {id(p) for module, _ in projections for p in module.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        self._kept: list[tuple[torch.nn.Parameter, int, int, torch.Tensor]] = []
        if train_shared_mlp:
            return
        for module, outputs in projections:
            self._freeze_slice(module.weight, unit_dim(module, outputs), n_base)
            if module.bias is not None:
                if outputs:  # one bias per unit: the new units' train
                    self._freeze_slice(module.bias, 0, n_base)
                else:  # the down projection's bias belongs to the base model
                    module.bias.requires_grad_(False)

    def _freeze_slice(self, param: torch.nn.Parameter, dim: int, n: int) -> None:
        def zero_frozen(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()
            grad.narrow(dim, 0, n).zero_()
            return grad

        param.register_hook(zero_frozen)
        self._kept.append((param, dim, n, param.detach().narrow(dim, 0, n).clone()))

    def restore(self) -> None:
        """Put the pretrained slices back exactly as they were."""
        with torch.no_grad():
            for param, dim, n, original in self._kept:
                param.narrow(dim, 0, n).copy_(original)
