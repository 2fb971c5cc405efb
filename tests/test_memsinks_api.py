"""MemSinks in a training loop that is not memaudit's: transformers.Trainer and plain PyTorch train through the
public API (`memaudit.memsinks`) with the masks `memaudit train` uses, and what they train is saved, loaded,
pruned and removed by memaudit's own code. The runnable example of docs/memsinks.md runs here too."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForCausalLM, GPT2Config, Trainer, TrainingArguments

import memaudit.memsinks as memsinks
from memaudit.common.errors import MemauditError
from memaudit.corpus.packing import PackedStream
from memaudit.corpus.tokenizer import train_tokenizer
from memaudit.memsinks import (
    DocIdCollator,
    SinkConfig,
    Sinks,
    attach_sinks,
    hash_mask,
    pack_documents,
    prune_sink_units,
    reattach_sinks,
    save_sink_model,
)
from memaudit.models.io import load_model
from memaudit.models.removal import remove_sinks

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "memsinks.md"
EOS = 0
IDS = [7, 12345, 2**40 + 3]  # the hash scheme's masks of three ids leave part of the pool to none of them
DISJOINT = SinkConfig(scheme="disjoint", groups=4)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; a second one only spins against other load on a 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(vocab_size: int = 128, eos: int = EOS) -> torch.nn.Module:
    """A tiny GPT-2 without dropout, so a Trainer forward and a reference forward compute the same thing."""
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=64, n_positions=64, n_layer=2, n_head=4, vocab_size=vocab_size, bos_token_id=eos, eos_token_id=eos
    )
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    return AutoModelForCausalLM.from_config(config)


def documents(n: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [
        torch.randint(1, 128, (int(size),), generator=g).tolist() for size in torch.randint(8, 30, (n,), generator=g)
    ]


def train_steps(model: torch.nn.Module, tokens: torch.Tensor, doc_ids: torch.Tensor, steps: int) -> list[float]:
    """A plain PyTorch loop: the model's forward takes the ids."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=tokens, labels=tokens, doc_ids=doc_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def logits(model: torch.nn.Module, tokens: torch.Tensor, doc_id: int | None = None) -> torch.Tensor:
    ids = None if doc_id is None else {"doc_ids": torch.full_like(tokens, doc_id)}
    return model(input_ids=tokens, **(ids or {})).logits


def test_trainer_on_packed_blocks_masks_each_token_as_memaudit_train_does(tmp_path) -> None:
    docs = documents(9)
    doc_ids = [IDS[i % 3] for i in range(9)]
    blocks = pack_documents(docs, doc_ids, seq_len=16, eos_token_id=EOS, seed=3)
    # The blocks are what memaudit train's step reads from its stream for the same documents and seed.
    tokens, ids = PackedStream(docs, doc_ids, [1] * 9, eos_id=EOS, seq_len=16, seed=3).batch(0, len(blocks))
    assert [b["input_ids"] for b in blocks] == tokens.tolist()
    assert [b["doc_ids"] for b in blocks] == ids.tolist()
    assert any(len(set(b["doc_ids"])) > 1 for b in blocks)  # blocks span documents

    model = tiny_model()
    initial = copy.deepcopy(model)
    calls, outputs, raw, masked = [], [], [], []
    model.register_forward_pre_hook(lambda m, a, kw: calls.append(dict(kw)), with_kwargs=True)
    model.register_forward_hook(lambda m, a, out: outputs.append(out.logits.detach().clone()))
    down = model.transformer.h[0].mlp.c_proj
    down.register_forward_pre_hook(lambda m, a: raw.append(a[0].detach().clone()))  # runs before the sinks' hook
    sinks = attach_sinks(model, SinkConfig())
    down.register_forward_pre_hook(lambda m, a: masked.append(a[0].detach().clone()))  # and this one after it
    args = TrainingArguments(
        str(tmp_path / "trainer"),
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=blocks, data_collator=DocIdCollator(EOS)).train()

    assert len(calls) == 4  # 2 steps x 2 accumulated batches, each with its own ids
    by_tokens = {tuple(b["input_ids"]): b["doc_ids"] for b in blocks}
    for call, hidden, out in zip(calls, raw, masked, strict=True):
        batch_ids = call["doc_ids"]
        assert [by_tokens[tuple(row)] for row in call["input_ids"].tolist()] == batch_ids.tolist()
        pool = hash_mask(batch_ids.reshape(-1), sinks.n_sink, 0.3).reshape(*batch_ids.shape, -1)
        scale = torch.cat([torch.ones(*batch_ids.shape, sinks.n_shared, dtype=torch.bool), pool], -1)
        assert torch.equal(out, hidden * scale)

    # The first forward, before any update, equals memaudit train's: Sinks with set_doc_ids on the same ids.
    reference = copy.deepcopy(initial)
    Sinks(reference, SinkConfig()).set_doc_ids(calls[0]["doc_ids"])
    with torch.no_grad():
        expected = reference(input_ids=calls[0]["input_ids"], attention_mask=calls[0]["attention_mask"]).logits
    assert_close(outputs[0], expected, rtol=0, atol=0)

    # Sink units moved exactly where a trained id switched them on (no weight decay: no gradient, no step).
    seen = torch.unique(torch.cat([c["doc_ids"].reshape(-1) for c in calls]))
    union = hash_mask(seen, sinks.n_sink, 0.3).any(0)
    assert 0 < union.sum() < sinks.n_sink
    for before, after in zip(initial.transformer.h, model.transformer.h, strict=True):
        up = (after.mlp.c_fc.weight - before.mlp.c_fc.weight)[:, sinks.n_shared :].abs().sum(0)
        down_moved = (after.mlp.c_proj.weight - before.mlp.c_proj.weight)[sinks.n_shared :].abs().sum(1)
        assert torch.equal(up > 0, union)
        assert torch.equal(down_moved > 0, union)


