"""A byte-level BPE tokenizer trained with `tokenizers` and saved as a Hugging Face tokenizer
dir, so every model memaudit writes loads with `AutoTokenizer` and nothing else."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from memaudit.common.errors import MemauditError
from memaudit.common.model_files import locate_model, looks_local

EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style): no unknown tokens, any UTF-8 text round-trips."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    # One token opens and closes every document and pads batches; training packs
    # documents as `text <eos> text <eos> ...`, and scoring prepends it as BOS.
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS)


def model_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """A model's own tokenizer (model dir, GGUF file or hub id): an audit set that fine-tunes that model must be
    tokenized as the model was pretrained (`data build --tokenizer`)."""
    located = locate_model(source)
    return load_tokenizer(located.load_from, gguf_file=located.gguf_file)


def load_tokenizer(path: Path | str, gguf_file: str | None = None) -> PreTrainedTokenizerBase:
    """A tokenizer dir or hub id (with `gguf_file`: the tokenizer inside that GGUF file); a
    local-looking path that does not exist is an error, not a download."""
    if not Path(path).exists() and looks_local(str(path)):
        raise MemauditError(f"{path}: no such tokenizer dir (hub ids look like owner/name)")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), gguf_file=gguf_file)
    except Exception as e:  # transformers raises OSError/ValueError/... for broken dirs
        raise MemauditError(f"{path}: no usable tokenizer ({type(e).__name__}: {e})") from None
    if not tok("memaudit", add_special_tokens=False)["input_ids"]:  # transformers makes an empty one
        raise MemauditError(
            f"{path}: no tokenizer files there (it encodes text to nothing); pass the model's tokenizer"
        )
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def boundary_id(tok: PreTrainedTokenizerBase) -> int:
    """The token a document starts from: BOS if the tokenizer has one, else EOS."""
    tid = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if tid is None:
        raise MemauditError("the tokenizer has neither a BOS nor an EOS token; memaudit needs one to mark documents")
    return tid


def encode_documents(tok: PreTrainedTokenizerBase, texts: list[str], max_len: int | None = None) -> list[list[int]]:
    """Each text as `[boundary] + tokens`, as the model saw documents in training; cut to
    `max_len` tokens in all (the model's context) when given."""
    start = boundary_id(tok)
    encoded = tok(texts, add_special_tokens=False)["input_ids"]
    return [([start] + ids)[:max_len] for ids in encoded]
