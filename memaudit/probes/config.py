"""The probe suite a scan runs (`ScanConfig`), kept apart from the probes themselves so that a
suite file or a command line can be checked before torch is imported: this module imports
nothing heavier than the standard library."""

from __future__ import annotations

import math
from dataclasses import dataclass

from memaudit.errors import MemauditError

TOPK = 40  # the sampling distribution of (n,p)-discoverable extraction: top-k 40, temperature 1
ATTACKS = ("loss", "zlib", "mink", "minkpp", "ref")  # membership inference: `privacy.mia.<attack>.*`


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ScanConfig:
    """A probe suite: which probes run, with which parameters. Suite YAML files (suite.py) set
    these fields by name; results.json records them all under `suite`."""

    name: str = "default"
    prefix_len: int = 32  # P of the headline extraction metrics
    suffix_len: int = 32  # S, for every prefix length
    prefix_lens: tuple[int, ...] = (8, 16, 32, 64)  # the sweep: `<metric>@P<n>` for each n != prefix_len
    np_n: int = 100  # (n, p)-discoverable extraction: n samples ...
    np_p: float = 0.5  # ... contain the suffix with probability >= p
    topk: int = TOPK  # the sampling distribution of (n, p)-discoverability: top-k, temperature 1
    mia_attacks: tuple[str, ...] = ATTACKS  # `ref` runs only when a reference's losses are given
    mink_k: float = 0.2  # the fraction of lowest tokens for Min-K% and Min-K%++
    privleak_attack: str = "mink"  # the attack whose AUC PrivLeak compares (MUSE uses Min-K%)
    exposure_candidates: int = 2000  # sampled secrets each canary is ranked against; 0 = no exposure
    sampling_trials: int = 0  # the sampling extraction attack: continuations sampled per member; 0 = off
    bootstrap: int = 1000  # resamples for every ci95; 0 = no intervals
    seed: int = 0
    max_batch_tokens: int = 16384

    def __post_init__(self) -> None:
        for key in ("prefix_lens", "mia_attacks"):  # YAML and callers give lists
            object.__setattr__(self, key, tuple(getattr(self, key)))
        for key, ok, rule in self._rules():
            if not ok:
                raise MemauditError(f"{key} must be {rule}, got {getattr(self, key)!r}")

    def _rules(self) -> list[tuple[str, bool, str]]:
        """(field, holds, what it must be): types first, so that a range is only compared on a number."""

        def whole(key: str, low: int) -> tuple[str, bool, str]:
            v = getattr(self, key)
            return key, _is_int(v) and v >= low, f"an integer >= {low}"

        def fraction(key: str) -> tuple[str, bool, str]:
            v = getattr(self, key)
            return key, _is_number(v) and 0 < v <= 1, "in (0, 1] (a finite number)"

        return [
            ("name", isinstance(self.name, str) and self.name != "", "a non-empty string"),
            whole("prefix_len", 1),
            whole("suffix_len", 1),
            ("prefix_lens", all(_is_int(p) and p >= 1 for p in self.prefix_lens), "positive integers"),
            whole("np_n", 1),
            fraction("np_p"),
            whole("topk", 1),
            ("mia_attacks", set(self.mia_attacks) <= set(ATTACKS), f"a subset of {', '.join(ATTACKS)}"),
            fraction("mink_k"),
            ("privleak_attack", self.privleak_attack in ATTACKS, f"one of {', '.join(ATTACKS)}"),
            whole("exposure_candidates", 0),
            whole("sampling_trials", 0),
            whole("bootstrap", 0),
            whole("seed", 0),
            whole("max_batch_tokens", 1),
        ]