def test_plain_loop_then_delete_ids_and_remove_the_pool() -> None:
    model = tiny_model()
    sinks = attach_sinks(model, DISJOINT)
    tokens = torch.randint(1, 128, (4, 16), generator=torch.Generator().manual_seed(2))
    doc_ids = torch.tensor([[1] * 8 + [2] * 8, [3] * 16, [6] * 16, [2] * 4 + [7] * 12])  # groups 1, 2, 3
    losses = train_steps(model, tokens, doc_ids, steps=3)
    assert losses[-1] < losses[0]
    own = {i: logits(model, tokens, i) for i in (1, 2, 3)}
    sinks.mode = "off"
    off = logits(model, tokens)
    assert not torch.allclose(own[2], off, atol=1e-3)  # the sinks learned something

    report = prune_sink_units(model, sinks, ids=[1])
    kept = reattach_sinks(model, report)  # mode "own" again, and the forward takes doc_ids again
    for other in (2, 3):
        assert_close(logits(model, tokens, other), own[other], rtol=0, atol=1e-5)
    assert_close(logits(model, tokens, 1), off, rtol=0, atol=1e-5)  # document 1's sinks are gone

    prune_sink_units(model, kept)  # removal: a plain model, equal to mode "off"
    assert not model._forward_pre_hooks  # the doc_ids hook went with the sinks
    assert model.config.n_inner == kept.n_shared
    assert_close(logits(model, tokens), off, rtol=0, atol=1e-5)


def test_saved_dir_loads_and_removes_with_memaudit(tmp_path) -> None:
    texts = [f"record {i}: the {c} fox jumps over the lazy dog" for i, c in enumerate(["red", "grey"] * 8)]
    tok = train_tokenizer(texts, vocab_size=300)
    model = tiny_model(len(tok), tok.eos_token_id)
    sinks = attach_sinks(model, SinkConfig(new_units=16, scheme="disjoint", groups=4))
    assert sinks.base_mlp == {"n_inner": None}  # GPT-2's own value, which removal must give back
    tokens = torch.tensor([tok(t)["input_ids"][:8] for t in texts[:4]])
    train_steps(model, tokens, torch.tensor([[1], [2], [3], [5]]).expand_as(tokens), steps=3)
    own = {i: logits(model, tokens, i) for i in (1, 2)}
    sinks.mode = "off"
    off = logits(model, tokens)

    save_sink_model(model, tok, tmp_path / "memsink", sinks, meta={"arch": "tiny"})
    loaded = load_model(tmp_path / "memsink")
    assert (loaded.meta["kind"], loaded.meta["arch"], loaded.sinks.mode) == ("memsink", "tiny", "off")
    assert_close(logits(loaded.model, tokens), off, rtol=0, atol=1e-5)
    loaded.sinks.mode = "own"
    assert_close(logits(loaded.model, tokens, 2), own[2], rtol=0, atol=1e-5)

    remove_sinks(tmp_path / "memsink", tmp_path / "removed")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "removed")  # no memaudit needed
    assert plain.config.n_inner is None
    assert_close(logits(plain, tokens), off, rtol=0, atol=1e-5)

    report = prune_sink_units(model, sinks, ids=[1])
    with pytest.raises(MemauditError, match="no longer match these sinks"):
        save_sink_model(model, tok, tmp_path / "stale", sinks)
    save_sink_model(model, tok, tmp_path / "forgot", reattach_sinks(model, report))
    again = load_model(tmp_path / "forgot")
    assert again.meta["kind"] == "memsink-pruned"
    assert again.sinks.kept_sink_units.tolist() == report["kept_sink_units"]
    again.sinks.mode = "own"
    assert_close(logits(again.model, tokens, 2), own[2], rtol=0, atol=1e-5)
    with pytest.raises(MemauditError, match="already exists"):
        save_sink_model(again.model, tok, tmp_path / "forgot", again.sinks)


