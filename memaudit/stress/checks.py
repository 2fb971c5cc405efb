"""What a stress run reads and writes, checked before torch is imported, so that the command line
refuses a missing data dir, an unknown suite, a standard run that is not a scan, or an output
that exists, in a moment and not after a scan."""

from __future__ import annotations

from pathlib import Path

from memaudit.common.fileio import check_out
from memaudit.common.model_files import locate_model
from memaudit.corpus.audit import AuditSet
from memaudit.probes.config import ScanConfig
from memaudit.probes.suite import load_suite
from memaudit.report.run_files import read_results
from memaudit.stress.attacks import StressConfig

BEFORE = "before"  # the run dir of the model before any attack


def planned_runs(out: Path, config: StressConfig, *, with_before: bool) -> list[Path]:
    """The run dirs a stress run writes: OUT/before/ (unless its scan is given) and one per attack."""
    return ([out / BEFORE] if with_before else []) + [out / a.dir_name for a in config.attacks]


def is_done(run: Path, resume: bool) -> bool:
    """With `resume`, a run dir that holds its results is kept, not redone."""
    return resume and (run / "results.json").is_file()


def check_stress(
    model: str | Path,
    data_dir: Path,
    out: Path,
    config: StressConfig,
    *,
    standard: str | Path | None = None,
    force: bool = False,
    resume: bool = False,
    with_before: bool = True,
) -> tuple[ScanConfig, dict | None]:
    """The probe suite and the standard model's scan results (None without `standard`), once
    every input exists and every run dir to write is free (or `force`, or done under `resume`)."""
    AuditSet.check(data_dir)
    locate_model(model)
    suite = load_suite(config.suite)
    standard_results = read_results(standard) if standard is not None else None
    for run in planned_runs(Path(out), config, with_before=with_before):
        if not is_done(run, resume):
            check_out(run, force=force, inputs=[model, data_dir, standard])
    return suite, standard_results
