"""GGUF input: build a tiny Llama and its byte-level BPE tokenizer, write them to a GGUF file the way
llama.cpp's convert_hf_to_gguf.py does (F32, llama.* metadata, q/k rows permuted for its interleaved
RoPE), and check `load_model` on that file gives back the same model and tokenizer, and scans."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from memaudit.common.fileio import sha256_file
from memaudit.corpus.tokenizer import EOS, train_tokenizer
from memaudit.models.io import load_model
from memaudit.probes.config import ScanConfig
from memaudit.probes.scan import scan

gguf = pytest.importorskip("gguf")  # memaudit reads GGUF through transformers, which needs it

WORDS = {
    "subject": ["the cat", "a farmer", "my sister", "the old dog", "our teacher", "a small bird", "the river"],
    "verb": ["sees", "follows", "paints", "remembers", "carries", "finds", "answers"],
    "object": ["a red kite", "the long road", "seven apples", "the quiet house", "a blue letter", "the market"],
    "tail": ["today.", "at dawn.", "in the rain.", "every winter.", "without a word.", "near the hill."],
}
ROPE_THETA = 1000.0  # not the config default, so a file whose rope.freq_base is ignored would fail
RMS_EPS = 1e-5


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS[k]) for k in ("subject", "verb", "object", "tail")).capitalize() for _ in range(n)
    ]


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute: HF's half-split RoPE rows -> llama.cpp's interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model: LlamaForCausalLM, tok, path) -> None:
    """What convert_hf_to_gguf.py writes for a llama with a GPT-2 style BPE vocab, in F32."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(cfg.vocab_size)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)

    # Tokenizer (LlamaModel.set_vocab -> _set_vocab_gpt2): tokens in id order, special added
    # tokens CONTROL, merges as "a b" strings, then the special ids (gguf.SpecialVocab).
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert len(tokens) == cfg.vocab_size and sorted(vocab.values()) == list(range(len(tokens)))
    special = set(tok.all_special_tokens)
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(False)

    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for name, t in model.state_dict().items():
        data = t.detach().to(torch.float32).numpy()
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        elif name == "lm_head.weight":
            out = "output.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            module, _, suffix = rest.rpartition(".")
            out = f"blk.{layer}.{names[module]}.{suffix}"
            if module == "self_attn.q_proj":
                data = llama_cpp_permute(data, n_head)
            elif module == "self_attn.k_proj":
                data = llama_cpp_permute(data, n_kv)
        w.add_tensor(out, np.ascontiguousarray(data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    tok = train_tokenizer(sentences(400, seed=0), vocab_size=300)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=len(tok),
        max_position_embeddings=128,
        rms_norm_eps=RMS_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        # Wide enough init that attention is far from uniform: a wrong q/k permutation or RoPE
        # base then moves the logits by much more than the 1e-4 the test allows.
        initializer_range=0.3,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama-f32.gguf"
    write_gguf(model, tok, path)
    return model, tok, path, load_model(path)


def test_gguf_model_matches(tiny_gguf):
    model, tok, _, loaded = tiny_gguf
    cfg = loaded.model.config
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (64, 192, 2)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.max_position_embeddings) == (4, 4, 128)
    assert cfg.vocab_size == len(tok) and cfg.rope_parameters["rope_theta"] == pytest.approx(ROPE_THETA)
    assert cfg.rms_norm_eps == pytest.approx(RMS_EPS) and not cfg.tie_word_embeddings
    original, got = model.state_dict(), loaded.model.state_dict()
    assert original.keys() == got.keys()
    for name, t in original.items():
        assert torch.equal(t, got[name]), name  # F32 in, F32 out, the q/k permutation undone exactly

    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, len(tok), (1, 5), generator=g), torch.randint(0, len(tok), (3, 128), generator=g)]
    batches.append(torch.tensor([tok(EOS + sentences(1, seed=2)[0], add_special_tokens=False)["input_ids"]]))
    with torch.no_grad():
        for ids in batches:
            want, have = model(ids).logits, loaded.model(ids.to(loaded.device)).logits.cpu()
            assert want.std() > 0.5  # not a near-constant output that any loader would match
            torch.testing.assert_close(have, want, atol=1e-4, rtol=0)


def test_gguf_tokenizer_round_trips(tiny_gguf):
    _, tok, _, loaded = tiny_gguf
    gtok = loaded.tokenizer
    assert len(gtok) == len(tok)
    assert (gtok.bos_token, gtok.eos_token, gtok.pad_token) == (EOS, EOS, EOS)
    assert gtok.pad_token_id == tok.pad_token_id
    for text in [sentences(1, seed=3)[0], "  Unseen words: zebra, 42 quokkas & émigrés!\n" + EOS + " the cat"]:
        for special in (True, False):
            ids = tok(text, add_special_tokens=special)["input_ids"]
            assert gtok(text, add_special_tokens=special)["input_ids"] == ids
        assert gtok.decode(ids) == tok.decode(ids) == text


def test_scan_gguf(tiny_gguf):
    *_, loaded = tiny_gguf
    rows = [
        {"doc_id": i + 1, "text": " ".join(sentences(8, seed=10 + i)), "repeats": 1 - i % 2}
        | {"kind": "repeated" if i % 2 == 0 else "heldout"}
        for i in range(4)
    ]
    assert all(len(loaded.tokenizer(r["text"])["input_ids"]) >= 64 for r in rows)
    results = scan(loaded, audit_rows=rows, config=ScanConfig(bootstrap=20, prefix_lens=(16, 32)))
    assert results["metrics"]
    assert results["counts"]["members"] == 2 and results["counts"]["nonmembers"] == 2
    assert [s["doc_id"] for s in results["sequences"]] == [1, 2, 3, 4]
    assert all("exact" in s for s in results["sequences"])
    # The file itself is the model: its path and hash are recorded, not its folder's.
    assert results["model"]["path"].endswith(".gguf") and results["model"]["kind"] == "external"
    assert results["model"]["sha256"] == sha256_file(Path(results["model"]["path"]))
