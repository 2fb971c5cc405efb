"""`memaudit sweep`: the sweep file checked before any work, the jobs shared across points and seeds,
runs aggregated over seeds, resumed without redoing anything, failures recorded and retried, and the
submitit launcher through its local executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from memaudit.app.cli import main
from memaudit.app.sweep import run as sweep_run
from memaudit.app.sweep import run_sweep
from memaudit.app.sweep.plan import Job, code_identity, plan_sweep
from memaudit.app.sweep.spec import load_spec
from memaudit.common.errors import MemauditError
from tests.helpers import assert_one_line_error

DEMO_ARMS = [
    "standard",
    "oracle",
    "memsink-off",
    "memsink-own",
    "memsink-removed",
    "unlearn-ga",
    "unlearn-npo",
    "ablate",
]
# The tests' sweep: the quick demo's data, 20 training steps, two points.
TINY = {
    "name": "tiny",
    "base": "quick",
    "settings": {"train.steps": 20, "train.precision": "fp32", "unlearn.steps": 4, "scan.suite": "ci"},
    "grid": {"sinks.active_fraction": [0.3, 0.5]},
    "seeds": {"data": [0], "train": [0]},
    "arms": ["standard", "oracle", "memsink-off", "memsink-removed"],
}


def sweep_file(tmp_path: Path, name: str = "sweep.yaml", **changes) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(TINY | changes))
    return path


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"settings": {"steps": 10}}, "has no prefix"),
        ({"settings": {"train.step": 10}}, "did you mean train.steps"),
        ({"settings": {"train.seed": 1}}, "seeds go under `seeds:`"),
        ({"settings": {"train.steps": -1}}, "steps"),
        ({"settings": {"sinks.active_fraction": 2}}, "active_fraction"),
        ({"grid": {"sinks.active_fraction": [0.3, 0.3]}}, "are the same run"),
        ({"arms": ["standard", "memsink-of"]}, "did you mean memsink-off"),
        ({"arms": ["standard@quant:int3"]}, "int3"),
        ({"arms": ["memsink-own@quant:int8"]}, "deployed model"),
        ({"seeds": {"train": [0, 0]}}, "repeats a seed"),
        ({"base": "quik"}, "did you mean quick"),
    ],
)
def test_bad_sweeps_are_refused_before_any_work(tmp_path, changes, needle):
    with pytest.raises(MemauditError, match=needle.replace("[", r"\[")):
        plan_sweep(load_spec(sweep_file(tmp_path, **changes)))


def test_refusal_is_one_line_and_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["sweep", str(sweep_file(tmp_path)), "--out", str(out), "--set", "train.lr=fast"])
    assert_one_line_error(result, "lr")
    assert not out.exists()


def test_an_output_dir_of_another_sweep_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep-spec.json").write_text(json.dumps({"name": "other"}))
    with pytest.raises(MemauditError, match="holds sweep 'other'"):
        run_sweep(sweep_file(tmp_path), out)
    (out / "sweep-spec.json").unlink()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(MemauditError, match="not a sweep's"):
        run_sweep(sweep_file(tmp_path), out)
    assert (out / "notes.txt").read_text() == "mine"


def test_set_fixes_or_varies_a_setting(tmp_path):
    from memaudit.app.sweep.spec import parse_sets

    spec = load_spec(sweep_file(tmp_path), parse_sets(["train.lr=0.001,0.003", "data.repeats=[1,8]"]))
    assert spec.grid == {"sinks.active_fraction": [0.3, 0.5], "train.lr": [0.001, 0.003]}
    assert spec.fixed["data.repeats"] == [1, 8]
    assert [p.config.data.repeats for p in spec.points] == [(1, 8)] * 4


def test_demo_arms_over_three_seeds_build_the_data_once_and_train_no_model_twice(tmp_path):
    spec = load_spec(sweep_file(tmp_path, grid={}, arms=DEMO_ARMS, seeds={"data": [0], "train": [0, 1, 2]}))
    the_plan = plan_sweep(spec)
    kinds = [j.kind for j in the_plan.jobs.values()]
    assert kinds.count("data") == 1
    assert kinds.count("train") == 3 * 3  # standard, oracle, memsink per seed
    trained = [json.dumps(j.params, sort_keys=True) for j in the_plan.jobs.values() if j.kind == "train"]
    assert len(set(trained)) == len(trained)
    assert len(the_plan.runs) == 3 * len(DEMO_ARMS)


def test_a_swept_sink_setting_shares_the_standard_model_and_the_oracle(tmp_path):
    the_plan = plan_sweep(load_spec(sweep_file(tmp_path)))
    trains = [j for j in the_plan.jobs.values() if j.kind == "train"]
    assert sorted(j.label.split(" (")[0] for j in trains) == [
        "train memsink",
        "train memsink",
        "train standard",
        "train the no-repeats oracle",
    ]
    standard = {r.job for r in the_plan.runs if r.arm == "standard"}
    assert len(standard) == 1  # both points read the same scan of the same model


SWEEP_FILES = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_every_committed_sweep_file_plans_and_its_usage_line_names_it(path: Path) -> None:
    """The study's sweep files stay runnable as the settings evolve, and each says how to run it."""
    the_plan = plan_sweep(load_spec(path))
    assert the_plan.runs
    assert f"memaudit sweep sweeps/{path.name}" in path.read_text()


