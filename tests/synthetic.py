"""Synthetic scans for tests that need every metric but no model: per-sequence rows shaped like
`metrics.sequence_row`'s (every extraction verdict at every default sweep prefix, every
membership score, sampled extraction, canary exposure), validation scores, and results
documents computed from them by the real `compute_metrics`. Seeded: the same arguments give the
same numbers, which the golden files rely on."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from memaudit.common.fileio import atomic_write_text
from memaudit.probes.config import ATTACKS, SCAN_SCHEMA_VERSION, ScanConfig
from memaudit.probes.metrics import compute_metrics
from memaudit.probes.registry import at_prefix
from memaudit.probes.scoring import ScoredSequence

# Every default sweep prefix, a little sampling, few resamples: every registered metric, quickly.
CONFIG = ScanConfig(bootstrap=40, sampling_trials=4, exposure_candidates=100)
LEVELS = (0,) * 8 + (1,) * 4 + (8,) * 4 + (64,) * 4  # held-out, then members by times in training


def _verdicts(fit: float, rng: np.random.Generator) -> dict:
    """Extraction verdicts of a sequence the model fits by `fit` in [0, 1] (1: memorized)."""
    matched = int(round(32 * min(1.0, fit + rng.uniform(0, 0.1))))
    prob = min(1.0, fit**2)
    return {
        "exact": matched == 32,
        "token_match": matched / 32,
        "prefix_match_len": matched,
        "strength": matched / 32,
        "np_prob": prob,
        "np_discoverable": prob >= 0.5,
    }


def scan_rows(memorized: float, seed: int = 0) -> list[dict]:
    """Rows of a model that memorizes `memorized` in [0, 1] of what repetition would teach it,
    and a blind baseline (a classifier of the texts alone) that barely tells members apart."""
    rng = np.random.default_rng(seed)
    blind = np.random.default_rng(seed + 200)  # its own stream: the other numbers stay as they were
    rows = []
    for i, level in enumerate(LEVELS):
        fit = memorized * math.log2(1 + level) / 6  # 1 at x64 for a fully memorizing model
        loss = 4.0 - 3.0 * fit + rng.normal(0, 0.15)
        row = {"doc_id": 1000 + i, "kind": "heldout" if level == 0 else "repeated", "repeats": level}
        row |= {"member": level > 0, "n_tokens": 96, "loss": loss, **_verdicts(fit, rng)}
        for p in CONFIG.prefix_lens:
            if p != CONFIG.prefix_len:
                row |= {at_prefix(k, p): v for k, v in _verdicts(fit * p / 64, rng).items()}
        row |= {f"mia_{a}": -loss * (1 + 0.1 * j) + rng.normal(0, 0.05) for j, a in enumerate(ATTACKS)}
        row |= {"sampled_exact": bool(row["exact"] or rng.uniform() < fit / 2)}
        row |= {"blind": float(blind.uniform()) + (0.1 if level > 0 else 0.0)}
        row |= {"prefix": f"Prefix {i} |of a text|", "suffix": f"suffix {i}.", "emitted": f"emitted {i}."}
        rows.append(row)
    for j, level in enumerate((0, 0, 1, 8, 64)):
        bits = 1.0 + 25 * memorized * math.log2(1 + level) / 6 + rng.normal(0, 0.3)
        rows.append({"doc_id": 2000 + j, "kind": "canary", "repeats": level, "member": level > 0, "exposure": bits})
    return rows


def valid_scores(memorized: float, seed: int = 0) -> list[ScoredSequence]:
    """Validation documents scored by a model that pays `memorized / 4` nats for its memorization."""
    rng = np.random.default_rng(seed + 100)
    out = []
    for n in (40, 64, 80, 100, 120):
        logp = rng.normal(-4.0 - memorized / 4, 0.5, n)
        out.append(ScoredSequence(logp, np.zeros(n, bool), np.full(n, -4.0), np.ones(n), np.full(n, -np.inf)))
    return out


def results(
    kind: str,
    memorized: float,
    seed: int = 0,
    *,
    sink_mode: str | None = None,
    path: str | None = None,
    audit: str = "audit-a",
    reference: dict | None = None,
) -> dict:
    """A scan's results document as `scan` writes it, metrics computed from `scan_rows`."""
    rows = scan_rows(memorized, seed)
    return {
        "schema_version": SCAN_SCHEMA_VERSION,
        "memaudit_version": "0.1.0",
        "created": "2026-01-01T00:00:00+00:00",
        "model": {
            "path": path or f"/models/{kind}",
            "sha256": f"{seed:02d}" * 32,
            "kind": kind,
            "arch": "gpt2-1m",
            "parameters": 950_000,
            "sink_mode": sink_mode,
        },
        "data": {"dir": "/data/tiny", "manifest_sha256": "m" * 64, "audit_sha256": audit},
        "suite": dataclasses.asdict(CONFIG),
        "counts": {"members": 12, "nonmembers": 8, "canaries": 5},
        "metrics": compute_metrics(rows, valid_scores(memorized, seed), CONFIG, reference=reference),
        "sequences": rows,
    }


def write_run(root: Path, name: str, doc: dict) -> Path:
    """A scan run dir holding only `doc` as its results.json, for `compare_runs`."""
    atomic_write_text(root / name / "results.json", json.dumps(doc))
    return root / name


def attack_record(family: str) -> dict:
    """An attack as `memaudit stress` records it, with a relearning curve whose member loss falls
    back near the standard model's (results("standard", 1.0)) at step 15 of 20."""
    curve = [{"step": step, "member_loss": 3.9 - 0.1 * step} for step in range(0, 25, 5)]
    return {"name": family, "family": family, "recover_margin": 0.1, "measured_members": 12, "curve": curve}
