"""Named model configs for training from scratch. Two MLP families, so every method is
exercised on both: GPT-2 (GeLU MLP, `c_fc` -> `c_proj`) and Llama (gated MLP, `down_proj`).
Any `transformers` model type (e.g. `gpt2`, `qwen2`) or a dir with a config.json also works.

The table itself is plain data and `transformers` is imported by the functions that build, so the
command line lists the zoo names in its help without importing torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from memaudit.common.errors import MemauditError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

# name -> (transformers model type, settings). Dropout off: memorization studies want the plain
# objective, and determinism makes resumed runs bit-identical.
ZOO: dict[str, tuple[str, dict]] = {
    "gpt2-1m": ("gpt2", dict(n_layer=2, n_embd=128, n_head=4, n_positions=256)),
    "gpt2-5m": ("gpt2", dict(n_layer=4, n_embd=256, n_head=4, n_positions=256)),
    "gpt2-20m": ("gpt2", dict(n_layer=6, n_embd=512, n_head=8, n_positions=512)),
    "llama-1m": (
        "llama",
        dict(
            num_hidden_layers=2,
            hidden_size=128,
            intermediate_size=384,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=256,
        ),
    ),
    "llama-5m": (
        "llama",
        dict(
            num_hidden_layers=4,
            hidden_size=256,
            intermediate_size=768,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=256,
        ),
    ),
}
_NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attention_dropout=0.0)
# GPT-2's own GeLU (`gelu_new`) is the tanh approximation written as five Python-level tensor ops;
# `gelu_pytorch_tanh` is the same function in one fused kernel: ~20% of a CPU scan's forward time.
_FUSED_GELU = {"gpt2": dict(activation_function="gelu_pytorch_tanh")}


def build_config(arch: str, vocab_size: int, bos_token_id: int, eos_token_id: int) -> PretrainedConfig:
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    ids = dict(vocab_size=vocab_size, bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id)
    if arch in ZOO:
        model_type, settings = ZOO[arch]
        return CONFIG_MAPPING[model_type](
            **settings, **_FUSED_GELU.get(model_type, {}), **_NO_DROPOUT, **ids, tie_word_embeddings=True
        )
    if (Path(arch) / "config.json").is_file():
        config = AutoConfig.from_pretrained(arch)
        for key, value in ids.items():
            setattr(config, key, value)
        return config
    if arch in CONFIG_MAPPING:
        return AutoConfig.for_model(arch, **ids)
    raise MemauditError(
        f"unknown arch {arch!r}; use a zoo name ({', '.join(ZOO)}), a transformers model type "
        "(gpt2, llama, qwen2, ...) or a dir with a config.json"
    )


def build_model(config: PretrainedConfig, seed: int) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    try:
        return AutoModelForCausalLM.from_config(config)
    except ValueError as e:
        raise MemauditError(f"{type(config).__name__} is not a causal language model ({e})") from None


def context_length(config: PretrainedConfig) -> int:
    """The longest sequence the model takes: GPT-2 calls it n_positions, most others
    max_position_embeddings; 2048 for configs that name neither."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 2048


def n_params(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())
