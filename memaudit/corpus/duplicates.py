"""`memaudit scan data`: how often a corpus repeats itself. Repetition is what a model memorizes
(verbatim extraction grows with the number of copies), so exact duplicate documents, long token
n-grams shared across documents, and near-duplicate clusters (MinHash + LSH) point at the
sequences to audit first. Everything is hashed with numpy, in vectorized passes."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import check_out, write_json, write_jsonl
from memaudit.corpus.config import ScanDataConfig
from memaudit.corpus.sources import doc_id, load_documents, normalize

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SHINGLE_WORDS = 5  # near duplicates are judged on word 5-grams; shorter documents only count as exact
LSH_RECALL = 0.99  # banding is chosen to find a pair at exactly the threshold with this probability
EXCERPT_CHARS = 80
HISTOGRAM_BINS = ((1, 1), (2, 7), (8, 31), (32, 127), (128, None))
EXACT_HISTOGRAM_MAX = 8  # up to this many distinct counts, the histogram lists each count
_BASE = np.uint64(0x100000001B3)  # odd multiplier of the polynomial window hash (mod 2^64)
_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")


@dataclass
class DuplicateReport:
    """What `scan_corpus` found. `documents` has one row per distinct (normalized) document in
    first-seen order; `clusters` one per near-duplicate cluster of two or more distinct documents;
    `top` the most repeated documents/clusters (2+ occurrences); `counts` the headline numbers."""

    source: str
    settings: dict[str, Any]
    counts: dict[str, int]
    histogram: pd.DataFrame
    documents: pd.DataFrame
    clusters: pd.DataFrame
    top: pd.DataFrame
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no full texts: those stay in the corpus)."""
        return {
            "source": self.source,
            "settings": self.settings,
            "counts": self.counts,
            "seconds": round(self.seconds, 3),
            "histogram": self.histogram.to_dict("records"),
            "clusters": self.clusters.to_dict("records"),
            "top": self.top.to_dict("records"),
        }


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads ids and hashes over 64 bits, so small or structured
    inputs (token ids, sequential ints) behave like random ones downstream."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def window_hashes(docs: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit polynomial hash of every window of `n` consecutive tokens that lies inside one
    document, and the index of that document; windows come in document order. Vectorized over the
    whole corpus at once: n passes of multiply-add instead of a Python loop per token."""
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    m = int(lengths.sum()) - n + 1
    if m <= 0:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    values = _mix(np.concatenate(docs))
    h = np.zeros(m, np.uint64)
    for k in range(n):
        h *= _BASE
        h += values[k : k + m]
    doc = np.repeat(np.arange(len(docs)), lengths)[:m]
    end = np.repeat(np.cumsum(lengths), lengths)[:m]
    inside = np.arange(m) + n <= end
    return h[inside], doc[inside]


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True)
    return a, b


def minhash_signatures(values: np.ndarray, starts: np.ndarray, num_perm: int = 128, seed: int = 0) -> np.ndarray:
    """MinHash signatures (one uint32 row of `num_perm` per set) of the non-empty sets
    `values[starts[i]:starts[i + 1]]`. Each permutation is multiply-shift hashing of the mixed
    value (top 32 bits of a*x + b mod 2^64); repeats inside a set do not change its minimum."""
    x = _mix(np.asarray(values))
    a, b = _permutations(num_perm, seed)
    signatures = np.empty((len(starts), num_perm), np.uint32)
    block = max(1, (1 << 23) // max(len(x), 1))  # ~64 MiB of temporaries per step
    for p in range(0, num_perm, block):
        hashed = (x[None, :] * a[p : p + block, None] + b[p : p + block, None]) >> np.uint64(32)
        signatures[:, p : p + block] = np.minimum.reduceat(hashed, starts, axis=1).T
    return signatures


def minhash(items: np.ndarray | list[int], num_perm: int = 128, seed: int = 0) -> np.ndarray:
    """The MinHash signature of one non-empty set of integers (e.g. shingle hashes)."""
    values = np.asarray(items).astype(np.uint64)
    if values.size == 0:
        raise ValueError("MinHash of an empty set is undefined")
    return minhash_signatures(values, np.array([0]), num_perm, seed)[0]


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of agreeing MinHash slots: an unbiased estimate of the Jaccard similarity."""
    return float(np.mean(a == b))