def test_a_job_key_holds_its_settings_and_the_code_but_not_threads(monkeypatch):
    job = Job("train", "x", {"steps": 10, "threads": 1})
    assert Job("train", "x", {"steps": 10, "threads": 4}).key == job.key
    assert Job("train", "x", {"steps": 11, "threads": 1}).key != job.key
    monkeypatch.setattr("memaudit.app.sweep.plan.code_identity", lambda: code_identity() | {"source": "changed"})
    assert Job("train", "x", {"steps": 10, "threads": 1}).key != job.key


def test_dry_run_prints_the_plan_and_an_estimate_and_writes_nothing(tmp_path):
    out, lines = tmp_path / "out", []
    assert run_sweep(sweep_file(tmp_path), out, dry_run=True, echo=lines.append) == 0
    text = "\n".join(lines)
    assert "2 points x 1 seed pairs x 4 arms = 8 runs" in text
    assert "to run: 13" in text and "estimate: about" in text and "us/token" in text
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    root = tmp_path_factory.mktemp("sweep")
    lines: list[str] = []
    code = run_sweep(sweep_file(root), root / "out", echo=lines.append, threads=1)
    assert code == 0, "\n".join(lines)
    return root, root / "out", lines


@pytest.mark.slow
def test_a_sweep_runs_every_point_and_writes_its_results_and_views(tiny_sweep):
    _, out, lines = tiny_sweep
    assert any(line.startswith("[13/13]") for line in lines)
    assert any("left" in line for line in lines)  # the time left, once a job has been timed
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["document"] == "memaudit.sweep" and doc["swept"] == ["sinks.active_fraction"]
    assert {(s["point"], s["arm"]) for s in doc["summary"]} == {
        (p, a) for p in (0, 1) for a in ["standard", "oracle", "memsink-off", "memsink-removed"]
    }
    removed = [s for s in doc["summary"] if s["arm"] == "memsink-removed"]
    for s in removed:
        gap = s["metrics"]["memorization.gap_closed"]
        assert gap["n"] == 1 and gap["min"] == gap["mean"] == gap["max"]
    # The removed model is the `off` mode's model, without the pool: the same losses to float tolerance.
    off = {s["point"]: s["metrics"] for s in doc["summary"] if s["arm"] == "memsink-off"}
    for s in removed:
        assert s["metrics"]["memorization.member_loss"]["mean"] == pytest.approx(
            off[s["point"]]["memorization.member_loss"]["mean"], abs=1e-4
        )
    for run in doc["runs"]:
        assert run["status"] == "done" and (out / run["run_dir"] / "results.json").is_file()
    assert "sinks.active_fraction" in (out / "sweep.csv").read_text().splitlines()[0]
    assert "| sinks.active_fraction | arm | seeds |" in (out / "sweep.md").read_text()
    page = (out / "sweep.html").read_text()
    assert page.count("<svg") == 2  # the trade-off, and the swept setting


@pytest.mark.slow
def test_a_rerun_redoes_nothing_and_a_lost_job_is_redone_alone(tiny_sweep):
    root, out, _ = tiny_sweep
    lines: list[str] = []
    assert run_sweep(sweep_file(root), out, echo=lines.append) == 0
    assert "to run: 0" in "\n".join(lines)
    scan = next(p for p in (out / "jobs").iterdir() if p.name.startswith("scan-"))
    (scan / "status.json").unlink()  # as if the sweep had been killed during that scan, before its results
    (out / "sweep.json").unlink()
    lines.clear()
    assert run_sweep(sweep_file(root), out, echo=lines.append) == 0
    assert "to run: 1" in "\n".join(lines) and sum(line.startswith("[") for line in lines) == 1


