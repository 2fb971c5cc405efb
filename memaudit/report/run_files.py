"""What a scan's run dir must hold for another command (`memaudit report`) to read it: a
results.json of the schema this memaudit writes, whose every metric entry is whole. A file from
a newer memaudit, or one edited by hand, is refused with what is wrong, rather than read as
blanks in a report. Standard library only."""

from __future__ import annotations

from pathlib import Path

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import read_json
from memaudit.probes.config import SCAN_SCHEMA_VERSION


def check_results(results: dict, path: Path | str) -> dict:
    """`results` if it is a scan result this memaudit can read; MemauditError naming `path` and
    the first problem otherwise."""
    if "runs" in results:
        raise MemauditError(f"{path} is a comparative report; pass the scan run dirs it was made from")
    version = results.get("schema_version")
    if version != SCAN_SCHEMA_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > SCAN_SCHEMA_VERSION:
            hint = "it was written by a newer memaudit; upgrade memaudit to read it"
        else:
            hint = "it is not a scan result of this memaudit; scan the model again"
        raise MemauditError(f"{path}: schema_version {version!r}, this memaudit reads {SCAN_SCHEMA_VERSION}; {hint}")
    if not isinstance(results.get("model"), dict) or not isinstance(results["model"].get("path"), str):
        raise MemauditError(f"{path}: 'model' must be an object with the model's 'path'")
    metrics = results.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise MemauditError(f"{path}: 'metrics' must be a non-empty object of metric entries")
    for name, entry in metrics.items():
        value = entry.get("value", "missing") if isinstance(entry, dict) else "missing"
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise MemauditError(
                f"{path}: metric {name!r} has no value (an entry needs 'value': a number, or null where not measured)"
            )
    if not isinstance(results.get("sequences"), list):
        raise MemauditError(f"{path}: 'sequences' must be a list of per-sequence rows")
    return results


def read_results(run_dir: Path | str) -> dict:
    """The checked results.json of a scan run dir."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise MemauditError(f"{run_dir}: no results.json; pass run dirs written by `memaudit scan model`")
    return check_results(read_json(path), path)
