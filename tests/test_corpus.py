import gzip
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memaudit.common.errors import MemauditError
from memaudit.corpus.sources import doc_id, embedded_provenance, load_documents


def test_embedded_corpus_matches_its_provenance():
    docs = load_documents("austen")
    prov = embedded_provenance("austen")
    assert len(docs) == prov["paragraphs"] > 9000
    assert sum(len(d) for d in docs) == prov["characters"]
    assert "Debian package r-cran-janeaustenr" in prov["source"]


@given(st.text(min_size=1))
def test_doc_id_is_a_positive_int64_equal_for_equal_normalized_text(text):
    i = doc_id(text)
    assert 0 < i < 2**63
    assert doc_id(" " + text.replace(" ", "  ") + "\n") == i  # whitespace runs do not change identity


def test_doc_id_differs_for_different_text():
    assert doc_id("It is a truth universally acknowledged") != doc_id("It is a truth universally acknowledged.")


def test_local_formats(tmp_path):
    (tmp_path / "c.txt").write_text("first para\nstill first\n\nsecond para\n\n\n")
    assert load_documents(str(tmp_path / "c.txt")) == ["first para still first", "second para"]
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "a doc"}) + "\n" + json.dumps({"text": "b doc"}) + "\n")
    assert load_documents(str(tmp_path / "c.jsonl")) == ["a doc", "b doc"]
    (tmp_path / "c.csv").write_text('id,text\n1,"x, y"\n2,z\n')
    assert load_documents(str(tmp_path / "c.csv")) == ["x, y", "z"]
    import pandas as pd

    pd.DataFrame({"text": ["p", "q"]}).to_parquet(tmp_path / "c.parquet")
    assert load_documents(str(tmp_path / "c.parquet")) == ["p", "q"]


def test_bad_corpora_name_the_problem(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nsecond \xff line\n")
    with pytest.raises(MemauditError, match=r"bad.txt:2: not UTF-8"):
        load_documents(str(bad))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(MemauditError, match="no non-empty documents"):
        load_documents(str(empty))
    with pytest.raises(MemauditError, match="no such file"):
        load_documents(str(tmp_path / "missing.jsonl"))
    (tmp_path / "notext.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(MemauditError, match="notext.jsonl:1: no 'text' field"):
        load_documents(str(tmp_path / "notext.jsonl"))


def test_embedded_file_is_deterministic_gzip():
    from importlib import resources

    raw = (resources.files("memaudit.corpus") / "data" / "austen.jsonl.gz").read_bytes()
    assert raw[4:8] == b"\x00\x00\x00\x00"  # mtime 0: rebuilding gives the same bytes
    assert json.loads(gzip.decompress(raw).splitlines()[0])["book"] == "Sense & Sensibility"
