"""The commands that orchestrate several layers, as requests that check themselves and functions
that carry them out, so that the command line only parses its options into a request and prints
what comes back, and the Python API refuses the same requests with the same messages and does
the same work.

`ScanRequest` is everything `memaudit scan model` is asked to do (with `stress`, the attacks of
`scan model --stress`); `scan_and_write` checks every input and the output location first, then
loads the model (and a reference), scans, redacts, evaluates the gates, writes the run dir (and
a SARIF file, if asked) and runs the stress attacks. `ReportRequest` is everything `memaudit
report` is asked to do; `report_and_write` checks the run dirs, the gates and the output,
compares the runs, evaluates the gates and writes the report (and a SARIF file, if asked). A
request checks itself without importing torch."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from memaudit.common.errors import MemauditError
from memaudit.common.precision import DEFAULT_PRECISION, check_precision
from memaudit.common.validation import MAX_COUNT, Range, check_choice, check_flag, check_ranges, integer
from memaudit.memsinks.config import EVAL_MODES
from memaudit.stress.attacks import Attack, StressConfig

_PATHS = ("out", "data_dir", "audit", "nonmembers", "valid", "sarif")
_FLAGS = ("allow_pickle", "trust_remote_code", "redact", "force")
STRESS_DIR = "stress"  # `scan model --stress` writes the attacked models' run dirs to OUT/stress/<attack>/


def _gate_expressions(value: object) -> tuple[str, ...]:
    """`fail_on` as a tuple of gate expressions (memaudit.report.gate), which are parsed later."""
    if isinstance(value, str) or not all(isinstance(e, str) for e in value):
        raise MemauditError(f"fail_on must be a list of gate expressions, got {value!r}")
    return tuple(value)


def _judged(document: dict, gates: list) -> list:
    """The verdict of every gate on a results document, recorded in it under `gates` (if any)."""
    from memaudit.report.gate import evaluate_gates

    verdicts = evaluate_gates(document, gates)
    if verdicts:
        document["gates"] = [dataclasses.asdict(v) for v in verdicts]
    return verdicts


@dataclass(frozen=True)
class ScanRequest:
    """A scan of `model` (a model dir, a GGUF file or a hub id) on exactly one audit set: a data
    dir (`data_dir`, from `memaudit data build`) or a file of texts (`audit`, optionally with
    `nonmembers`), written to the run dir `out`; with `stress`, the model is then attacked and
    scanned again into OUT/stress/<attack>/, this scan being the model before the attacks."""

    model: str
    out: Path
    data_dir: Path | None = None
    audit: Path | None = None
    nonmembers: Path | None = None  # texts known not to be in training (with `audit`)
    valid: Path | None = None  # clean text for the capability metrics
    sinks_mode: str | None = None  # MemSink evaluation mode (EVAL_MODES); None: the default (DEFAULT_EVAL_MODE)
    suite: str = "default"  # a built-in suite name or a suite YAML path
    reference: str | None = None  # a reference model: the `ref` attack and reference-relative metrics
    rmia_references: tuple[str, ...] = ()  # models never trained on the members, for the `rmia` attack
    frequencies: Path | None = None  # token counts for `dcpdd` (memaudit.probes.frequencies); None: counted
    prefix_len: int | None = None  # overrides the suite's
    suffix_len: int | None = None
    tokenizer: str | None = None  # when the model's own tokenizer is elsewhere
    allow_pickle: bool = False
    trust_remote_code: bool = False
    redact: bool = False
    fail_on: tuple[str, ...] = ()  # gate expressions (memaudit.report.gate)
    sarif: Path | None = None  # also write the leaking records as SARIF 2.1.0 (memaudit.report.sarif)
    stress: tuple[Attack, ...] = ()  # attacks (or their specs, e.g. "quant:int4") to run after the scan
    precision: str = DEFAULT_PRECISION
    threads: int | None = None
    force: bool = False

    RANGES: ClassVar[dict[str, Range]] = {
        "prefix_len": integer(1, MAX_COUNT, optional=True),
        "suffix_len": integer(1, MAX_COUNT, optional=True),
        "threads": integer(1, 4096, optional=True),
    }

    def __post_init__(self) -> None:
        for name in ("model", "suite", "reference", "tokenizer"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (str, Path)) or not str(value).strip():
                    raise MemauditError(f"{name} must be a non-empty path or name, got {value!r}")
                object.__setattr__(self, name, str(value))
        for name in _PATHS:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.frequencies is not None:
            object.__setattr__(self, "frequencies", Path(self.frequencies))
        refs = self.rmia_references
        if isinstance(refs, (str, Path)) or not all(isinstance(r, (str, Path)) and str(r).strip() for r in refs):
            raise MemauditError(f"rmia_references must be a list of model paths or names, got {refs!r}")
        object.__setattr__(self, "rmia_references", tuple(str(r) for r in refs))
        if (self.data_dir is None) == (self.audit is None):
            raise MemauditError(
                "a scan needs exactly one audit set: `data_dir` (a data dir from `memaudit data build`) "
                "or `audit` (a file of texts), not both"
            )
        if self.nonmembers is not None and self.audit is None:
            raise MemauditError("nonmembers go with `audit`; a data dir holds its own held-out texts")
        check_ranges(self, self.RANGES)
        if self.sinks_mode is not None:
            check_choice("sink mode", self.sinks_mode, EVAL_MODES)
        check_precision(self.precision)
        for name in _FLAGS:
            check_flag(name, getattr(self, name))
        object.__setattr__(self, "fail_on", _gate_expressions(self.fail_on))
        self._check_stress()

    def _check_stress(self) -> None:
        """The stress attacks need the data dir (relearning trains on its texts) and the scan's
        own texts (redaction comes after, in the report)."""
        if isinstance(self.stress, str):
            raise MemauditError(f"stress must be a list of attacks like quant:int4, got {self.stress!r}")
        if not self.stress:
            object.__setattr__(self, "stress", ())
            return
        if self.data_dir is None:
            raise MemauditError("stress needs `data_dir`: relearning trains on the data dir's texts")
        if self.redact:
            raise MemauditError(
                "stress with `redact`: scan without `redact`, then redact the report (memaudit report --redact)"
            )
        object.__setattr__(self, "stress", self.stress_config.attacks)

    @property
    def stress_config(self) -> StressConfig | None:
        """The stress settings: the attacks of `stress` with the scan's own suite, precision and
        threads; None without attacks."""
        if not self.stress:
            return None
        return StressConfig(attacks=self.stress, suite=self.suite, precision=self.precision, threads=self.threads)

    @property
    def stress_out(self) -> Path:
        """Where the stress attacks' run dirs go: OUT/stress/."""
        return self.out / STRESS_DIR

    @property
    def inputs(self) -> list[str | Path]:
        """Everything the scan reads, which its output must never overwrite."""
        given = (self.model, self.data_dir, self.audit, self.nonmembers, self.valid, self.reference, self.tokenizer)
        return [p for p in (*given, *self.rmia_references, self.frequencies) if p is not None]