@pytest.mark.slow
def test_a_failed_run_is_recorded_the_rest_go_on_and_rerun_failed_retries_it(tiny_sweep, monkeypatch):
    root, out, _ = tiny_sweep
    spec = sweep_file(root, "ablate.yaml", arms=[*TINY["arms"], "ablate", "memsink-removed@quant:int8"])
    real_ablate = sweep_run.ablate

    def broken(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(sweep_run, "ablate", broken)
    lines: list[str] = []
    assert run_sweep(spec, out, echo=lines.append) == 1
    doc = json.loads((out / "sweep.json").read_text())
    failed = [r for r in doc["runs"] if r["status"] != "done"]
    assert {r["arm"] for r in failed} == {"ablate"}
    assert any("FAILED: RuntimeError: the disk is full" in line for line in lines)
    assert any(line.startswith("skipped scan ablate") for line in lines)
    lines.clear()  # without --rerun-failed, a failed run stays failed
    assert run_sweep(spec, out, echo=lines.append) == 1 and "to run: 0" in "\n".join(lines)
    monkeypatch.setattr(sweep_run, "ablate", real_ablate)
    assert run_sweep(spec, out, rerun_failed=True, echo=lines.append) == 0
    doc = json.loads((out / "sweep.json").read_text())
    attacked = [r for r in doc["runs"] if r["arm"] == "memsink-removed@quant:int8"]
    assert len(attacked) == 2 and all(r["label"].endswith("@quant:int8") for r in attacked)
    assert all("memorization.gap_closed" in r["metrics"] for r in attacked)


@pytest.mark.slow
def test_submitit_local_executor_runs_the_jobs(tiny_sweep):
    pytest.importorskip("submitit")
    root, out, _ = tiny_sweep
    spec = sweep_file(root, "npo.yaml", arms=[*TINY["arms"], "unlearn-npo"])
    lines: list[str] = []
    options = {"cluster": "local", "timeout_min": 10}
    code = run_sweep(spec, out, launcher="submitit", executor_options=options, threads=1, echo=lines.append)
    assert code == 0, "\n".join(lines)
    assert "to run: 2" in "\n".join(lines)  # the unlearning and its scan: the rest is done
    assert list((out / "submitit").iterdir())
    doc = json.loads((out / "sweep.json").read_text())
    assert {r["status"] for r in doc["runs"] if r["arm"] == "unlearn-npo"} == {"done"}


@pytest.mark.slow
def test_sweeps_sharing_a_job_store_reuse_its_jobs_and_keep_their_own_results(tiny_sweep):
    root, out, _ = tiny_sweep
    other = root / "other.yaml"
    other.write_text(yaml.safe_dump(TINY | {"name": "other", "grid": {"sinks.active_fraction": [0.3]}}))
    lines: list[str] = []
    assert run_sweep(other, root / "other", jobs=out / "jobs", echo=lines.append) == 0
    assert "to run: 0" in "\n".join(lines)  # every job is the first sweep's
    assert not (root / "other" / "jobs").exists()
    doc = json.loads((root / "other" / "sweep.json").read_text())
    assert len(doc["runs"]) == 4 and all(
        (root / "other" / r["run_dir"] / "results.json").is_file() for r in doc["runs"]
    )
    assert json.loads((out / "sweep.json").read_text())["spec"]["name"] == "tiny"  # the first sweep's, untouched


def test_a_job_store_that_is_a_file_or_a_sweeps_folder_is_refused(tmp_path):
    spec, taken = sweep_file(tmp_path), tmp_path / "taken"
    taken.mkdir()
    (taken / "sweep-spec.json").write_text(json.dumps({"name": "tiny"}))
    (tmp_path / "file").write_text("x")
    for store, needle in ((tmp_path / "file", "is a file"), (taken, f"give --jobs {taken / 'jobs'}")):
        args = ["sweep", str(spec), "--out", str(tmp_path / "new"), "--jobs", str(store)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and needle in result.stderr
        assert not (tmp_path / "new").exists()
