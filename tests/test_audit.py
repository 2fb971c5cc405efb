import json

import numpy as np
import pytest

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import sha256_file
from memaudit.corpus.audit import AuditConfig, AuditSet, write_audit_set
from memaudit.corpus.packing import PackedStream
from memaudit.corpus.tokenizer import load_tokenizer
from tests.helpers import TINY_DATA


def test_same_seed_same_bytes(tiny_data, tmp_path):
    again = tmp_path / "again"
    write_audit_set(TINY_DATA, again)
    for name in ("train.jsonl", "audit.jsonl", "valid.jsonl", "manifest.json", "tokenizer/tokenizer.json"):
        assert sha256_file(tiny_data / name) == sha256_file(again / name), name


def test_roles_and_files(tiny_data):
    data = AuditSet.load(tiny_data)
    train_ids = {r["doc_id"] for r in data.train}
    members = [r for r in data.audit if r["kind"] == "repeated"]
    heldout = [r for r in data.audit if r["kind"] == "heldout"]
    assert len(members) == len(heldout) == 4 * 3
    assert sorted({r["repeats"] for r in members}) == [1, 8, 64]
    assert all(r["doc_id"] in train_ids for r in members)
    assert not any(r["doc_id"] in train_ids for r in heldout + data.valid)
    for row in data.train + data.audit + data.valid:
        assert set(row) >= {"doc_id", "text", "repeats", "kind"} and row["doc_id"] > 0
    canaries = [r for r in data.audit if r["kind"] == "canary"]
    assert sorted(r["repeats"] for r in canaries) == [0, 1, 8, 64]
    assert all(r["secret"] in r["text"] for r in canaries)
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    assert manifest["files"]["train.jsonl"] == sha256_file(tiny_data / "train.jsonl")
    assert manifest["config"]["seed"] == 0 and manifest["canary"]["space_size"] == 10**9


def test_members_and_heldout_are_length_matched(tiny_data):
    data = AuditSet.load(tiny_data)
    tok = load_tokenizer(tiny_data / "tokenizer")
    length = lambda rows: sorted(len(tok(r["text"])["input_ids"]) for r in rows)  # noqa: E731
    members = length([r for r in data.audit if r["kind"] == "repeated"])
    heldout = length([r for r in data.audit if r["kind"] == "heldout"])
    assert all(64 <= n <= 120 for n in members + heldout)
    assert abs(np.mean(members) - np.mean(heldout)) < 3


@pytest.mark.parametrize("repeats", [(0, 8), (-1,), (), (1, 1), (2.5,), (10_001,)])
def test_repeat_levels_must_be_distinct_positive_and_bounded(repeats):
    with pytest.raises(MemauditError, match="repeats must be distinct integers from 1 to 10000"):
        AuditConfig(repeats=repeats)


def test_packing_keeps_a_document_id_beside_every_token():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    stream = PackedStream(docs, doc_ids=[11, 22, 33], repeats=[1, 3, 2], eos_id=0, seq_len=4, seed=0)
    assert stream.tokens_per_epoch == 4 + 3 * 3 + 2 * 5
    tokens, ids = stream.epoch_blocks(0)
    owner = {1: 11, 2: 11, 3: 11, 4: 22, 5: 22, 6: 33, 7: 33, 8: 33, 9: 33}
    for t, i in zip(tokens.ravel(), ids.ravel()):
        assert t == 0 or owner[int(t)] == i
    again = PackedStream(docs, doc_ids=[11, 22, 33], repeats=[1, 3, 2], eos_id=0, seq_len=4, seed=0)
    assert (again.batch(3, 5)[0] == stream.batch(3, 5)[0]).all()  # a pure function of (seed, index)
    assert not (stream.epoch_blocks(1)[0] == stream.epoch_blocks(0)[0]).all()  # reshuffled each epoch
