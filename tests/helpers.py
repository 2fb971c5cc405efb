"""What the tests share besides fixtures (those live in conftest.py): the tiny setting, builds shared by
pytest-xdist workers, the command line in a subprocess, tiny random models of each architecture, synthetic
scans and hand-written results documents. Every test module imports them the same way:

    from tests.helpers import LEAN_SCAN, built_once

(pyproject.toml puts the repository root on pytest's path, so this works under `pytest` and `python -m pytest`)."""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

from memaudit.app.demo import QUICK
from memaudit.common.fileio import atomic_write_text
from memaudit.probes.config import ATTACKS, SCAN_SCHEMA_VERSION, ScanConfig
from memaudit.probes.metrics import compute_metrics
from memaudit.probes.registry import at_prefix
from memaudit.probes.scoring import ScoredSequence

# --- Test workers -------------------------------------------------------------------------------------------------
# Expensive builds (the audit set, the tiny models, the quick demo, the fine-tuning and unlearning modules' models)
# are made once for all pytest-xdist workers, in the directory they share, each under a lock.

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist; "" without it
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)


def in_worker_order(names: Iterable[str]) -> list[str]:
    """`names` rotated by the worker's number, so that workers building a list of things with
    built_once each start on a different one."""
    names = list(names)
    first = int(WORKER.removeprefix("gw") or 0) % len(names)
    return names[first:] + names[:first]


def built_once(out: Path, build: Callable[[Path], object], done: str = ".") -> Path:
    """`out`, built by whichever worker asks first while the others wait for it. `out / done`
    exists once a build is complete (a run dir is renamed into place whole, so by default `out`
    itself); after a failed build the next worker that asks tries again (training and unlearning
    builds pass `force`, so they start over rather than stop at what a failed run left behind).
    Tests only read what it built: a test that writes works on a copy."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / done).exists():
            build(out)
    return out


# --- The tiny setting ---------------------------------------------------------------------------------------------
# The tests' tiny setting is `memaudit demo --quick`'s: 1M-parameter GPT-2s that memorize the
# 64x members in ~15 s of training (300 steps, ~5 epochs of a small audit set, vocab 512). The
# fixtures train the quick demo's own three models once, and the quick demo reuses them.

TINY_DATA = QUICK.data
TINY_TRAIN = QUICK.train
# For tests that read losses and extraction only: no canary exposure, prefix sweep or intervals.
LEAN_SCAN = ScanConfig(name="lean", prefix_lens=(32,), exposure_candidates=0, bootstrap=0)


# --- The command line ---------------------------------------------------------------------------------------------


def memaudit_cli(*args: str, processes: int = 1) -> subprocess.CompletedProcess:
    """Run the real `memaudit` command in a subprocess; processes=2 goes through `accelerate
    launch --multi_gpu`, which on a CPU-only machine starts two gloo processes (without
    --multi_gpu, accelerate 1.15 starts one)."""
    cmd = [sys.executable, "-m", "memaudit", *args]
    if processes > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += ["--main_process_port", "0", "-m", "memaudit", *args]  # 0: a free port, as test workers launch at once
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def assert_one_line_error(result, *needles):
    """A click CliRunner result that failed as a usage error should: exit code 2 and one line on stderr, no
    traceback, holding every needle."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- Tiny random models of each supported architecture ------------------------------------------------------------
# For the sink hooks, surgery and fine-tuning tests: untrained, built in milliseconds.

_SMALL = dict(num_hidden_layers=2, num_attention_heads=4, vocab_size=128, bos_token_id=0, eos_token_id=0)
ARCH_CONFIGS = {
    "gpt2": GPT2Config(n_embd=64, n_positions=64, **_SMALL),
    "llama": LlamaConfig(hidden_size=64, intermediate_size=192, num_key_value_heads=4, **_SMALL),
    "qwen2": Qwen2Config(hidden_size=64, intermediate_size=192, num_key_value_heads=4, **_SMALL),
    "gpt_neox": GPTNeoXConfig(hidden_size=64, intermediate_size=256, **_SMALL),
}
# Written out per architecture rather than found by the code under test.
DOWN_PROJECTIONS = {
    "gpt2": lambda m: [block.mlp.c_proj for block in m.transformer.h],
    "llama": lambda m: [layer.mlp.down_proj for layer in m.model.layers],
    "qwen2": lambda m: [layer.mlp.down_proj for layer in m.model.layers],
    "gpt_neox": lambda m: [layer.mlp.dense_4h_to_h for layer in m.gpt_neox.layers],
}
ARCHS = list(ARCH_CONFIGS)
TOKENS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))


