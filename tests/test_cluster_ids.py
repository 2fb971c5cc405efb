"""Near duplicates in an audit set: `data build --edit-rate` writes each repeat of a member after its first as an
edited copy, and `--cluster-ids` keys the sinks of every near-duplicate cluster on one id, so the copies share them."""

from __future__ import annotations

import difflib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from memaudit.app.cli import main
from memaudit.common.errors import MemauditError
from memaudit.corpus.audit import AuditSet, build_audit_set, edit_words, resolve_sink_ids, sink_id
from memaudit.corpus.config import AuditConfig
from memaudit.training.config import TrainConfig
from memaudit.training.train import training_stream
from tests.helpers import assert_one_line_error

WORDS = [f"w{i}" for i in range(3000)]
SMALL = dict(repeats=(1, 8), members_per_level=2, canaries_per_level=1, n_valid=8, n_natural=40)
SMALL |= dict(min_tokens=20, max_tokens=400, vocab_size=300)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Documents of 40-70 random words: no two are near duplicates."""
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 70))) for _ in range(120)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t, "user_id": i % 7}) + "\n" for i, t in enumerate(texts)))
    return path


def build(corpus: Path, **settings) -> tuple[AuditSet, object]:
    return build_audit_set(AuditConfig(corpus=str(corpus), **SMALL, **settings))


# --- Word edits -----------------------------------------------------------------------------------------------------

TEXTS = st.lists(st.sampled_from(["a", "bb", "ccc", "the", "Émile", "9"]), min_size=1, max_size=40).map(" ".join)


@given(text=TEXTS, indent=st.sampled_from(["", " ", "\n  "]), seed=st.integers(0, 2**32))
@settings(max_examples=60, deadline=None)
def test_rate_zero_is_the_identity(text: str, indent: str, seed: int) -> None:
    spaced = indent + text.replace(" ", "  \n", 2) + "\n"
    assert edit_words(spaced, 0.0, random.Random(seed)) == (spaced, 0)


@given(text=TEXTS, rate=st.floats(0, 1), seed=st.integers(0, 2**32))
@settings(max_examples=60, deadline=None)
def test_edits_are_deterministic_by_seed_and_keep_a_word(text: str, rate: float, seed: int) -> None:
    copy, edits = edit_words(text, rate, random.Random(seed))
    assert (copy, edits) == edit_words(text, rate, random.Random(seed))
    assert copy.strip() and 0 <= edits <= len(text.split())


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.5, 1.0])
def test_the_edit_rate_holds_on_average(rate: float) -> None:
    rng = random.Random(1)
    words = [rng.choice(WORDS) for _ in range(3000)]
    copy, edits = edit_words(" ".join(words), rate, random.Random(2))
    # Measured apart from the count: the share of the original's words that the copy no longer has in place.
    matched = sum(
        b.size for b in difflib.SequenceMatcher(None, words, copy.split(), autojunk=False).get_matching_blocks()
    )
    assert edits / len(words) == pytest.approx(rate, abs=0.025)
    assert 1 - matched / len(words) == pytest.approx(rate, abs=0.03)


# --- Edited copies in a data build ----------------------------------------------------------------------------------


def test_edited_copies_replace_repeats_and_the_audit_set_scores_the_originals(corpus: Path) -> None:
    exact, _ = build(corpus)
    edited, _ = build(corpus, edit_rate=0.05)
    assert edited.audit == exact.audit and edited.valid == exact.valid  # what is scored is the same at every rate
    assert sum(r["repeats"] for r in edited.train) == sum(r["repeats"] for r in exact.train)
    members = [r for r in edited.audit if r["kind"] == "repeated"]
    for member in members:
        own = [r for r in edited.train if r["doc_id"] == member["doc_id"] and "copy_of" not in r]
        copies = [r for r in edited.train if r.get("copy_of") == member["doc_id"]]
        assert len(own) == 1 and own[0]["text"] == member["text"] and own[0]["repeats"] == 1
        assert len(copies) == member["repeats"] - 1 and all(r["repeats"] == 1 for r in copies)
        assert all(r["kind"] == "repeated" for r in copies)
        assert member["repeats"] == 1 or any(r["text"] != member["text"] for r in copies)
        # A copy that drew no edit (5% of 40-70 words: a few percent of copies) is an exact one, with the same id.
        assert all((r["text"] == member["text"]) == (r["doc_id"] == member["doc_id"]) for r in copies)
    canaries = [r for r in edited.train if r["kind"] == "canary"]
    assert canaries == [r for r in exact.train if r["kind"] == "canary"]  # the secrets stay exact
    counts = edited.manifest["counts"]
    assert counts["edited_copies"] == 2 * 7 and counts["word_edit_rate"] == pytest.approx(0.05, abs=0.03)
    assert edited.manifest["config"]["edit_rate"] == 0.05
    assert build(corpus, edit_rate=0.05)[0].train == edited.train  # the same seed, the same copies
    assert "edited_copies" not in exact.manifest["counts"]


def test_an_owners_copies_stay_theirs(corpus: Path) -> None:
    data, _ = build(corpus, edit_rate=0.05, id_field="user_id")
    for copy in (r for r in data.train if "copy_of" in r):
        original = next(r for r in data.train if r["doc_id"] == copy["copy_of"])
        assert (copy["user_id"], copy["sink_id"]) == (original["user_id"], original["sink_id"])


# --- Cluster ids ----------------------------------------------------------------------------------------------------


def test_cluster_ids_give_a_members_copies_its_sinks(corpus: Path) -> None:
    data, tok = build(corpus, edit_rate=0.01, cluster_ids=True, cluster_threshold=0.5)
    members = [r for r in data.audit if r["kind"] == "repeated" and r["repeats"] > 1]
    assert data.manifest["counts"]["near_clusters"] == len(members) == 2
    for member in members:
        assert member["sink_id"] == member["doc_id"]  # the cluster's id is its first row's doc_id: the original
        copies = [r for r in data.train if r.get("copy_of") == member["doc_id"]]
        assert {sink_id(r) for r in copies} == {member["doc_id"]}
        assert resolve_sink_ids([copies[0]["doc_id"]], data) == [member["doc_id"]]
    assert not any("sink_id" in r for r in data.train if r["kind"] == "natural")
    # Leaving a member out leaves out every copy of it.
    member = members[0]
    stream = training_stream(data, tok, TrainConfig(seq_len=16, exclude_ids=(member["doc_id"],)))
    full = training_stream(data, tok, TrainConfig(seq_len=16))
    assert member["doc_id"] not in stream.epoch_blocks(0)[1] and member["doc_id"] in full.epoch_blocks(0)[1]
    assert full.tokens_per_epoch - stream.tokens_per_epoch >= 8 * 20


def test_cluster_ids_without_near_duplicates_warn_and_keep_one_id_per_document(corpus: Path, capsys) -> None:
    data, _ = build(corpus, cluster_ids=True)
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: cluster_ids: the training documents hold no near")
    assert data.manifest["counts"]["near_clusters"] == 0
    assert not any("sink_id" in r for r in (*data.train, *data.audit))


def test_cluster_ids_are_checked(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(MemauditError, match="cluster_ids keys sinks on near-duplicate clusters and `id_field`"):
        AuditConfig(cluster_ids=True, id_field="user_id")
    for bad in (dict(cluster_ids="yes"), dict(cluster_threshold=0), dict(edit_rate=1.5), dict(edit_rate=-0.1)):
        with pytest.raises(MemauditError, match=next(iter(bad))):
            AuditConfig(**bad)
    run = lambda *a: CliRunner().invoke(main, ["data", "build", "--out", str(tmp_path / "d"), *a])  # noqa: E731
    assert_one_line_error(run("--cluster-ids", "--id-field", "user_id"), "--cluster-ids keys sinks", "--id-field")
    assert_one_line_error(run("--edit-rate", "2"), "--edit-rate must be a finite number from 0 to 1")
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_data_build_writes_clustered_edited_copies(tmp_path: Path, corpus: Path) -> None:
    args = ["data", "build", "--out", str(tmp_path / "d"), "--corpus", str(corpus), "--repeats", "1,8"]
    args += ["--members-per-level", "2", "--canaries-per-level", "1", "--n-valid", "8", "--n-natural", "40"]
    args += ["--min-tokens", "20", "--max-tokens", "400", "--vocab-size", "300"]
    result = CliRunner().invoke(main, [*args, "--edit-rate", "0.01", "--cluster-ids", "--cluster-threshold", "0.5"])
    assert result.exit_code == 0, result.output
    assert "14 edited copies" in result.output and "2 near-duplicate clusters share a sink id each" in result.output
    data = AuditSet.load(tmp_path / "d")  # the rows check as any data dir's
    ids = np.array([sink_id(r) for r in data.train if "copy_of" in r])
    assert len(np.unique(ids)) == 2
