"""What a metric is computed from, and the few ways metrics aggregate it. A scan hands every
metric of the registry the same `MetricInputs` (its per-sequence rows, its validation losses,
its probe suite, the metrics computed so far and other models' metrics), so a metric's
computation is one small function of it. Nothing here imports torch: the rows are plain dicts
(`metrics.sequence_row` makes them), so tests build them by hand."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from memaudit.probes.config import ScanConfig
from memaudit.probes.stats import Statistic, mean, summarize


@dataclass
class MetricInputs:
    """One model's scan, as the metrics read it.

    `rows`: one dict per audited sequence (keys `kind`, `repeats`, `member`, `loss`, the
    extraction verdicts, `mia_<attack>`, `exposure` ...). `valid`: per clean validation document,
    its total NLL in nats and its token count. `others`: other models' metrics by their role
    (`reference`, `retrained`, `standard`, `before`; see `registry.AGAINST`). `computed`: the
    metrics computed so far, in registry order, so a metric may build on an earlier one.
    `attack`: the record of the attack the model went through (memaudit stress), if any.
    `other_rows`: other models' per-sequence rows by role (`oracle`), for the metrics that
    compare two models record by record (`paired_values`) rather than number by number."""

    rows: Sequence[dict] = ()
    valid: Sequence[tuple[float, int]] = ()
    config: ScanConfig = field(default_factory=ScanConfig)
    others: Mapping[str, dict] = field(default_factory=dict)
    computed: dict[str, dict] = field(default_factory=dict)
    attack: Mapping | None = None
    other_rows: Mapping[str, Sequence[dict]] = field(default_factory=dict)

    @cached_property
    def text(self) -> list[dict]:
        """Members and held-out texts; canaries are kept out (a short, templated population of their own)."""
        return [r for r in self.rows if r["kind"] != "canary"]

    @cached_property
    def members(self) -> list[dict]:
        return [r for r in self.text if r["member"]]

    @cached_property
    def nonmembers(self) -> list[dict]:
        return [r for r in self.text if not r["member"]]

    @cached_property
    def canaries(self) -> list[dict]:
        """Canaries whose exposure was measured."""
        return [r for r in self.rows if r["kind"] == "canary" and "exposure" in r]

    @cached_property
    def levels(self) -> list[int]:
        """Repeat levels of the text rows (0 = held-out non-members)."""
        return sorted({r["repeats"] for r in self.text})

    @staticmethod
    def values(rows: Sequence[dict], key: str) -> np.ndarray:
        """`key` of every row that has it, as floats (booleans count 0/1)."""
        return np.array([float(r[key]) for r in rows if key in r])

    @staticmethod
    def at_level(rows: Sequence[dict], level: int) -> list[dict]:
        return [r for r in rows if r["repeats"] == level]

    def summary(
        self, samples: Sequence[np.ndarray], statistic: Statistic, minus: Sequence[np.ndarray] | None = None
    ) -> dict:
        """{value, n, ci95} with the suite's bootstrap resamples and seed; with `minus` (another
        model's values of the same records), of the difference, with a paired interval."""
        return summarize(samples, statistic, n_boot=self.config.bootstrap, seed=self.config.seed, minus=minus)

    def paired_values(self, role: str, key: str, member: bool) -> tuple[np.ndarray, np.ndarray]:
        """`key` of this model's members (or held-out texts) and of the `role` model's rows of the
        same records, aligned, where both rows have it. Records are matched by doc_id (a hash of
        the text), the n-th occurrence of an id with the n-th, so two scans of one audit set pair
        up whatever their row order; a record only one model scanned is left out."""
        theirs = dict(_by_record([r for r in self.other_rows[role] if r["kind"] != "canary"]))
        pairs = [
            (mine[key], theirs[k][key])
            for k, mine in _by_record(self.text)
            if k in theirs and mine["member"] == member and key in mine and key in theirs[k]
        ]
        return (np.array([float(a) for a, _ in pairs]), np.array([float(b) for _, b in pairs]))

    def mean_by_level(self, key: str, rows: Sequence[dict], by_level: bool = True) -> dict:
        """The mean of `key` over `rows` as the headline, and over every text row of each repeat
        level (so level 0 shows the held-out baseline beside the member levels)."""
        out = self.summary([self.values(rows, key)], mean)
        if by_level:
            split = {str(lv): self.values(self.at_level(self.text, lv), key) for lv in self.levels}
            out["by_repeats"] = {lv: self.summary([v], mean) for lv, v in split.items() if len(v)}
        return out


def relative(entry: dict, ref: dict, f: Callable[[float, float], float]) -> dict:
    """f(this model's value, the reference's value), headline and level by level. The reference is
    held fixed: the interval is this model's interval mapped through f. Levels the reference
    lacks, or where f is not finite, are left out."""

    def one(e: dict, r: dict) -> dict:
        out = {"value": f(e["value"], r["value"]), "n": e["n"]}
        if "ci95" in e:
            out["ci95"] = sorted(f(x, r["value"]) for x in e["ci95"])
        return out

    ref_levels = ref.get("by_repeats", {})
    levels = {lv: one(e, ref_levels[lv]) for lv, e in entry.get("by_repeats", {}).items() if lv in ref_levels}
    return {**one(entry, ref), "by_repeats": {lv: v for lv, v in levels.items() if math.isfinite(v["value"])}}


def _by_record(rows: Sequence[dict]) -> list[tuple[tuple, dict]]:
    """Each row keyed by its record: (doc_id, how many rows of that doc_id came before it)."""
    seen: Counter = Counter()
    keyed = []
    for r in rows:
        keyed.append(((r["doc_id"], seen[r["doc_id"]]), r))
        seen[r["doc_id"]] += 1
    return keyed


def difference(entry: dict, other: dict) -> dict:
    """This model's value minus another model's, when their records cannot be paired (a report
    keeps no per-document validation losses): the interval combines the two intervals as if the
    estimates were independent, d ± sqrt(h1² + h2²) with h each interval's half-width, which is
    wider than a paired interval would be."""
    out = {"value": entry["value"] - other["value"], "n": entry["n"]}
    if "ci95" in entry and "ci95" in other:
        half = math.hypot(*((ci[1] - ci[0]) / 2 for ci in (entry["ci95"], other["ci95"])))
        out["ci95"] = [out["value"] - half, out["value"] + half]
    return out