def lsh_bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest false candidates) that still makes a pair at
    exactly `threshold` a candidate with probability LSH_RECALL; candidates are verified anyway."""
    ok = [r for r in range(1, num_perm + 1) if 1 - (1 - threshold**r) ** (num_perm // r) >= LSH_RECALL]
    rows = max(ok, default=1)
    return num_perm // rows, rows


def _candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Pairs (i < j) that agree on a whole band. Each bucket pairs its members with its first
    member (a star, linear in the bucket size); union-find joins the stars into clusters."""
    n = len(signatures)
    found = []
    for band in range(bands):
        key = np.zeros(n, np.uint64)
        for col in signatures[:, band * rows : (band + 1) * rows].T:
            key *= _BASE
            key += _mix(col)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        first = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
        anchor = order[np.maximum.accumulate(np.where(first, np.arange(n), 0))]
        found.append(np.stack([anchor[~first], order[~first]], axis=1))
    pairs = np.sort(np.concatenate(found), axis=1)
    return np.unique(pairs, axis=0)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find: the smallest member index of each element's cluster."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs.tolist():
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(x) for x in range(n)], dtype=np.int64)


def _ids(token_lists: list[list[str]]) -> list[np.ndarray]:
    vocab: dict[str, int] = {}
    return [np.array([vocab.setdefault(t, len(vocab)) for t in tokens], dtype=np.int64) for tokens in token_lists]


def _load(source: str | Path, expand_repeats: bool) -> tuple[list[dict], Path | None]:
    """Rows {text, count, doc_id, kind} in corpus order, and the data dir when `source` is one
    (DIR, or DIR/train.jsonl): its training rows occur `repeats` times each."""
    path = Path(source)
    if path.name == "train.jsonl" and (path.parent / "manifest.json").is_file():
        path = path.parent
    if not path.is_dir():
        return [{"text": t, "count": 1, "doc_id": None, "kind": None} for t in load_documents(str(source))], None
    from memaudit.corpus.audit import AuditSet

    train = AuditSet.load(path).train
    rows = [
        {
            "text": r["text"],
            "count": max(int(r.get("repeats", 1)), 1) if expand_repeats else 1,
            "doc_id": r.get("doc_id"),
            "kind": r.get("kind"),
        }
        for r in train
        if isinstance(r.get("text"), str) and r["text"].strip()
    ]
    if not rows:
        raise MemauditError(f"{path}/train.jsonl: no non-empty training documents")
    return rows, path


def _histogram(counts: np.ndarray) -> pd.DataFrame:
    """Distinct documents and occurrences by how often a document occurs."""
    values = np.unique(counts)
    if len(values) <= EXACT_HISTOGRAM_MAX:
        bins = [(str(v), v, v) for v in values.tolist()]
    else:
        bins = [
            (f"{lo}+" if hi is None else str(lo) if lo == hi else f"{lo}-{hi}", lo, hi) for lo, hi in HISTOGRAM_BINS
        ]
    total = int(counts.sum())
    rows = []
    for label, lo, hi in bins:
        inside = (counts >= lo) & (counts <= (hi or counts.max()))
        if inside.any():
            occurrences = int(counts[inside].sum())
            rows.append(
                {
                    "occurs": label,
                    "documents": int(inside.sum()),
                    "occurrences": occurrences,
                    "share": occurrences / total,
                }
            )
    return pd.DataFrame(rows)


def _excerpt(text: str) -> str:
    text = normalize(text)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def _distinct(rows: list[dict]) -> list[dict]:
    """Exact duplicates: one entry per normalized text (its first row, plus `norm`) in first-seen
    order, carrying the summed occurrence count, so every later step works on distinct texts."""
    distinct: dict[str, dict] = {}
    for row in rows:
        key = normalize(row["text"])
        if key in distinct:
            distinct[key]["count"] += row["count"]
        else:
            distinct[key] = {**row, "norm": key}
    return list(distinct.values())


def _resolve_tokenizer(
    tokenizer: PreTrainedTokenizerBase | str | Path | None, data_dir: Path | None
) -> PreTrainedTokenizerBase | None:
    """The tokenizer to count n-grams in: the one given (loaded if a path or name), else the data
    dir's own, else None (words and punctuation), so n-gram lengths match what the model saw."""
    if tokenizer is None and data_dir is not None and (data_dir / "tokenizer").is_dir():
        tokenizer = data_dir / "tokenizer"
    if isinstance(tokenizer, (str, Path)):
        from memaudit.corpus.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    return tokenizer


