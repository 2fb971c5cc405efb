"""Probe suites: YAML files that say which probes run with which parameters. Keys are the
fields of `ScanConfig`, so a suite reads as the config it becomes. The built-in suites live in
the package (memaudit/suites/, linked from the repo's probes/); any other path works too.
A typo must not silently fall back to a default, so unknown keys and wrong types are errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from memaudit.common.errors import MemauditError
from memaudit.common.validation import did_you_mean
from memaudit.probes.config import ScanConfig

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


def suite_names() -> list[str]:
    """The built-in suites, by name."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        if not path.is_file():
            raise MemauditError(f"{path}: no such suite file")
        return path
    if (SUITES_DIR / f"{path.name}.yaml").is_file():
        return SUITES_DIR / f"{path.name}.yaml"
    hint = did_you_mean(path.name, suite_names())
    hint += " " if hint else ""
    raise MemauditError(
        f"unknown suite {path.name!r}; {hint}built-in suites: {', '.join(suite_names())}, or a .yaml path"
    )


def _is(value, kind: type) -> bool:
    """YAML's types as a field wants them: an int is a float, a bool is not a number."""
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _as_field_type(key: str, value, default):
    """The value as the field's type (a YAML list becomes a tuple), or an error naming the key."""
    if isinstance(default, tuple):
        kind = type(default[0])
        if isinstance(value, list) and all(_is(v, kind) for v in value):
            return tuple(value)
        want = f"a list of {kind.__name__}"
    else:
        kind = type(default)
        if _is(value, kind):
            return kind(value)
        want = kind.__name__
    raise MemauditError(f"{key} must be {want}, got {value!r}")


def load_suite(name_or_path: str | Path) -> ScanConfig:
    """A built-in suite by name (`default`, `ci`, `full`) or a suite file by path. Keys left
    out keep ScanConfig's defaults; `name` defaults to the file's stem."""
    path = _resolve(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise MemauditError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise MemauditError(f"{path}: a suite is a mapping of settings, got a {type(data).__name__}")
    fields = {f.name: f.default for f in dataclasses.fields(ScanConfig)}
    settings = {"name": path.stem}
    for key, value in data.items():
        if key not in fields:
            hint = did_you_mean(str(key), fields) or f"known keys: {', '.join(fields)}"
            raise MemauditError(f"{path}: unknown key {key!r}; {hint}")
        try:
            settings[key] = _as_field_type(key, value, fields[key])
        except MemauditError as e:
            raise MemauditError(f"{path}: {e}") from None
    try:
        return ScanConfig(**settings)
    except MemauditError as e:
        raise MemauditError(f"{path}: {e}") from None
