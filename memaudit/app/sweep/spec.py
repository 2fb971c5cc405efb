"""A sweep file, read and checked before anything runs: which demo configuration it starts from,
the settings it fixes and the ones it varies (by prefixed name, since `seed`, `steps` and `lr` live
in several configs), the seeds (the data seed and the training seed apart) and the arms to compare.

    name: quick                       # names the output dir's sweep: another name there is refused
    base: quick                       # the demo configuration the settings change: demo, quick, finetune, quick-finetune,
                                      # isolation
    settings: {train.arch: gpt2-1m}   # fixed for every point
    grid: {sinks.active_fraction: [0.3, 0.5]}   # every combination is a point
    seeds: {data: [0], train: [0, 1]}           # every data seed with every training seed
    arms: [standard, oracle, memsink-off, memsink-removed, unlearn-npo, memsink-removed@quant:int8]

A point is the base with its settings applied, checked by the configs themselves: a value a config
refuses is refused here, with the setting's name, before any work starts."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from memaudit.app.demo import FINETUNE, ISOLATION, QUICK, QUICK_FINETUNE, DemoConfig, Pretraining
from memaudit.common.errors import MemauditError
from memaudit.common.validation import did_you_mean
from memaudit.corpus.config import AuditConfig
from memaudit.memsinks.config import EVAL_MODES, SinkConfig
from memaudit.probes.suite import load_suite
from memaudit.stress.attacks import StressConfig, parse_attack
from memaudit.training.config import TrainConfig
from memaudit.unlearning.config import METHODS, UnlearnConfig

BASES = {
    "demo": DemoConfig(),
    "quick": QUICK,
    "finetune": FINETUNE,
    "quick-finetune": QUICK_FINETUNE,
    "isolation": ISOLATION,  # its first sink config, the paper's MemSinks at P = 0.1; `sinks.route` for the other
}
SINK_ARM = "memsink"  # the sink model of a point: `memsink-<eval mode>` and `memsink-removed`
# Settings that are not fields of the configs above: the ablated share of MLP units, the scans' probe suite,
# the pretraining's natural documents (`pretrain.*` are otherwise the pretraining's TrainConfig).
EXTRA_SETTINGS = {"ablate.ratio", "scan.suite", "pretrain.n_natural"}
SEED_FIELD = "seed"  # set by `seeds:`, never as a setting
# Not part of what a run computes: how many threads it ran on (recorded, never in its identity).
BOOKKEEPING = {"threads"}
_KEYS = {"name", "description", "base", "settings", "grid", "seeds", "arms"}


@dataclass(frozen=True)
class Point:
    """One combination of the grid: the settings it changes (prefixed name -> value) and the config they give."""

    index: int
    settings: dict[str, Any]
    config: DemoConfig
    stress: dict[str, Any]  # StressConfig's settings: the config itself needs the attack, which each arm names


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: str
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    data_seeds: tuple[int, ...]
    train_seeds: tuple[int, ...]
    arms: tuple[str, ...]
    description: str = ""
    source: str = ""  # the file it was read from

    @property
    def points(self) -> list[Point]:
        return _points(self)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "base": self.base,
            "settings": self.fixed,
            "grid": self.grid,
            "seeds": {"data": list(self.data_seeds), "train": list(self.train_seeds)},
            "arms": list(self.arms),
        }


def _did_you_mean(name: str, known: list[str]) -> str:
    return did_you_mean(name, known, n=2) or f"known: {', '.join(sorted(known))}"


def _section_fields(section: str) -> set[str]:
    """The settings a prefix takes: the fields of its config (less those the arms and the seeds set), and its
    EXTRA_SETTINGS."""
    configs = {
        "data": AuditConfig,
        "train": TrainConfig,
        "pretrain": TrainConfig,
        "sinks": SinkConfig,
        "unlearn": UnlearnConfig,
        "stress": StressConfig,
    }
    skip = {SEED_FIELD, "sinks", "init", "no_repeats", "method", "attacks"}  # set by the arms and the seeds
    names = {f.name for f in fields(configs[section])} - skip if section in configs else set()
    return {f"{section}.{n}" for n in names} | {k for k in EXTRA_SETTINGS if k.startswith(f"{section}.")}


SECTIONS = ("data", "train", "sinks", "unlearn", "ablate", "scan", "stress", "pretrain")
SETTINGS = sorted(k for s in SECTIONS for k in _section_fields(s))


def check_setting(name: object) -> str:
    """A known prefixed setting name, or one line saying what is wrong with it."""
    if not isinstance(name, str) or "." not in name:
        raise MemauditError(
            f"sweep setting {name!r} has no prefix: settings are named <config>.<field> "
            f"({', '.join(SECTIONS)}), e.g. train.steps or data.n_natural"
        )
    if name.rsplit(".", 1)[1] == SEED_FIELD:
        raise MemauditError(f"sweep setting {name}: seeds go under `seeds:` (data: [...], train: [...]), not settings")
    if name not in SETTINGS:
        raise MemauditError(f"unknown sweep setting {name}; {_did_you_mean(name, SETTINGS)}")
    return name


def _arm_names() -> list[str]:
    modes = [f"{SINK_ARM}-{mode}" for mode in EVAL_MODES]
    return ["standard", "oracle", *modes, f"{SINK_ARM}-removed", *(f"unlearn-{m}" for m in METHODS), "ablate"]


ARMS = _arm_names()


def check_arm(arm: object) -> str:
    """`standard`, `oracle`, `memsink-<mode>`, `memsink-removed`, `unlearn-<method>`, `ablate`, or one of these
    (a deployed model: not a sink mode but `off`) after a stress attack, `ARM@ATTACK`."""
    if not isinstance(arm, str):
        raise MemauditError(f"a sweep arm is a name, got {arm!r}")
    model, _, attack = arm.partition("@")
    if model not in ARMS:
        raise MemauditError(f"unknown sweep arm {model!r}; {_did_you_mean(model, ARMS)}")
    if attack:
        parse_attack(attack)
    return arm


def _apply(base: DemoConfig, settings: dict[str, Any]) -> tuple[DemoConfig, dict[str, Any]]:
    """The base with `settings` applied, each config rebuilt so that it checks its own values."""
    by_section: dict[str, dict[str, Any]] = {}
    for name, value in settings.items():
        section, field = name.split(".", 1)
        by_section.setdefault(section, {})[field] = tuple(value) if isinstance(value, list) else value
    sinks = next(iter(base.sinks.values()), SinkConfig())
    try:
        cfg = replace(
            base,
            data=replace(base.data, **by_section.get("data", {})),
            train=replace(base.train, **by_section.get("train", {})),
            sinks={SINK_ARM: replace(sinks, **by_section.get("sinks", {}))},
            unlearn=replace(base.unlearn, **by_section.get("unlearn", {})),
            ablate_ratio=by_section.get("ablate", {}).get("ratio", base.ablate_ratio),
            suite=by_section.get("scan", {}).get("suite", base.suite),
        )
        pretrain = dict(by_section.get("pretrain", {}))
        if pretrain and cfg.pretrain is None:
            raise MemauditError(f"pretrain.* settings need a fine-tuning base (finetune, quick-finetune), not {base}")
        if cfg.pretrain is not None:
            n_natural = pretrain.pop("n_natural", cfg.pretrain.n_natural)
            cfg = replace(cfg, pretrain=Pretraining(replace(cfg.pretrain.train, **pretrain), n_natural))
        stress = {"suite": cfg.suite} | by_section.get("stress", {})
        StressConfig(attacks=(parse_attack("quant:int8"),), **stress)  # its values checked, whatever the attack
        load_suite(cfg.suite)
    except TypeError as e:  # a value of the wrong type that a config's own checks did not name
        raise MemauditError(f"sweep settings {settings}: {e}") from None
    return cfg, stress


def _points(spec: SweepSpec) -> list[Point]:
    names = list(spec.grid)
    points, seen = [], {}
    for i, values in enumerate(itertools.product(*spec.grid.values())):
        settings = spec.fixed | dict(zip(names, values))
        try:
            cfg, stress = _apply(BASES[spec.base], settings)
        except MemauditError as e:
            raise MemauditError(f"sweep point {dict(zip(names, values))}: {e}") from None
        key = repr((cfg, stress))
        if key in seen:
            raise MemauditError(
                f"sweep points {seen[key]} and {dict(zip(names, values))} are the same run: "
                "drop the repeated value from the grid"
            )
        seen[key] = dict(zip(names, values))
        points.append(Point(i, dict(zip(names, values)), cfg, stress))
    return points


def _seeds(value: object, what: str) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise MemauditError(f"seeds.{what} takes whole numbers >= 0, got {value!r}")
    if len(set(values)) < len(values):
        raise MemauditError(f"seeds.{what} repeats a seed: {value!r} (the same seed twice is the same run)")
    return tuple(values)


def _values(name: str, value: object) -> list[Any]:
    """A grid entry's values: a list (a list of lists for a list-valued setting such as data.repeats)."""
    if not isinstance(value, list) or not value:
        raise MemauditError(f"grid {name}: give a non-empty list of values, got {value!r}")
    return value


