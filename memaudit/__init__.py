"""memaudit: does a language model leak its training data, and can the leak be removed?

The Python API mirrors the command line and returns data (dicts, dataclasses):
`write_audit_set`, `train`, `scan` (or `scan_and_write` of a `ScanRequest`, as `memaudit scan
model` does), `scan_and_write_corpus` (`memaudit scan data`), `remove_sinks`, `unlearn`,
`ablate`, `compare_runs` (or `report_and_write` of a `ReportRequest`, as `memaudit report`
does), `evaluate_gates`, `compare_to_oracle` (a run against its retrained oracle), `run_demo`, `run_sweep`
(`memaudit sweep`). They are imported on first use, so `import memaudit` stays
cheap."""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "AuditConfig": "memaudit.corpus.audit",
    "write_audit_set": "memaudit.corpus.audit",
    "ScanDataConfig": "memaudit.corpus.config",
    "scan_and_write_corpus": "memaudit.corpus.duplicates",
    "TrainConfig": "memaudit.training.config",
    "train": "memaudit.training.train",
    "ScanConfig": "memaudit.probes.config",
    "load_suite": "memaudit.probes.suite",
    "count_frequencies": "memaudit.probes.frequencies",
    "write_frequencies": "memaudit.probes.frequencies",
    "scan": "memaudit.probes.scan",
    "ScanRequest": "memaudit.app.requests",
    "scan_and_write": "memaudit.app.requests",
    "load_model": "memaudit.models.io",
    "SinkConfig": "memaudit.memsinks.config",
    "remove_sinks": "memaudit.models.removal",
    "UnlearnConfig": "memaudit.unlearning.config",
    "AblateConfig": "memaudit.unlearning.config",
    "unlearn": "memaudit.unlearning.run",
    "ablate": "memaudit.unlearning.ablate",
    "compare_runs": "memaudit.report.compare",
    "ReportRequest": "memaudit.app.requests",
    "report_and_write": "memaudit.app.requests",
    "write_report": "memaudit.report.render",
    "evaluate_gates": "memaudit.report.gate",
    "run_demo": "memaudit.app.demo",
    "compare_to_oracle": "memaudit.report.oracle",
    "run_sweep": "memaudit.app.sweep",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'memaudit' has no attribute {name!r}")