def tiny_model(arch: str) -> torch.nn.Module:
    """A fresh tiny model (own config copy: surgery edits the config), MLP weights scaled up so that sinks matter."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(copy.deepcopy(ARCH_CONFIGS[arch])).eval()
    with torch.no_grad():
        for down in DOWN_PROJECTIONS[arch](model):
            down.weight.mul_(10)
    return model


# --- Synthetic scans ----------------------------------------------------------------------------------------------
# For tests that need every metric but no model (the golden files, the metric registry, the guards):
# per-sequence rows shaped like `metrics.sequence_row`'s (every extraction verdict at every default
# sweep prefix, every membership score, sampled extraction, canary exposure), validation scores, and
# results documents computed from them by the real `compute_metrics`. Seeded: the same arguments give
# the same numbers, which the golden files rely on.

# Every default sweep prefix, a little sampling, few resamples, every membership attack: every registered metric,
# quickly.
CONFIG = ScanConfig(bootstrap=40, sampling_trials=4, exposure_candidates=100, mia_attacks=ATTACKS)
# The attacks of the first synthetic rows, drawn from the rows' own stream; later attacks draw from a stream of
# their own, so that adding one changes no other number (the golden files rely on it).
FIRST_ATTACKS = ("loss", "zlib", "mink", "minkpp", "ref")
LEVELS = (0,) * 8 + (1,) * 4 + (8,) * 4 + (64,) * 4  # held-out, then members by times in training
SYNTHETIC_AUDIT = "/data/tiny/audit.jsonl"  # the rows' source_file (their source_line: their place in it)


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
    later = np.random.default_rng(seed + 300)  # the attacks after FIRST_ATTACKS
    rows = []
    for i, level in enumerate(LEVELS):
        fit = memorized * math.log2(1 + level) / 6  # 1 at x64 for a fully memorizing model
        loss = 4.0 - 3.0 * fit + rng.normal(0, 0.15)
        row = {"doc_id": 1000 + i, "source_file": SYNTHETIC_AUDIT, "source_line": i + 1}
        row |= {"kind": "heldout" if level == 0 else "repeated", "repeats": level}
        row |= {"member": level > 0, "n_tokens": 96, "loss": loss, **_verdicts(fit, rng)}
        for p in CONFIG.prefix_lens:
            if p != CONFIG.prefix_len:
                row |= {at_prefix(k, p): v for k, v in _verdicts(fit * p / 64, rng).items()}
        row |= {f"mia_{a}": -loss * (1 + 0.1 * j) + rng.normal(0, 0.05) for j, a in enumerate(FIRST_ATTACKS)}
        others = [a for a in ATTACKS if a not in FIRST_ATTACKS]
        row |= {f"mia_{a}": -loss * (1 + 0.1 * j) + later.normal(0, 0.05) for j, a in enumerate(others)}
        row |= {"sampled_exact": bool(row["exact"] or rng.uniform() < fit / 2)}
        row |= {"blind": float(blind.uniform()) + (0.1 if level > 0 else 0.0)}
        row |= {"prefix": f"Prefix {i} |of a text|", "suffix": f"suffix {i}.", "emitted": f"emitted {i}."}
        rows.append(row)
    for j, level in enumerate((0, 0, 1, 8, 64)):
        bits = 1.0 + 25 * memorized * math.log2(1 + level) / 6 + rng.normal(0, 0.3)
        row = {"doc_id": 2000 + j, "source_file": SYNTHETIC_AUDIT, "source_line": len(LEVELS) + j + 1}
        rows.append(row | {"kind": "canary", "repeats": level, "member": level > 0, "exposure": bits})
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


# --- Hand-written results documents -------------------------------------------------------------------------------
# For the report's tests (and the browser's): chosen headline numbers, and sequence texts (HTML, a canary
# secret, doc ids) that the redaction and escaping tests look for.

PAYLOAD = '<script>document.title="PWNED";window.pwned=1</script><img src=x onerror="window.pwned=2">'
SECRET = "846 471 991"
DOC_ID = 7023589155075136280  # doc ids are content hashes of the texts: redacted too


def _entry(v: float, by: dict[str, float] | None = None, hib: bool | None = False, group: str = "memorization") -> dict:
    out = {"value": v, "n": 8, "ci95": [v - 0.1, v + 0.1], "higher_is_better": hib, "group": group}
    if by:
        out["by_repeats"] = {lv: {"value": x, "n": 4, "ci95": [x - 0.1, x + 0.1]} for lv, x in by.items()}
    return out


def fake_results(
    kind: str = "standard",
    *,
    member: float = 1.0,
    nonmember: float = 3.0,
    valid: float = 4.0,
    exact: float = 0.5,
    sink_mode: str | None = None,
    path: str | None = None,
    audit: str = "audit-a",
    leak: bool = True,
) -> dict:
    """A results document shaped like `scan`'s, with chosen headline numbers and a few sequence
    rows whose texts (HTML, a canary secret) the redaction and escaping tests look for."""
    seqs = []
    for i in range(8):
        is_member = i < 4
        loss = (member if is_member else nonmember) + 0.05 * i
        seqs.append(
            {
                "doc_id": DOC_ID + i,
                "kind": "repeated" if is_member else "heldout",
                "repeats": (8 if i % 2 else 64) if is_member else 0,
                "member": is_member,
                "n_tokens": 80,
                "loss": loss,
                "exact": bool(is_member and leak and i == 0),
                "token_match": 0.5,
                "prefix": PAYLOAD if i == 0 else f"Prefix number {i} of a sentence,",
                "suffix": f"the true suffix {i} follows here.",
                "emitted": f"the true suffix {i} follows here." if leak and i == 0 else f"{PAYLOAD} emitted {i}",
                "mia_loss": -loss,
                "mia_mink": -loss * 1.5 + (0.2 if i % 3 else 0),
            }
        )
    seqs.append(
        {
            "doc_id": DOC_ID + 99,
            "kind": "canary",
            "repeats": 8,
            "member": True,
            "n_tokens": 30,
            "loss": 0.5,
            "secret": SECRET,
        }
    )
    return {
        "schema_version": SCAN_SCHEMA_VERSION,
        "memaudit_version": "0.1.0",
        "created": "2026-01-01T00:00:00+00:00",
        "model": {
            "path": path or f"/models/{kind}",
            "sha256": "ab" * 32,
            "kind": kind,
            "arch": "gpt2-1m",
            "parameters": 1000,
            "sink_mode": sink_mode,
        },
        "data": {"dir": "/data", "manifest_sha256": "m" * 64, "audit_sha256": audit},
        "suite": {"name": "default", "prefix_len": 32, "suffix_len": 32},
        "counts": {"members": 4, "nonmembers": 4, "canaries": 1},
        "metrics": {
            "memorization.member_loss": _entry(member, {"0": nonmember, "8": member + 0.5, "64": member - 0.5}, True),
            "memorization.nonmember_loss": _entry(nonmember, hib=None),
            "memorization.loss_gap": _entry(nonmember - member, {"8": nonmember - member - 0.5}),
            "extraction.exact_rate": _entry(exact, {"0": 0.0, "8": exact / 2, "64": exact}, group="extraction"),
            "extraction.exact_rate@P8": _entry(exact, group="extraction"),
            "privacy.mia.loss.auc": {**_entry(0.9, group="privacy"), "higher_is_better": None, "ideal": 0.5},
            "capability.valid_loss": _entry(valid, group="capability"),
        },
        "sequences": seqs,
    }


def write_fake_run(root: Path, name: str, **kwargs) -> Path:
    """A run dir holding `fake_results(**kwargs)` as its results.json."""
    return write_run(root, name, fake_results(**kwargs))