def parse_sets(sets: tuple[str, ...] | list[str]) -> dict[str, list[Any]]:
    """`--set KEY=V1,V2`: each value parsed as YAML (`null`, `0.3`, `[1, 8]`), a list of values per key."""
    out = {}
    for item in sets:
        name, eq, values = item.partition("=")
        if not eq or not values.strip():
            raise MemauditError(f"--set takes KEY=V1,V2,... (e.g. train.steps=150,300), got {item!r}")
        try:
            parsed = yaml.safe_load(f"[{values}]")
        except yaml.YAMLError:
            raise MemauditError(f"--set {item!r}: values are YAML, separated by commas") from None
        out[check_setting(name.strip())] = parsed
    return out


def load_spec(path: Path, sets: dict[str, list[Any]] | None = None) -> SweepSpec:
    """The sweep file at `path`, with `--set` values (a single value fixes a setting, several vary it)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MemauditError(f"{path}: no such sweep file") from None
    except yaml.YAMLError as e:
        raise MemauditError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise MemauditError(f"{path}: a sweep file is a mapping ({', '.join(sorted(_KEYS))})")
    unknown = set(data) - _KEYS
    if unknown:
        raise MemauditError(f"{path}: unknown keys {sorted(unknown)}; a sweep file has {', '.join(sorted(_KEYS))}")
    try:
        return _spec(data, sets or {}, str(path))
    except MemauditError as e:
        raise MemauditError(f"{path}: {e}") from None


def _spec(data: dict, sets: dict[str, list[Any]], source: str) -> SweepSpec:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise MemauditError("a sweep needs a `name`")
    base = data.get("base", "demo")
    if base not in BASES:
        raise MemauditError(f"unknown base {base!r}; {_did_you_mean(str(base), list(BASES))}")
    fixed = {check_setting(k): v for k, v in (data.get("settings") or {}).items()}
    grid = {check_setting(k): _values(k, v) for k, v in (data.get("grid") or {}).items()}
    for key, values in sets.items():
        fixed.pop(key, None)
        grid.pop(key, None)
        if len(values) == 1:
            fixed[key] = values[0]
        else:
            grid[key] = values
    both = set(fixed) & set(grid)
    if both:
        raise MemauditError(f"{sorted(both)} both fixed (settings) and varied (grid): keep one")
    seeds = data.get("seeds") or {}
    if not isinstance(seeds, dict) or set(seeds) - {"data", "train"}:
        raise MemauditError(f"seeds is a mapping with `data` and `train` lists, got {seeds!r}")
    arms = data.get("arms")
    if not isinstance(arms, list) or not arms:
        raise MemauditError(f"a sweep names its `arms`, a list of: {', '.join(ARMS)} (and ARM@ATTACK)")
    if len(set(arms)) < len(arms):
        raise MemauditError(f"arms repeat themselves: {arms}")
    spec = SweepSpec(
        name=name.strip(),
        base=base,
        fixed=fixed,
        grid=grid,
        data_seeds=_seeds(seeds.get("data", 0), "data"),
        train_seeds=_seeds(seeds.get("train", 0), "train"),
        arms=tuple(check_arm(a) for a in arms),
        description=str(data.get("description") or ""),
        source=source,
    )
    _points(spec)  # every point is built, and its values checked, before anything runs
    return spec
