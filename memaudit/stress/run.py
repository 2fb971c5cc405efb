"""`stress()`: after memorization was removed (sinks dropped, unlearning, ablation), does it come
back? Each attack runs on a fresh copy of the model, and the attacked model is scanned like
`memaudit scan model` with the same suite, into a normal run dir whose results.json records the
attack under `attack`; every report, gate and chart then reads it like any scan."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from memaudit.common.errors import MemauditError
from memaudit.common.parallel import configure_threads
from memaudit.corpus.audit import AuditSet
from memaudit.models.io import LoadedModel, load_model
from memaudit.probes.config import ScanConfig
from memaudit.probes.metrics import compute_metrics
from memaudit.probes.scan import scan
from memaudit.report.document import value
from memaudit.report.render import write_run
from memaudit.report.run_files import read_results
from memaudit.stress.attacks import QUANT_BITS, RELEARN_SETS, Attack, StressConfig, forget_half
from memaudit.stress.checks import BEFORE, check_stress, is_done
from memaudit.stress.quant import quantize_model
from memaudit.stress.relearn import relearn
from memaudit.training.optimize import run_lock, work_dir

_GAP = "memorization.gap_closed"


def restricted(results: dict, ids: set[int], suite: ScanConfig, standard: dict | None = None) -> dict:
    """A scan's metrics as if it had audited only the sequences `ids` (recomputed from its rows;
    capability needs the validation scores, which results do not keep, so it is left out), in
    the shape `scan` takes for `standard` and `before`."""
    rows = [r for r in results["sequences"] if r["doc_id"] in ids]
    return {"metrics": compute_metrics(rows, [], suite, standard=standard)}


@dataclass
class _Stress:
    """One model under attack: what every attack on it shares."""

    model: str | Path
    data_dir: Path
    data: AuditSet
    suite: ScanConfig
    config: StressConfig
    before: dict  # the model's scan before any attack
    standard: dict | None  # the standard model's scan, for gap closed
    progress: bool

    def attacked(self, attack: Attack, target: Path, *, force: bool, resume: bool) -> dict:
        """The attacked model's results document, `attack` recorded in it."""
        if self.progress:
            print(f"attack {attack.name} on {self.model}", flush=True)
        # Relearning trains fp32 weights (under `precision` autocast, as training does); the others scan at `precision`.
        loaded = load_model(self.model, precision="fp32" if attack.kind == "relearn" else self.config.precision)
        record = attack.to_dict() | {"seed": self.config.seed}
        rows = self.data.audit
        if attack.kind == "quant":
            record["quantized"] = quantize_model(loaded.model, QUANT_BITS[attack.variant], self.config.group_size)
        else:
            texts, rows = self.relearn_sets(attack)
            record |= self.relearn(loaded, texts, rows, attack, target, force=force, resume=resume)
        others = self.compared({r["doc_id"] for r in rows})
        results = scan(loaded, data_dir=self.data_dir, audit_rows=rows, config=self.suite, attack=record, **others)
        if others:
            record["gap_closed"] = {
                "before": value(others["before"]["metrics"].get(_GAP)),
                "after": value(results["metrics"].get(_GAP)),
            }
        return results | {"attack": record}

    def relearn_sets(self, attack: Attack) -> tuple[list[str], list[dict]]:
        """(the texts relearning trains on, the audit rows scanned after it): forget-half trains on
        half of the trained members and canaries and measures the rest; retain trains on the
        natural training documents and measures the whole audit set."""
        if attack.variant == "forget-half":
            relearned, _ = forget_half(self.data.audit, self.config.seed)
            audit = self.data.audit
            return [r["text"] for r in audit if r["doc_id"] in relearned], [
                r for r in audit if r["doc_id"] not in relearned
            ]
        natural = [r["text"] for r in self.data.train if r["kind"] == "natural"]
        if not natural:
            raise MemauditError(f"{self.data_dir}: no natural training documents; relearn:retain fine-tunes on them")
        return natural, self.data.audit

    def relearn(
        self,
        loaded: LoadedModel,
        texts: list[str],
        rows: list[dict],
        attack: Attack,
        target: Path,
        *,
        force: bool,
        resume: bool,
    ) -> dict:
        """Fine-tunes `loaded` in `TARGET.partial/` (continued under `resume` from its checkpoint)
        and returns the run's record; member loss is measured on the scanned members."""
        work = target.with_name(target.name + ".partial")
        continued = resume and (work / "checkpoint" / "state.json").is_file()
        work_dir(target, inputs=[self.model, self.data_dir], resume=continued, force=force or resume)
        measured = [r["text"] for r in rows if r["kind"] == "repeated" and r["repeats"] > 0]
        with run_lock(work):
            record = relearn(
                loaded, texts, measured, attack.steps, self.config, work=work, resume=continued, progress=self.progress
            )
        return record | {"trained_on": RELEARN_SETS[attack.variant], "recover_margin": self.config.recover_margin}

    def compared(self, ids: set[int]) -> dict:
        """`standard` and `before` for the scan of the attacked model: the standard model's and the
        unattacked model's metrics on the same rows. Empty without the standard model."""
        if self.standard is None:
            return {}
        standard = restricted(self.standard, ids, self.suite)
        return {"standard": standard, "before": restricted(self.before, ids, self.suite, standard=standard)}


def _written(target: Path, make: Callable[[], dict], *, force: bool, resume: bool) -> dict:
    """The run dir `target`'s results: read back if done (under `resume`), else made and written."""
    if is_done(target, resume):
        return read_results(target)
    results = make()
    write_run(results, target, force=force)
    shutil.rmtree(target.with_name(target.name + ".partial"), ignore_errors=True)  # a relearning's work dir
    return results


def stress(
    model: str | Path,
    data_dir: str | Path,
    out: str | Path,
    config: StressConfig,
    *,
    standard: str | Path | None = None,
    before: dict | None = None,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Runs every attack of `config` on the model and writes one run dir per attack,
    OUT/<attack>/ (`quant-int4`, `relearn-forget-half-40`, ...); returns their results in attack
    order. The unattacked model is scanned to OUT/before/, unless `before` (its results, from
    `scan model --stress`) is given. With `standard`, the run dir of the standard model's scan
    on the same audit set, every run also holds gap_closed (measured on the rows it scanned)
    and the robustness metrics. Under `resume`, finished run dirs are kept and an interrupted
    relearning continues from its checkpoint."""
    out, data_dir = Path(out), Path(data_dir)
    suite, standard_results = check_stress(
        model, data_dir, out, config, standard=standard, force=force, resume=resume, with_before=before is None
    )
    configure_threads(config.threads)
    if before is None:

        def scan_before() -> dict:
            return scan(load_model(model, precision=config.precision), data_dir=data_dir, config=suite)

        before = _written(out / BEFORE, scan_before, force=force, resume=resume)
    if standard_results is not None and standard_results["data"].get("audit_sha256") != before["data"]["audit_sha256"]:
        raise MemauditError(
            f"{standard}: the standard model was scanned on another audit set than {data_dir}; "
            f"scan it with --data {data_dir}"
        )
    job = _Stress(model, data_dir, AuditSet.load(data_dir), suite, config, before, standard_results, progress)
    return [
        _written(
            out / attack.dir_name,
            lambda a=attack: job.attacked(a, out / a.dir_name, force=force, resume=resume),
            force=force,
            resume=resume,
        )
        for attack in config.attacks
    ]
