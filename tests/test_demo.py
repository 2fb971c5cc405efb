"""The main job, `memaudit demo --quick`: every step runs, the report compares every model, and
a rerun skips what is done."""

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

import memaudit.app.demo
from memaudit.app.cli import main
from memaudit.app.demo import ISOLATION, QUICK_FINETUNE, run_demo
from memaudit.app.sweep.spec import load_spec
from memaudit.common.fileio import read_jsonl
from memaudit.corpus.sources import normalize

RUNS = [
    "standard",
    "no-repeats",
    "memsink-off",
    "memsink-own",
    "memsink-removed",
    "ablate",
    "unlearn-ga",
    "unlearn-npo",
]


def top_exact(run: dict) -> float:
    levels = run["metrics"]["extraction.exact_rate"]["by_repeats"]
    return levels[max(levels, key=int)]["value"]


def test_demo_writes_every_model_run_and_the_report(quick_demo):
    assert sorted(p.name for p in (quick_demo / "runs").iterdir()) == sorted(RUNS)
    for name in ("report.html", "results.json", "summary.csv", "sequences.csv", "summary.md"):
        assert (quick_demo / "report" / name).is_file()
    doc = json.loads((quick_demo / "report" / "results.json").read_text())
    assert doc["document"] == "memaudit.report" and len(doc["runs"]) == len(RUNS)
    by_dir = {run["run_dir"].rsplit("/", 1)[-1]: run for run in doc["runs"]}
    assert top_exact(by_dir["standard"]) == 1.0 and top_exact(by_dir["no-repeats"]) == 0.0
    # Sinks hold the memorization: on, the model extracts like the standard one; off or removed, it does not.
    assert top_exact(by_dir["memsink-own"]) >= 0.5 > top_exact(by_dir["memsink-off"])
    removed, off = by_dir["memsink-removed"]["metrics"], by_dir["memsink-off"]["metrics"]
    for name in ("memorization.member_loss", "capability.valid_loss"):
        assert removed[name]["value"] == pytest.approx(off[name]["value"], abs=1e-4)
    assert top_exact(by_dir["unlearn-npo"]) < top_exact(by_dir["standard"])
    for method in ("unlearn-ga", "unlearn-npo"):
        # Each either forgot something or hit the max-degradation guard, which keeps the last
        # state within the limit (GA at a 1M model's learning rate blows up: the guard's job).
        meta = json.loads((quick_demo / "models" / method / "memaudit.json").read_text())
        forgetting = by_dir[method]["metrics"]["memorization.forgetting"]["value"]
        assert forgetting > 0.3 or (meta["stopped_early"] and forgetting >= 0), (
            method,
            forgetting,
            meta["stop_reason"],
        )
    assert "privacy.mia.ref.auc" in by_dir["standard"]["metrics"]  # scanned against the oracle


def test_rerun_skips_every_step(quick_demo, tmp_path):
    rerun = shutil.copytree(quick_demo, tmp_path / "demo")  # a copy: other test workers read the shared one
    result = CliRunner().invoke(main, ["demo", "--quick", "--out", str(rerun)])
    assert result.exit_code == 0, result.output
    assert "everything was done already" in result.output
    assert result.output.count("done already") >= 15


def test_the_oracle_sees_the_natural_text_as_often_as_the_standard_model(tiny_models, tiny_plan):
    """The no-repeats oracle is the standard run without the planted documents: the same epochs
    of the natural text, so fewer steps."""
    meta = {name: json.loads((path / "memaudit.json").read_text()) for name, path in tiny_models.items()}
    assert tiny_plan["no-repeats"].steps < tiny_plan["standard"].steps == meta["standard"]["steps"]
    assert meta["no-repeats"]["epochs"] == pytest.approx(meta["standard"]["epochs"], rel=0.05)


HALVES = ("pretrain", "finetune")
FINETUNE_RUNS = ["standard", "no-repeats", "unlearn-npo"] + [
    f"memsink-{units}-{mode}" for units in ("new", "existing") for mode in ("off", "own", "removed")
]