@dataclass
class ScanRun:
    """What a finished scan gives its caller: the results document (as written to `out`), the
    verdict of every gate, and the results of the stress attacks' scans, in attack order."""

    results: dict
    verdicts: list  # memaudit.report.gate.GateResult
    stress: list[dict] = field(default_factory=list)


def scan_and_write(request: ScanRequest, *, on_written: Callable[[ScanRun], None] | None = None) -> ScanRun | None:
    """Carry out `request`. Every input, gate, attack and output location is checked before torch
    is imported, so a bad request fails in a moment; then the reference (if any) and the model
    are scanned and the run dir (and `sarif`, the leaking records as SARIF 2.1.0) is written;
    `on_written` (if given) is called with that scan's ScanRun (the command line prints its
    summary there); then the stress attacks run, each into OUT/stress/<attack>/, with this scan
    as the model before them. Returns None on every process but the main one of a multi-process
    launch, which runs no stress attack."""
    from memaudit.common.fileio import check_out
    from memaudit.common.model_files import locate_model
    from memaudit.corpus.audit import AuditSet
    from memaudit.corpus.audit_file import load_audit_rows
    from memaudit.corpus.sources import load_texts
    from memaudit.probes.config import check_attack_inputs
    from memaudit.probes.frequencies import read_frequencies
    from memaudit.probes.suite import load_suite
    from memaudit.report.gate import parse_gates
    from memaudit.report.sarif import check_sarif
    from memaudit.stress.checks import check_stress

    stress_config = request.stress_config
    if stress_config is not None:
        check_stress(
            request.model, request.data_dir, request.stress_out, stress_config, force=request.force, with_before=False
        )
    check_out(request.out, force=request.force, inputs=request.inputs)
    if request.sarif is not None:
        check_sarif(request.sarif, out=request.out, inputs=request.inputs)
    gates = parse_gates(request.fail_on)
    overrides = {k: getattr(request, k) for k in ("prefix_len", "suffix_len") if getattr(request, k) is not None}
    config = dataclasses.replace(load_suite(request.suite), **overrides)
    check_attack_inputs(config, rmia_references=request.rmia_references, frequencies=request.frequencies)
    frequencies = read_frequencies(request.frequencies) if request.frequencies is not None else None
    rows = load_audit_rows(request.audit, request.nonmembers) if request.audit is not None else None
    valid_texts = load_texts(request.valid) if request.valid is not None else None
    if request.data_dir is not None:
        AuditSet.check(request.data_dir)
    locate_model(request.model, allow_pickle=request.allow_pickle)
    if request.reference is not None:
        locate_model(request.reference)
    for ref in request.rmia_references:
        locate_model(ref)

    from memaudit.common.parallel import configure_threads, process_state
    from memaudit.models.io import load_model
    from memaudit.probes.rmia import check_rmia_references
    from memaudit.probes.scan import scan
    from memaudit.report.compare import redact_texts
    from memaudit.report.render import write_run
    from memaudit.report.sarif import write_sarif

    configure_threads(request.threads)
    loaded = load_model(
        request.model,
        tokenizer=request.tokenizer,
        allow_pickle=request.allow_pickle,
        trust_remote_code=request.trust_remote_code,
        precision=request.precision,
    )
    main_process = process_state().is_main_process
    if main_process:
        print(loaded.precision.line, flush=True)
    # Inputs that need the model's tokenizer, checked before anything is scanned.
    check_rmia_references(loaded.tokenizer, request.rmia_references, request.model)
    if frequencies is not None:
        frequencies.check_tokenizer(loaded.tokenizer, request.model)
    inputs = dict(data_dir=request.data_dir, audit_rows=rows, valid_texts=valid_texts, config=config)
    reference = None
    if request.reference is not None:
        ref_loaded = load_model(request.reference, tokenizer=request.tokenizer, precision=request.precision)
        reference = scan(ref_loaded, emitted=False, **inputs)
    results = scan(
        loaded,
        sinks_mode=request.sinks_mode,
        reference=reference,
        rmia_references=request.rmia_references,
        frequencies=frequencies,
        precision=request.precision,
        **inputs,
    )
    if not main_process:
        return None
    if request.audit is not None:
        results["data"] |= {
            "audit": str(request.audit),
            "nonmembers": str(request.nonmembers) if request.nonmembers else None,
            "valid": str(request.valid) if request.valid else None,
        }
    if request.redact:
        redact_texts(results)
    run = ScanRun(results, _judged(results, gates))
    write_run(results, request.out, force=request.force)
    if request.sarif is not None:
        write_sarif(results, request.sarif)
    if on_written is not None:
        on_written(run)
    if stress_config is not None:
        from memaudit.stress.run import stress

        run.stress = stress(
            request.model, request.data_dir, request.stress_out, stress_config, before=results, force=request.force
        )
    return run