def test_own_mode_without_doc_ids_says_what_to_pass() -> None:
    model = tiny_model()
    sinks = attach_sinks(model, SinkConfig())
    tokens = torch.randint(1, 128, (2, 8), generator=torch.Generator().manual_seed(0))
    with pytest.raises(MemauditError, match="pass doc_ids .* remove_unused_columns=False"):
        logits(model, tokens)
    logits(model, tokens, 7)
    with pytest.raises(MemauditError, match="pass doc_ids"):  # ids given to a forward hold for that forward only
        logits(model, tokens)
    sinks.set_doc_ids(torch.full((2, 1), 7))
    logits(model, tokens)
    logits(model, tokens)  # ids from set_doc_ids hold until replaced (generation)
    with pytest.raises(MemauditError, match="already has sinks attached"):
        attach_sinks(model, SinkConfig(new_units=8))
    assert model.config.n_inner is None  # refused before widening anything
    with pytest.raises(MemauditError, match="unknown sink mode 'on'"):
        attach_sinks(tiny_model(), SinkConfig(), mode="on")
    sinks.remove()
    assert not model._forward_pre_hooks


def test_collator_pads_rows_with_their_last_id() -> None:
    collate = DocIdCollator(pad_token_id=0)
    batch = collate(
        [
            {"input_ids": [5, 6, 7], "doc_id": 9},
            {"input_ids": [8], "doc_ids": [4]},
            {"input_ids": torch.tensor([1, 2]), "doc_ids": torch.tensor([3, 2**40])},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [1, 2, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100], [1, 2, -100]]
    assert batch["doc_ids"].tolist() == [[9, 9, 9], [4, 4, 4], [3, 2**40, 2**40]]
    with pytest.raises(MemauditError, match="feature 0 needs exactly one of doc_id .* remove_unused_columns=False"):
        collate([{"input_ids": [1, 2]}])
    with pytest.raises(MemauditError, match="feature 0: 1 doc_ids for 2 input_ids"):
        collate([{"input_ids": [1, 2], "doc_ids": [3]}])
    with pytest.raises(MemauditError, match="3 documents but 2 doc_ids"):
        pack_documents([[1], [2], [3]], [1, 2], seq_len=2, eos_token_id=0)
    with pytest.raises(MemauditError, match="document id 0 is not allowed"):
        pack_documents([[1], [2]], [1, 0], seq_len=2, eos_token_id=0)
    with pytest.raises(MemauditError, match="fewer than one sequence of 8: lower seq_len"):
        pack_documents([[1], [2]], [1, 2], seq_len=8, eos_token_id=0)


def test_the_public_api_is_lazy_and_documented() -> None:
    code = "import sys, memaudit.memsinks.config, memaudit.memsinks; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    for name in memsinks.__all__:
        value = getattr(memsinks, name)
        if callable(value):
            assert value.__doc__, name
        else:  # the registries are dicts: the package docstring says what they hold
            assert f"`{name}`" in memsinks.__doc__, name


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")  # Trainer's default, on a CPU
def test_the_docs_example_runs(tmp_path, monkeypatch) -> None:
    section = DOCS_PAGE.read_text().split("## Your own training loop\n", 1)[1].split("\n## ", 1)[0]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.DOTALL))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(DOCS_PAGE), "exec"), namespace)
    assert load_model("out/memsink").sinks is not None
    assert load_model("out/memsink-forgot").meta["kind"] == "memsink-pruned"
    deployed = AutoModelForCausalLM.from_pretrained("out/deployed")
    assert deployed.config.n_inner == namespace["sinks"].n_shared