@pytest.mark.slow
def test_finetune_demo_fine_tunes_one_base_model_four_ways(tmp_path):
    """`memaudit demo --finetune`, shortened: a base pretrained on one half of the corpus, fine-tuned on the other
    half; removing new sink units gives back the base's architecture, removing existing ones narrows it."""
    few = replace(QUICK_FINETUNE.train, steps=20)
    (tmp_path / "fast.yaml").write_text("prefix_lens: [32]\nexposure_candidates: 50\nbootstrap: 20\n")
    config = replace(
        QUICK_FINETUNE,
        train=few,
        pretrain=replace(QUICK_FINETUNE.pretrain, train=few, n_natural=300),
        unlearn=replace(QUICK_FINETUNE.unlearn, steps=4, eval_every=2),
        suite=str(tmp_path / "fast.yaml"),
    )
    doc = run_demo(tmp_path, config=config, console=Console(file=io.StringIO()))
    assert sorted(run["run_dir"].rsplit("/", 1)[-1] for run in doc["runs"]) == sorted(FINETUNE_RUNS)
    halves = [{normalize(row["text"]) for row in read_jsonl(tmp_path / "corpus" / f"{half}.jsonl")} for half in HALVES]
    assert halves[0] and halves[1] and not halves[0] & halves[1]  # no text of the fine-tuning half in pretraining
    base = tmp_path / "models" / "base"
    assert json.loads((base / "memaudit.json").read_text())["kind"] == "no-repeats"

    def mlp_width(model: str) -> int:
        config = json.loads((tmp_path / "models" / model / "config.json").read_text())
        return config["n_inner"] or 4 * config["n_embd"]

    for model in ("standard", "no-repeats", "memsink-new", "memsink-existing"):
        assert json.loads((tmp_path / "models" / model / "memaudit.json").read_text())["init"]["source"] == str(base)
    width = mlp_width("base")
    assert mlp_width("memsink-new") == width + 256 and mlp_width("memsink-new-removed") == width
    assert mlp_width("memsink-existing") == width > mlp_width("memsink-existing-removed")
    by_dir = {run["run_dir"].rsplit("/", 1)[-1]: run["metrics"] for run in doc["runs"]}
    for units in ("new", "existing"):
        removed, off = by_dir[f"memsink-{units}-removed"], by_dir[f"memsink-{units}-off"]
        assert removed["capability.valid_loss"]["value"] == pytest.approx(
            off["capability.valid_loss"]["value"], abs=1e-4
        )


def test_demo_command_passes_its_flags(monkeypatch):
    calls = []
    monkeypatch.setattr(memaudit.app.demo, "run_demo", lambda out, **kw: calls.append((out, kw)))
    result = CliRunner().invoke(main, ["demo", "--finetune", "--out", "x", "--precision", "fp32", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert calls == [
        (Path("x"), {"quick": False, "finetune": True, "isolation": False, "precision": "fp32", "threads": 1})
    ]
    for flags, precision in ((["--quick"], None), (["--quick", "--bf16"], "bf16"), (["--precision", "auto"], "auto")):
        calls.clear()
        assert CliRunner().invoke(main, ["demo", *flags, "--out", "x"]).exit_code == 0
        assert calls[0][1]["precision"] == precision  # not given: the demo's own (fp32 for --quick)


def test_isolation_demo_is_the_isolation_studys_regime():
    """`demo --isolation` runs the data and training of the isolation study's best regime: its routed model is
    sweeps/isolation-planted.yaml's point, and its paper's MemSinks are sweeps/isolation-optimizer.yaml's point at
    the same 240 warm-up steps."""
    sweeps = Path(__file__).resolve().parents[1] / "sweeps"
    (routed,) = (p.config for p in load_spec(sweeps / "isolation-planted.yaml").points)
    (paper,) = (p.config for p in load_spec(sweeps / "isolation-optimizer.yaml", {"train.warmup_steps": [240]}).points)
    for config in (paper, routed):
        assert (config.data, config.train) == (ISOLATION.data, ISOLATION.train)
    assert paper.sinks["memsink"] == ISOLATION.sinks["memsink"]
    assert routed.sinks["memsink"] == ISOLATION.sinks["memsink-routed"]


def test_isolation_demo_refuses_other_configurations(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--isolation", "--quick", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "isolation is a configuration of its own" in result.stderr
    assert not (tmp_path / "d").exists()
