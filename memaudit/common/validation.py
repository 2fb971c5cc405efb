"""The range of every numeric setting, declared once beside the config dataclass that owns the
setting and checked in its `__post_init__`, so the command line and the Python API refuse the
same values with the same message. Standard library only: the command line builds (and so
checks) its configs before it imports torch.

Upper bounds are there so that a typo cannot ask for a run that fills the memory or the disk
(`--repeats 99999999`, `--steps 1e20`), not to police sensible experiments."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, fields

from memaudit.common.errors import MemauditError

MAX_STEPS = 10_000_000  # optimizer steps of one run: ~months on a GPU at the smallest model
MAX_REPEATS = 10_000  # a planted document's occurrences; every occurrence is an index in the packed stream
MAX_COUNT = 1 << 20  # documents, tokens per sequence, vocabulary entries, sequences per batch
SEED_END = 2**32  # numpy's seeds are 32-bit


@dataclass(frozen=True)
class Range:
    """Which values a numeric setting takes: its type (whole number or any finite number), its
    bounds (open or closed), and whether None (the setting's "default" or "no limit") is allowed."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    low_open: bool = False  # `low` itself is excluded
    high_open: bool = False
    optional: bool = False

    def describe(self) -> str:
        """The rule in words, as error messages state it: "an integer from 1 to 10000000"."""
        kind = "an integer" if self.integer else "a finite number"
        if self.low is not None and self.high is not None and not (self.low_open or self.high_open):
            text = f"{kind} from {_number(self.low)} to {_number(self.high)}"
        else:
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {_number(self.high)}")
            text = " ".join([kind, " and ".join(bounds)]).strip()
        return f"{text} (or None)" if self.optional else text

    def check(self, name: str, value: object) -> int | float | None:
        """`value` as an int or float if it is in range; MemauditError naming `name` otherwise.
        Booleans are not numbers here, and a whole-number setting refuses 2.5 rather than cut it."""
        if value is None and self.optional:
            return None
        ok_type = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value):
            raise MemauditError(f"{name} must be {self.describe()}, got {value!r}")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            raise MemauditError(f"{name} must be {self.describe()}, got {value!r}")
        return int(value) if self.integer else float(value)


def integer(low: int | None = None, high: int | None = None, *, optional: bool = False) -> Range:
    return Range(low, high, integer=True, optional=optional)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> Range:
    return Range(low, high, low_open=low_open, high_open=high_open, optional=optional)


SEED = integer(0, SEED_END - 1)


def check_ranges(config: object, ranges: Mapping[str, Range]) -> None:
    """Check the named fields of a dataclass instance (frozen or not) and store them as plain
    int/float, so a numpy integer given through the API is written to JSON like any other."""
    for name, rule in ranges.items():
        object.__setattr__(config, name, rule.check(name, getattr(config, name)))


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """`value` if it is one of `choices`; otherwise MemauditError listing them."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise MemauditError(f"unknown {name} {value!r}; use one of {', '.join(choices)}")
    return value


def check_flag(name: str, value: object) -> bool:
    """A yes/no setting must be a bool: "false" is a true string."""
    if not isinstance(value, bool):
        raise MemauditError(f"{name} must be True or False, got {value!r}")
    return value


def default_of(config: type, name: str) -> object:
    """A config dataclass field's default, for the command line's own defaults: each default
    is written once, in the dataclass."""
    for f in fields(config):
        if f.name == name:
            if f.default is MISSING:
                raise TypeError(f"{config.__name__}.{name} has no plain default")
            return f.default
    raise TypeError(f"{config.__name__} has no field {name!r}")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def did_you_mean(name: str, known: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """ "did you mean a or b?" for the known names closest to a mistyped one; "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=n, cutoff=cutoff)
    return f"did you mean {' or '.join(close)}?" if close else ""
