"""`memaudit scan data`: exact, n-gram and near duplicates are found where they were planted,
and nowhere else; a data dir's planted repeat counts come back out."""

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import read_jsonl
from memaudit.corpus.audit import AuditSet
from memaudit.corpus.audit_file import load_audit_rows
from memaudit.corpus.config import ScanDataConfig
from memaudit.corpus.duplicates import (
    emit_audit,
    estimate_jaccard,
    format_report,
    lsh_bands,
    minhash,
    scan_corpus,
    window_hashes,
)

WORDS = [f"w{i}" for i in range(5000)]


def words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def write_corpus(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Unrelated random documents, plus: one text 3 times (one copy with other whitespace), one
    twice, a pair that differs in one word, and two documents that share a 60-word passage."""
    rng = random.Random(0)
    unique = [" ".join(words(rng, 80)) for _ in range(30)]
    thrice, twice = " ".join(words(rng, 70)), " ".join(words(rng, 70))
    near = words(rng, 200)
    near_edit = [*near[:100], "CHANGED", *near[101:]]
    passage = words(rng, 60)
    left, right = words(rng, 40) + passage, passage + words(rng, 40)
    texts = [
        *unique[:10],
        thrice,
        twice,
        " ".join(near),
        *unique[10:20],
        "  " + thrice.replace(" ", "\n  ", 3),
        " ".join(near_edit),
        " ".join(left),
        thrice,
        twice,
        " ".join(right),
        *unique[20:],
    ]
    path = write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", texts)
    parts = {"thrice": thrice, "twice": twice, "near": " ".join(near), "near_edit": " ".join(near_edit)}
    parts |= {"left": " ".join(left), "right": " ".join(right), "unique": unique}
    return path, parts, scan_corpus(path, ScanDataConfig(ngram_tokens=50, top=5))


def row_of(report, text):
    docs = report.documents
    return docs[docs["text"].str.split().str.join(" ") == " ".join(text.split())].iloc[0]


def test_exact_duplicates_are_counted(synthetic):
    _, parts, report = synthetic
    c = report.counts
    assert (c["occurrences"], c["distinct_documents"]) == (30 + 9, 30 + 6)
    assert (c["duplicated_documents"], c["duplicate_occurrences"]) == (2, 3)
    assert row_of(report, parts["thrice"])["count"] == 3 and row_of(report, parts["twice"])["count"] == 2
    assert report.histogram[["occurs", "documents", "occurrences"]].values.tolist() == [
        ["1", 34, 34],
        ["2", 1, 2],
        ["3", 1, 3],
    ]
    assert report.top["occurrences"].tolist()[:2] == [3, 2]
    assert report.top["doc_id"].iloc[0] == row_of(report, parts["thrice"])["doc_id"]


def test_one_word_edit_is_a_near_duplicate_and_unrelated_documents_are_not(synthetic):
    _, parts, report = synthetic
    near, edit = row_of(report, parts["near"]), row_of(report, parts["near_edit"])
    assert near["cluster"] == edit["cluster"] and near["cluster_size"] == 2
    assert len(report.clusters) == 1 and report.clusters["size"].iloc[0] == 2
    assert set(report.clusters["doc_ids"].iloc[0]) == {near["doc_id"], edit["doc_id"]}
    assert report.clusters["min_jaccard"].iloc[0] >= 0.8
    assert all(row_of(report, t)["cluster_size"] == 1 for t in [*parts["unique"], parts["left"], parts["right"]])
    assert report.counts["near_clusters"] == 1 and report.counts["near_duplicate_documents"] == 2


def test_long_ngrams_shared_between_different_documents(synthetic):
    _, parts, report = synthetic
    c = report.counts
    # The passage's windows, and the near pair's windows that miss the edited word.
    assert c["cross_document_ngrams"] == (60 - 50 + 1) + (200 - 50 + 1) - 50
    shared = report.documents[report.documents["shared_ngrams"] > 0]
    expected = {row_of(report, parts[k])["doc_id"] for k in ("left", "right", "near", "near_edit")}
    assert set(shared["doc_id"]) == expected and c["ngram_documents"] == 4
    assert row_of(report, parts["left"])["shared_ngrams"] == 11
    # Exact copies repeat every window of the copied document, though no other document shares it.
    assert c["repeated_ngrams"] == c["cross_document_ngrams"] + 2 * (70 - 50 + 1)


def test_many_repeat_levels_are_binned(tmp_path):
    texts = [f"document number {k}" for k in range(1, 11) for _ in range(k)] + ["rare"] * 200
    report = scan_corpus(write_corpus(tmp_path / "levels.jsonl", texts))
    assert report.histogram["occurs"].tolist() == ["1", "2-7", "8-31", "128+"]
    assert report.histogram["documents"].tolist() == [1, 6, 3, 1]
    assert report.histogram["occurrences"].sum() == len(texts)


def test_window_hashes_stay_inside_documents():
    docs = [np.array([1, 2, 3]), np.array([1, 2]), np.array([2, 3, 1, 2, 3])]
    hashes, owner = window_hashes(docs, 3)
    assert owner.tolist() == [0, 2, 2, 2]
    assert hashes[0] == hashes[3] and len(set(hashes[:3].tolist())) == 3


def test_data_dir_top_sequences_are_the_planted_ones(tiny_data):
    train = AuditSet.load(tiny_data).train
    report = scan_corpus(tiny_data, ScanDataConfig(top=10))
    by_id = report.documents.set_index("doc_id")
    assert all(by_id.loc[r["doc_id"], "count"] == r["repeats"] for r in train)
    planted = {r["doc_id"] for r in train if r["repeats"] == 64}
    assert len(planted) == 5 and {r["kind"] for r in train if r["repeats"] == 64} == {"repeated", "canary"}
    top5 = report.top.head(5)
    assert set(top5["doc_id"]) == planted and top5["occurrences"].tolist() == [64] * 5
    assert report.top["occurrences"].tolist()[5:] == [8] * 5
    assert report.histogram["occurs"].tolist() == ["1", "8", "64"]
    assert report.settings["tokenizer"] != "words"  # the data dir's own tokenizer
    flat = scan_corpus(tiny_data / "train.jsonl", expand_repeats=False)
    assert flat.counts["duplicated_documents"] == 0 and flat.counts["occurrences"] == len(train)


def test_emitted_audit_round_trips(tiny_data, tmp_path):
    report = scan_corpus(tiny_data)
    out = tmp_path / "repeated.jsonl"
    assert emit_audit(report, out, min_count=8) == 10
    rows = read_jsonl(out)
    train = {r["doc_id"]: r for r in AuditSet.load(tiny_data).train}
    assert [r["repeats"] for r in rows] == [64] * 5 + [8] * 5
    for row in rows:
        assert row["member"] is True and row["kind"] == "repeated"
        assert row["text"] == train[row["doc_id"]]["text"] and row["repeats"] == train[row["doc_id"]]["repeats"]
    loaded = load_audit_rows(out)  # as `memaudit scan model --audit` reads it
    assert [(r["doc_id"], r["repeats"], r["kind"]) for r in loaded] == [
        (r["doc_id"], r["repeats"], "repeated") for r in rows
    ]
    assert emit_audit(report, out, min_count=8, min_tokens=64) == 8  # members have 64+ tokens, canaries fewer
    with pytest.raises(MemauditError, match="nothing to audit"):
        emit_audit(report, tmp_path / "none.jsonl", min_count=65)


def test_report_renders_and_serializes(synthetic):
    _, _, report = synthetic
    console = Console(record=True, width=140)
    console.print(format_report(report))
    text = console.export_text()
    assert "most repeated sequences" in text and "near-duplicate clusters" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["counts"] == report.counts and len(data["top"]) == len(report.top)


def test_bad_input(tmp_path):
    with pytest.raises(MemauditError, match="no such file"):
        scan_corpus(tmp_path / "missing.jsonl")
    with pytest.raises(MemauditError, match="no non-empty documents"):
        scan_corpus(write_corpus(tmp_path / "empty.jsonl", ["", "   "]))
    with pytest.raises(MemauditError, match="not a memaudit data dir"):
        scan_corpus(tmp_path)
    with pytest.raises(MemauditError, match="--near"):
        ScanDataConfig(near_threshold=0)


def test_banding_finds_pairs_at_the_threshold():
    assert lsh_bands(128, 0.8) == (21, 6)
    for threshold in (0.5, 0.7, 0.9):
        bands, rows = lsh_bands(128, threshold)
        assert bands * rows <= 128 and 1 - (1 - threshold**rows) ** bands >= 0.99


sets = st.sets(st.integers(0, 2**63 - 1), min_size=1, max_size=200)


@settings(max_examples=50, deadline=None)
@given(sets)
def test_minhash_of_a_set_with_itself_is_one(items):
    shuffled = sorted(items, reverse=True) + sorted(items)  # order and repeats do not matter
    assert estimate_jaccard(minhash(sorted(items)), minhash(shuffled)) == 1.0


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(0, 300), st.integers(1, 2**40))
def test_minhash_estimates_jaccard(n_a, n_b, offset, stride):
    a = {i * stride for i in range(n_a)}
    b = {(i + offset) * stride for i in range(n_b)}
    true = len(a & b) / len(a | b)
    estimate = estimate_jaccard(minhash(sorted(a), num_perm=256), minhash(sorted(b), num_perm=256))
    assert abs(estimate - true) <= 0.15  # ~5 standard deviations at 256 permutations