def _token_ids(docs: list[dict], tokenizer: PreTrainedTokenizerBase | None) -> list[np.ndarray]:
    """Each distinct document as int64 token ids: the tokenizer's, or ids of its normalized words
    and punctuation when there is none."""
    if tokenizer is None:
        return _ids([_TOKEN.findall(d["norm"]) for d in docs])
    encoded = tokenizer([d["text"] for d in docs], add_special_tokens=False)["input_ids"]
    return [np.asarray(ids, dtype=np.int64) for ids in encoded]


def _shared_ngrams(token_ids: list[np.ndarray], counts: np.ndarray, n: int) -> tuple[np.ndarray, dict[str, int]]:
    """Long n-grams: each distinct window with the distinct documents that contain it; its
    occurrences are the summed counts of those documents. Returns, per document, how many of its
    n-grams also occur in another document, and the n-gram headline counts."""
    hashes, owner = window_hashes(token_ids, n)
    pairs = np.unique(np.stack([hashes.view(np.int64), owner], axis=1), axis=0)  # (ngram, doc), once each
    _, which, n_docs = np.unique(pairs[:, 0], return_inverse=True, return_counts=True)
    occurrences = np.bincount(which, weights=counts[pairs[:, 1]])
    cross = n_docs >= 2
    shared = np.bincount(pairs[cross[which], 1], minlength=len(token_ids))
    return shared, {
        "distinct_ngrams": int(len(n_docs)),
        "repeated_ngrams": int((occurrences >= 2).sum()),
        "cross_document_ngrams": int(cross.sum()),
        "ngram_documents": int((shared > 0).sum()),
    }


def _near_pairs(norms: list[str], num_perm: int, threshold: float, bands: int, rows: int) -> np.ndarray:
    """Near duplicates: rows (i, j, estimated Jaccard) of the pairs of normalized texts at or above
    `threshold`, from MinHash of word 5-gram shingles and banded LSH, candidates verified by the
    estimated Jaccard. Texts shorter than one shingle take no part (they only count as exact)."""
    shingles, shingle_owner = window_hashes(_ids([_WORD.findall(n.lower()) for n in norms]), SHINGLE_WORDS)
    eligible, starts = np.unique(shingle_owner, return_index=True)
    if len(eligible) <= 1:
        return np.empty((0, 3))
    signatures = minhash_signatures(shingles, starts, num_perm)
    candidates = _candidate_pairs(signatures, bands, rows)
    jaccard = (signatures[candidates[:, 0]] == signatures[candidates[:, 1]]).mean(axis=1)
    keep = jaccard >= threshold
    return np.column_stack([eligible[candidates[keep]], jaccard[keep]])


