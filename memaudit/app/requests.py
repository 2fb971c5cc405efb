"""`ScanRequest`: everything `memaudit scan model` is asked to do, as one value that checks
itself (which inputs go together, which numbers are in range) without importing torch, and
`scan_and_write`, which carries it out: it checks every input and the output location first,
then loads the model (and a reference), scans, redacts, evaluates the gates and writes the run
dir. The command line only parses its options into a request; the Python API refuses the same
requests with the same messages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from memaudit.common.errors import MemauditError
from memaudit.common.precision import check_precision
from memaudit.common.validation import MAX_COUNT, Range, check_choice, check_flag, check_ranges, integer
from memaudit.memsinks.config import EVAL_MODES

_PATHS = ("out", "data_dir", "audit", "nonmembers", "valid")
_FLAGS = ("allow_pickle", "trust_remote_code", "redact", "force")


@dataclass(frozen=True)
class ScanRequest:
    """A scan of `model` (a model dir, a GGUF file or a hub id) on exactly one audit set: a data
    dir (`data_dir`, from `memaudit data build`) or a file of texts (`audit`, optionally with
    `nonmembers`), written to the run dir `out`."""

    model: str
    out: Path
    data_dir: Path | None = None
    audit: Path | None = None
    nonmembers: Path | None = None  # texts known not to be in training (with `audit`)
    valid: Path | None = None  # clean text for the capability metrics
    sinks_mode: str | None = None  # MemSink evaluation mode (EVAL_MODES); None: off
    suite: str = "default"  # a built-in suite name or a suite YAML path
    reference: str | None = None  # a reference model: the `ref` attack and reference-relative metrics
    prefix_len: int | None = None  # overrides the suite's
    suffix_len: int | None = None
    tokenizer: str | None = None  # when the model's own tokenizer is elsewhere
    allow_pickle: bool = False
    trust_remote_code: bool = False
    redact: bool = False
    fail_on: tuple[str, ...] = ()  # gate expressions (memaudit.report.gate)
    precision: str = "auto"
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
        if isinstance(self.fail_on, str) or not all(isinstance(e, str) for e in self.fail_on):
            raise MemauditError(f"fail_on must be a list of gate expressions, got {self.fail_on!r}")
        object.__setattr__(self, "fail_on", tuple(self.fail_on))

    @property
    def inputs(self) -> list[str | Path]:
        """Everything the scan reads, which its output must never overwrite."""
        given = (self.model, self.data_dir, self.audit, self.nonmembers, self.valid, self.reference, self.tokenizer)
        return [p for p in given if p is not None]


@dataclass
class ScanRun:
    """What a finished scan gives its caller: the results document (as written to `out`) and the
    verdict of every gate."""

    results: dict
    verdicts: list  # memaudit.report.gate.GateResult


def scan_and_write(request: ScanRequest) -> ScanRun | None:
    """Carry out `request`. Every input, gate and the output location are checked before torch
    is imported, so a bad request fails in a moment; then the reference (if any) and the model
    are scanned and the run dir is written. Returns None on every process but the main one of a
    multi-process launch."""
    from memaudit.common.fileio import check_out
    from memaudit.common.model_files import locate_model
    from memaudit.corpus.audit import AuditSet
    from memaudit.corpus.audit_file import load_audit_rows
    from memaudit.corpus.sources import load_texts
    from memaudit.probes.suite import load_suite
    from memaudit.report.gate import parse_gates

    check_out(request.out, force=request.force, inputs=request.inputs)
    gates = parse_gates(request.fail_on)
    overrides = {k: getattr(request, k) for k in ("prefix_len", "suffix_len") if getattr(request, k) is not None}
    config = dataclasses.replace(load_suite(request.suite), **overrides)
    rows = load_audit_rows(request.audit, request.nonmembers) if request.audit is not None else None
    valid_texts = load_texts(request.valid) if request.valid is not None else None
    if request.data_dir is not None:
        AuditSet.check(request.data_dir)
    locate_model(request.model, allow_pickle=request.allow_pickle)
    if request.reference is not None:
        locate_model(request.reference)

    from memaudit.common.parallel import configure_threads, process_state
    from memaudit.models.io import load_model
    from memaudit.probes.scan import scan
    from memaudit.report.compare import redact_texts
    from memaudit.report.gate import evaluate_gates
    from memaudit.report.render import write_run

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
    inputs = dict(data_dir=request.data_dir, audit_rows=rows, valid_texts=valid_texts, config=config)
    reference = None
    if request.reference is not None:
        ref_loaded = load_model(request.reference, tokenizer=request.tokenizer, precision=request.precision)
        reference = scan(ref_loaded, emitted=False, **inputs)
    results = scan(loaded, sinks_mode=request.sinks_mode, reference=reference, **inputs)
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
    verdicts = evaluate_gates(results, gates)
    if verdicts:
        results["gates"] = [dataclasses.asdict(v) for v in verdicts]
    write_run(results, request.out, force=request.force)
    return ScanRun(results, verdicts)