@dataclass(frozen=True)
class ReportRequest:
    """A comparative report of scan run dirs (`runs`), written to the report dir `out`: every
    model measured against `reference` (default: the one standard model) and against `oracle`
    (default: the one run of kind no-repeats), texts and secrets as keyed hashes with `redact`,
    and the gates of `fail_on` judged on every model."""

    runs: tuple[Path, ...]
    out: Path
    reference: Path | None = None  # the run every model is measured against
    oracle: Path | None = None  # the run of a model retrained without the members (memaudit.report.oracle)
    redact: bool = False
    fail_on: tuple[str, ...] = ()  # gate expressions (memaudit.report.gate)
    sarif: Path | None = None  # also write the leaking records as SARIF 2.1.0 (memaudit.report.sarif)
    force: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.runs, (str, Path)) or not self.runs:
            raise MemauditError(f"runs must be a list of scan run dirs, at least one, got {self.runs!r}")
        object.__setattr__(self, "runs", tuple(Path(r) for r in self.runs))
        object.__setattr__(self, "out", Path(self.out))
        for name in ("reference", "oracle", "sarif"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        for name in ("redact", "force"):
            check_flag(name, getattr(self, name))
        object.__setattr__(self, "fail_on", _gate_expressions(self.fail_on))

    @property
    def inputs(self) -> list[Path]:
        """Every run dir the report reads (the reference and the oracle included), which its output must never
        overwrite."""
        return [*self.runs, *(extra for extra in (self.reference, self.oracle) if extra is not None)]


@dataclass
class ReportRun:
    """What a written report gives its caller: the comparative results document (as written to
    `out`) and the verdict of every gate."""

    doc: dict
    verdicts: list  # memaudit.report.gate.GateResult


def report_and_write(request: ReportRequest) -> ReportRun:
    """Carry out `request`: the output location, every run dir's results and the gates are
    checked before anything heavy is imported; then the runs are compared, the gates judged and
    the report written (results.json, report.html, summary.csv, sequences.csv, summary.md; and
    `sarif`, the leaking records as SARIF 2.1.0)."""
    from memaudit.common.fileio import check_out
    from memaudit.report.gate import parse_gates
    from memaudit.report.oracle import read_run
    from memaudit.report.run_files import read_results
    from memaudit.report.sarif import check_sarif, write_sarif

    check_out(request.out, force=request.force, inputs=request.inputs)
    if request.sarif is not None:
        check_sarif(request.sarif, out=request.out, inputs=request.inputs)
    for run_dir in request.inputs:
        if run_dir == request.oracle:
            read_run(run_dir, "oracle run")  # its own problem says it is the oracle
        else:
            read_results(run_dir)
    gates = parse_gates(request.fail_on)

    from memaudit.report.compare import compare_runs
    from memaudit.report.render import write_report

    doc = compare_runs(request.runs, reference=request.reference, redact=request.redact, oracle=request.oracle)
    verdicts = _judged(doc, gates)
    write_report(doc, request.out, force=request.force)
    if request.sarif is not None:
        write_sarif(doc, request.sarif)
    return ReportRun(doc, verdicts)