def near_duplicate_clusters(norms: list[str], num_perm: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(root, near): each normalized text's near-duplicate cluster, as the index of the cluster's first text (a
    text alone is its own), and the verified pairs (i, j, estimated Jaccard) that joined them. What `scan data`
    reports and `data build --cluster-ids` keys sinks on."""
    near = _near_pairs(norms, num_perm, threshold, *lsh_bands(num_perm, threshold))
    return _components(len(norms), near[:, :2].astype(np.int64)), near


def _documents_frame(
    docs: list[dict], counts: np.ndarray, token_ids: list[np.ndarray], shared: np.ndarray, root: np.ndarray
) -> pd.DataFrame:
    """One row per distinct document, with its cluster's total occurrences and size, which rank
    both the most repeated list and the emitted audit set."""
    documents = pd.DataFrame(
        {
            "doc_id": [d["doc_id"] or doc_id(d["text"]) for d in docs],
            "count": counts,
            "n_tokens": [len(t) for t in token_ids],
            "shared_ngrams": shared,
            "cluster": root,
            "kind": [d["kind"] for d in docs],
            "text": [d["text"] for d in docs],
        }
    )
    documents["cluster_occurrences"] = documents.groupby("cluster")["count"].transform("sum")
    documents["cluster_size"] = documents.groupby("cluster")["count"].transform("size")
    return documents


def _group_heads(documents: pd.DataFrame) -> pd.DataFrame:
    """Groups (a near-duplicate cluster, or one document alone) by occurrences, most first; each is
    shown by its most frequent member, so one cluster takes one line, not one per member."""
    ranked = documents.reset_index(names="order").sort_values(
        ["cluster_occurrences", "cluster_size", "count", "order"], ascending=[False, False, False, True], kind="stable"
    )
    return ranked.drop_duplicates("cluster")


def _top_frame(heads: pd.DataFrame, top: int) -> pd.DataFrame:
    """The `top` most repeated groups (2+ occurrences): the sequences to audit first."""
    repeated = heads[heads["cluster_occurrences"] >= 2]
    return (
        pd.DataFrame(
            {
                "occurrences": repeated["cluster_occurrences"],
                "cluster_size": repeated["cluster_size"],
                "doc_count": repeated["count"],
                "doc_id": repeated["doc_id"],
                "kind": repeated["kind"],
                "n_tokens": repeated["n_tokens"],
                "excerpt": repeated["text"].map(_excerpt),
            }
        )
        .head(top)
        .reset_index(drop=True)
    )


def _clusters_frame(heads: pd.DataFrame, documents: pd.DataFrame, root: np.ndarray, near: np.ndarray) -> pd.DataFrame:
    """One row per near-duplicate cluster of 2+ distinct documents, numbered in group order, with
    its weakest verified link (min Jaccard) so a loose cluster is visible as such."""
    min_jaccard = pd.Series(near[:, 2], index=root[near[:, 0].astype(np.int64)]).groupby(level=0).min()
    multi = heads[heads["cluster_size"] > 1]
    return pd.DataFrame(
        {
            "cluster": range(len(multi)),
            "size": multi["cluster_size"].to_numpy(),
            "occurrences": multi["cluster_occurrences"].to_numpy(),
            "doc_id": multi["doc_id"].to_numpy(),
            "min_jaccard": min_jaccard.reindex(multi["cluster"]).to_numpy(),
            "doc_ids": [documents.loc[root == c, "doc_id"].tolist() for c in multi["cluster"]],
            "excerpt": multi["text"].map(_excerpt).to_numpy(),
        }
    )


def _summary(
    counts: np.ndarray, token_ids: list[np.ndarray], ngram_counts: dict[str, int], clusters: pd.DataFrame
) -> dict[str, int]:
    """The headline numbers, in the order the JSON and the terminal table show them."""
    return {
        "occurrences": int(counts.sum()),
        "distinct_documents": len(counts),
        "duplicated_documents": int((counts > 1).sum()),
        "duplicate_occurrences": int((counts - 1).sum()),
        "tokens": int(sum(len(t) * c for t, c in zip(token_ids, counts))),
        **ngram_counts,
        "near_clusters": len(clusters),
        "near_duplicate_documents": int(clusters["size"].sum()) if len(clusters) else 0,
    }


def scan_corpus(
    source: str | Path,
    config: ScanDataConfig | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | str | Path | None = None,
    expand_repeats: bool = True,
) -> DuplicateReport:
    """Duplication statistics of a corpus (an embedded name, a local file, or a memaudit data
    dir, whose training rows count `repeats` times unless `expand_repeats` is False), measured
    as `config` says (default: ScanDataConfig()).

    N-grams are over `tokenizer` tokens (a Hugging Face tokenizer or its dir; by default the data
    dir's own tokenizer, else words and punctuation), so a 50-token n-gram means what the model saw."""
    config = config or ScanDataConfig()
    start = time.perf_counter()
    rows, data_dir = _load(source, expand_repeats)
    docs = _distinct(rows)
    counts = np.array([d["count"] for d in docs], dtype=np.int64)
    tokenizer = _resolve_tokenizer(tokenizer, data_dir)
    token_ids = _token_ids(docs, tokenizer)
    shared, ngram_counts = _shared_ngrams(token_ids, counts, config.ngram_tokens)
    root, near = near_duplicate_clusters([d["norm"] for d in docs], config.minhash_perm, config.near_threshold)
    bands, band_rows = lsh_bands(config.minhash_perm, config.near_threshold)
    documents = _documents_frame(docs, counts, token_ids, shared, root)
    heads = _group_heads(documents)
    clusters = _clusters_frame(heads, documents, root, near)
    settings = {
        "ngram_tokens": config.ngram_tokens,
        "tokenizer": "words" if tokenizer is None else getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
        "shingle_words": SHINGLE_WORDS,
        "minhash_perm": config.minhash_perm,
        "near_threshold": config.near_threshold,
        "lsh_bands": bands,
        "lsh_rows": band_rows,
        "expand_repeats": expand_repeats,
    }
    return DuplicateReport(
        source=str(source),
        settings=settings,
        counts=_summary(counts, token_ids, ngram_counts, clusters),
        histogram=_histogram(counts),
        documents=documents,
        clusters=clusters,
        top=_top_frame(heads, config.top),
        seconds=time.perf_counter() - start,
    )


def scan_and_write_corpus(
    source: str | Path,
    config: ScanDataConfig | None = None,
    *,
    json_out: Path | None = None,
    audit_out: Path | None = None,
) -> tuple[DuplicateReport, int | None]:
    """`memaudit scan data`: the duplication statistics of `source` (scan_corpus), written as JSON
    to `json_out` and its repeated documents as an audit JSONL to `audit_out` (emit_audit, those of
    `config.emit_min_tokens` tokens or more), each when given. Both outputs are checked first: an
    existing file is replaced, but an input never. Returns the report and how many documents were
    emitted (None without `audit_out`)."""
    config = config or ScanDataConfig()
    for written in (json_out, audit_out):
        if written is not None:
            check_out(written, force=True, inputs=[source])
    report = scan_corpus(source, config)
    if json_out is not None:
        write_json(Path(json_out), report.to_dict())
    emitted = emit_audit(report, audit_out, min_tokens=config.emit_min_tokens) if audit_out is not None else None
    return report, emitted


def emit_audit(report: DuplicateReport, path: Path, min_count: int = 2, min_tokens: int = 0) -> int:
    """Write the repeated documents as an audit JSONL for `memaudit scan model --audit`: every
    distinct document whose group (itself, or its near-duplicate cluster) occurs at least
    `min_count` times and that has at least `min_tokens` tokens (extraction probes need a prefix
    and a suffix), most repeated first. All are members: they are in the corpus. Returns the count."""
    docs = report.documents
    chosen = docs[(docs["cluster_occurrences"] >= min_count) & (docs["n_tokens"] >= min_tokens)]
    chosen = chosen.reset_index(names="order").sort_values(
        ["count", "cluster_occurrences", "order"], ascending=[False, False, True], kind="stable"
    )
    if chosen.empty:
        raise MemauditError(
            f"no document occurs {min_count}+ times (exactly or as a near duplicate) with {min_tokens}+ tokens; "
            "nothing to audit"
        )
    write_jsonl(
        Path(path),
        (
            {
                "doc_id": int(r.doc_id),
                "text": r.text,
                "repeats": int(r.count),
                "near_repeats": int(r.cluster_occurrences),
                "member": True,
                "kind": "repeated",
            }
            for r in chosen.itertuples()
        ),
    )
    return len(chosen)


def format_report(report: DuplicateReport) -> Group:
    """Terminal view: headline counts, the occurrence histogram, the most repeated sequences."""
    c, s = report.counts, report.settings
    summary = Table(title=f"{report.source}: duplication ({report.seconds:.1f} s)", title_justify="left")
    summary.add_column("what")
    summary.add_column("value", justify="right")
    for label, value in [
        ("document occurrences", c["occurrences"]),
        ("distinct documents", c["distinct_documents"]),
        ("documents occurring 2+ times", c["duplicated_documents"]),
        ("occurrences that are exact copies", c["duplicate_occurrences"]),
        (f"tokens ({s['tokenizer']})", c["tokens"]),
        (f"{s['ngram_tokens']}-grams occurring 2+ times", c["repeated_ngrams"]),
        (f"{s['ngram_tokens']}-grams in 2+ distinct documents", c["cross_document_ngrams"]),
        ("documents sharing such an n-gram", c["ngram_documents"]),
        (f"near-duplicate clusters (Jaccard ≥ {s['near_threshold']})", c["near_clusters"]),
        ("documents in near-duplicate clusters", c["near_duplicate_documents"]),
    ]:
        summary.add_row(label, f"{value:,}")
    histogram = Table(title="documents by occurrences", title_justify="left")
    for col in ("occurs", "documents", "occurrences", "share"):
        histogram.add_column(col, justify="right")
    for r in report.histogram.itertuples():
        histogram.add_row(r.occurs, f"{r.documents:,}", f"{r.occurrences:,}", f"{r.share:.1%}")
    show_kind = report.top["kind"].notna().any()
    top = Table(title="most repeated sequences", title_justify="left")
    for col in ("occurrences", "cluster", "doc_id", *(("kind",) if show_kind else ()), "tokens", "excerpt"):
        top.add_column(col, justify="left" if col in ("kind", "excerpt") else "right")
    for r in report.top.itertuples():
        kind = (r.kind or "",) if show_kind else ()
        top.add_row(f"{r.occurrences:,}", str(r.cluster_size), str(r.doc_id), *kind, str(r.n_tokens), Text(r.excerpt))
    return Group(summary, histogram, top)
