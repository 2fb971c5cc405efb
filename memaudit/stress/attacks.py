"""What `memaudit stress` can do to a model after its memorization was removed, to ask whether the
memorization comes back: 4- and 8-bit weight quantization (Zhang et al., ICLR 2025: unlearned
knowledge returns after 4-bit quantization) and a few steps of fine-tuning (relearning: Hu et al.
2024 on part of the forgotten data, Deeb & Roger 2024 on other data).

Attack specs and the stress settings are parsed and checked here, with the standard library
only, so the command line refuses a bad `--attack` before it imports torch."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from memaudit.common.errors import MemauditError
from memaudit.common.precision import DEFAULT_PRECISION, check_precision
from memaudit.common.validation import MAX_COUNT, MAX_STEPS, SEED, Range, check_ranges, did_you_mean, integer, number

QUANT_BITS = {"int8": 8, "int4": 4}  # symmetric round-to-nearest, weight only (quant.py)
GROUP_SIZE = 128  # input columns that share one scale, per output row
# What relearning fine-tunes on; the scan after it measures every member it did not train on.
RELEARN_SETS = {
    "forget-half": "half of the trained members and canaries (a seeded split, stratified by kind and repeat "
    "level); the other half is measured (Hu et al. 2024's targeted relearning)",
    "retain": "natural training text: benign fine-tuning on data the model was meant to keep",
}
_STEPS = integer(1, MAX_STEPS)
_FORMS = [*(f"quant:{v}" for v in QUANT_BITS), *(f"relearn:{s}:STEPS" for s in RELEARN_SETS)]


@dataclass(frozen=True)
class Attack:
    """One attack: `quant:<int8|int4>` or `relearn:<forget-half|retain>:<steps>`."""

    kind: str  # quant | relearn
    variant: str  # a key of QUANT_BITS or RELEARN_SETS
    steps: int | None = None  # relearning's optimizer steps

    @property
    def name(self) -> str:
        """The spec as the user writes it: `quant:int4`, `relearn:forget-half:40`."""
        return ":".join([self.kind, self.variant, *([str(self.steps)] if self.steps is not None else [])])

    @property
    def family(self) -> str:
        """The metric-name spelling, without the step count: `quant_int4`, `relearn_forget_half`."""
        return f"{self.kind}_{self.variant}".replace("-", "_")

    @property
    def dir_name(self) -> str:
        """The run dir it writes: `quant-int4`, `relearn-forget-half-40` (no colons in file names)."""
        return self.name.replace(":", "-")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "kind": self.kind,
            "variant": self.variant,
            "steps": self.steps,
        }


def _unknown(spec: str) -> MemauditError:
    """An unknown spec, with the closest known one (written with the spec's own step count)."""
    steps = spec.rsplit(":", 1)[-1] if spec.count(":") >= 2 else "40"
    concrete = [form.replace("STEPS", steps) for form in _FORMS]
    hint = did_you_mean(spec, concrete, n=1, cutoff=0.5)
    hint += " " if hint else ""
    return MemauditError(f"unknown attack {spec!r}; {hint}attacks: {', '.join(_FORMS)}")


def parse_attack(spec: object) -> Attack:
    """An attack from its spec; a MemauditError that names the spec and what to write instead."""
    if isinstance(spec, Attack):
        return spec
    if not isinstance(spec, str):
        raise MemauditError(f"an attack is a spec like quant:int4 or relearn:retain:40, got {spec!r}")
    kind, _, rest = spec.strip().partition(":")
    variant, _, steps = rest.partition(":")
    if kind == "quant" and variant in QUANT_BITS and not steps:
        return Attack(kind, variant)
    if kind == "relearn" and variant in RELEARN_SETS:
        if not steps:
            raise MemauditError(
                f"attack {spec!r} needs a step count: relearn:{variant}:STEPS, e.g. relearn:{variant}:40"
            )
        if not steps.isdigit():
            raise MemauditError(f"attack {spec!r}: STEPS must be {_STEPS.describe()}, e.g. relearn:{variant}:40")
        return Attack(kind, variant, _STEPS.check(f"attack {spec!r}: STEPS", int(steps)))
    raise _unknown(spec)


def parse_attacks(specs: Sequence[object]) -> tuple[Attack, ...]:
    """Several attacks, each once (two relearning runs of one set differ in their steps)."""
    attacks = tuple(parse_attack(s) for s in specs)
    if not attacks:
        raise MemauditError("no attack given; pass --attack, e.g. --attack quant:int4 --attack relearn:retain:40")
    names = [a.dir_name for a in attacks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise MemauditError(f"attack {twice[0]} is given twice; give each attack once")
    return attacks


@dataclass(frozen=True)
class StressConfig:
    """Which attacks run and how: the probe suite of every scan, and relearning's optimizer
    (AdamW, no warm-up, cosine to 10%, no weight decay, on whole documents padded per batch)."""

    attacks: tuple[Attack, ...] = field(default_factory=tuple)
    suite: str = "default"  # a built-in suite name or a suite YAML path, as `scan model --suite`
    relearn_lr: float = 2e-4
    relearn_batch_size: int = 8  # documents per step
    eval_points: int = 10  # member loss is measured this many times during relearning (and before it)
    recover_margin: float = 0.1  # "recovered": member loss within this fraction of the standard's loss gap
    group_size: int = GROUP_SIZE
    seed: int = 0  # the forget-half split and relearning's batch order
    # The weights' dtype of the scans before and after quantization, and relearning's autocast dtype (relearning
    # trains, and then scans, fp32 weights); memaudit.common.precision.
    precision: str = DEFAULT_PRECISION
    threads: int | None = None

    RANGES: ClassVar[dict[str, Range]] = {
        "relearn_lr": number(0, 1, low_open=True),
        "relearn_batch_size": integer(1, MAX_COUNT),
        "eval_points": integer(1, MAX_STEPS),
        "recover_margin": number(0, 1),
        "group_size": integer(1, MAX_COUNT),
        "seed": SEED,
        "threads": integer(1, 4096, optional=True),
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", parse_attacks(self.attacks))
        if not isinstance(self.suite, str) or not self.suite.strip():
            raise MemauditError(f"suite must be a suite name or a YAML path, got {self.suite!r}")
        check_ranges(self, self.RANGES)
        check_precision(self.precision)


def forget_half(audit: Sequence[dict], seed: int) -> tuple[set[int], set[int]]:
    """(relearned, measured) doc ids: the trained members and canaries split in two, within each
    (kind, repeat level) so that both halves hold every level; an odd one out is measured. The
    same audit set and seed give the same split."""
    groups: dict[tuple[str, int], list[int]] = {}
    for r in audit:
        if r["kind"] in ("repeated", "canary") and r["repeats"] > 0:
            groups.setdefault((r["kind"], r["repeats"]), []).append(r["doc_id"])
    rng = random.Random(f"forget-half:{seed}")
    relearned: set[int] = set()
    measured: set[int] = set()
    for key in sorted(groups):
        ids = sorted(groups[key])
        rng.shuffle(ids)
        relearned |= set(ids[: len(ids) // 2])
        measured |= set(ids[len(ids) // 2 :])
    if not relearned:
        raise MemauditError("relearn:forget-half needs at least two trained members or canaries of one repeat level")
    return relearned, measured
