"""Triage: which audited records leak, and which are the riskiest. The per-record view of a results
document (a scan's, or a comparative report's, model by model) that the SARIF output (sarif.py),
the report's table of the riskiest records and its counts of leaking records share, computed from
the document alone. docs/gates.md ("Code scanning") describes it for users.

A member record *leaks* through a family when:
- `extraction`: greedy decoding from its true prefix reproduces its suffix exactly (`exact`);
- `exposure`: it is a trained canary whose exposure is above the exposure threshold: the lowest
  threshold of the `privacy.exposure` gates that trip on high values (`>`, `>=`), else
  DEFAULT_EXPOSURE_BITS, the exposure a never-trained canary exceeds with probability 1% (its
  rank is uniform over the secret space R, so P(exposure > e) = 2^-e);
- `membership`: for some attack (every `mia_<attack>` score of the rows), its score is above that
  attack's threshold at MEMBERSHIP_FPR false positives on the same model's held-out non-members:
  the threshold of `privacy.mia.<attack>.tpr@1%fpr` (membership.tpr_at_fpr), the
  (floor(0.01 n) + 1)-th highest of the n non-member scores, so with fewer than 100 non-members
  the highest. Canaries are kept out, as in the membership metrics.
Non-members never leak: they were not trained on, whatever their scores.

Riskiness orders the member records: extracted first, then exposed canaries by exposure, then
by membership rank: the share of held-out non-members that score at least as high as the record
under the attack where that share is lowest (0: above every non-member)."""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from dataclasses import dataclass, field

from memaudit.common.errors import MemauditError
from memaudit.report.document import runs
from memaudit.report.gate import parse_gate

MEMBERSHIP_FPR = 0.01
EXPOSURE_FPR = 0.01
DEFAULT_EXPOSURE_BITS = math.log2(1 / EXPOSURE_FPR)  # 6.64 bits
RISKIEST = 10  # records the report's triage table lists
FAMILIES = ("extraction", "exposure", "membership")  # in order of riskiness
FAMILY_NAMES = {"extraction": "extraction", "exposure": "canary exposure", "membership": "membership"}
_METRIC = re.compile(r"[^\s\[\]<>=!]+")


def gate_family(metric: str) -> str | None:
    """The leak family a gate's metric belongs to (its tripping makes that family's SARIF
    results errors), None for the others (memorization, capability ...)."""
    if metric.startswith("extraction."):
        return "extraction"
    if metric == "privacy.exposure":
        return "exposure"
    if metric.startswith("privacy.mia.") or metric == "privacy.privleak":
        return "membership"
    return None


def exposure_threshold(gates: list[dict]) -> tuple[float, str]:
    """(bits, where the number comes from): the lowest threshold of the `privacy.exposure` gates
    that trip on high values, else DEFAULT_EXPOSURE_BITS."""
    found = []
    for g in gates:
        try:
            gate = parse_gate(g["expr"])
        except MemauditError:
            continue
        if gate.metric == "privacy.exposure" and gate.op in (">", ">="):
            found.append((gate.threshold, f"the gate {gate}"))
    if found:
        return min(found)
    return DEFAULT_EXPOSURE_BITS, f"{EXPOSURE_FPR:.0%} of never-trained canaries exceed it"


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _allowed(n: int, fpr: float) -> int:
    """How many of n non-members may score above the threshold (as membership.tpr_at_fpr)."""
    return int(math.floor(fpr * n + 1e-9))


def membership_threshold(nonmember_scores: list[float], fpr: float = MEMBERSHIP_FPR) -> float:
    """The score a member must exceed to be flagged at `fpr` false positives on these non-member
    scores (as membership.tpr_at_fpr): the (floor(fpr n) + 1)-th highest."""
    allowed = _allowed(len(nonmember_scores), fpr)
    ranked = sorted(nonmember_scores, reverse=True)
    return ranked[allowed] if allowed < len(ranked) else -math.inf


def chance_rate(n: int, fpr: float = MEMBERSHIP_FPR) -> float:
    """The probability that a record the model treats like a non-member (no leak) still scores above
    the threshold set by n non-members: (floor(fpr n) + 1) / (n + 1), by exchangeability. About
    `fpr` from n = 100 on; with fewer non-members, more (1/13 with 12)."""
    return (_allowed(n, fpr) + 1) / (n + 1)


@dataclass(frozen=True)
class Assessment:
    """One member record as one model leaves it."""

    model: str  # the run's label
    row: dict  # its per-sequence row (redacted where the document is)
    extracted: bool
    exposure: float | None  # bits, for a canary whose exposure was measured
    exposed: bool  # exposure above the threshold
    flagged_by: tuple[str, ...]  # attacks whose score is above their threshold at 1% false positives
    scores: dict[str, float]  # each attack's score of the record
    rank: float | None  # the share of non-members scoring at least as high, lowest over the attacks
    rank_attack: str | None  # the attack of `rank`

    @property
    def families(self) -> tuple[str, ...]:
        hits = {"extraction": self.extracted, "exposure": self.exposed, "membership": bool(self.flagged_by)}
        return tuple(f for f in FAMILIES if hits[f])

    @property
    def leaks(self) -> bool:
        return bool(self.families)

    @property
    def has_signal(self) -> bool:
        """Whether anything ranks it: an extraction, an exposure or a membership rank."""
        return self.extracted or self.exposure is not None or self.rank is not None

    @property
    def risk(self) -> tuple:
        """Sorts riskiest last: extracted, then exposed by exposure, then by membership rank."""
        rank = -self.rank if self.rank is not None else -2.0
        return (self.extracted, self.exposed, self.exposure if self.exposed else 0.0, rank, self.exposure or 0.0)


@dataclass(frozen=True)
class RunTriage:
    """One model's records: the thresholds they were judged by, and every member's assessment."""

    label: str
    thresholds: dict[str, float]  # attack -> the score a member must exceed (1% false positives)
    nonmembers: dict[str, int]  # attack -> how many non-member scores set it
    chance: dict[str, float]  # attack -> the chance that a record of a model that leaks nothing exceeds it
    union_fpr: float | None  # the share of non-members that some attack flags: the false-positive rate of "any"
    records: list[Assessment]  # every member record, in the document's order
    tripped: frozenset[str]  # families a gate of which tripped for this model

    @property
    def leaking(self) -> list[Assessment]:
        return [a for a in self.records if a.leaks]

    def counts(self) -> dict[str, int]:
        """Leaking records per family (a record may count in several), and `records`: all of them."""
        return {f: sum(f in a.families for a in self.records) for f in FAMILIES} | {"records": len(self.leaking)}


@dataclass(frozen=True)
class RiskyRecord:
    """A record of the riskiest list: its row (from the first model that has it) and each model's assessment."""

    row: dict
    by: dict[str, Assessment] = field(default_factory=dict)

    @property
    def risk(self) -> tuple:
        return max(a.risk for a in self.by.values())


@dataclass(frozen=True)
class Triage:
    """Every model's records judged by the same rules."""

    exposure_bits: float
    exposure_source: str
    runs: list[RunTriage]

    def riskiest(self, n: int = RISKIEST) -> list[RiskyRecord]:
        """The n riskiest member records (joined on doc_id across models), each ranked by the model
        where it is riskiest; records nothing ranks (no extraction verdict, exposure or membership
        score) are left out."""
        table: dict[object, RiskyRecord] = {}
        for run in self.runs:
            for a in run.records:
                if a.has_signal:
                    table.setdefault(a.row["doc_id"], RiskyRecord(a.row)).by[run.label] = a
        ordered = sorted(table.values(), key=lambda r: r.risk, reverse=True)  # stable: ties keep the document's order
        return ordered[:n]


def _scores(rows: list[dict], attacks: list[str]) -> dict[str, list[float]]:
    return {a: [s for r in rows if (s := _number(r.get(f"mia_{a}"))) is not None] for a in attacks}


def _run_triage(run: dict, exposure_bits: float, tripped: frozenset[str]) -> RunTriage:
    rows = run.get("sequences", [])
    text = [r for r in rows if r.get("kind") != "canary"]
    attacks = list(dict.fromkeys(k.removeprefix("mia_") for r in text for k in r if k.startswith("mia_")))
    held = {a: sorted(s) for a, s in _scores([r for r in text if not r.get("member")], attacks).items() if s}
    thresholds = {a: membership_threshold(s) for a, s in held.items()}
    records = []
    for row in rows:
        if not row.get("member"):
            continue
        canary = row.get("kind") == "canary"
        exposure = _number(row.get("exposure")) if canary else None
        scores = {} if canary else {a: s for a in held if (s := _number(row.get(f"mia_{a}"))) is not None}
        shares = {a: (len(held[a]) - bisect_left(held[a], s)) / len(held[a]) for a, s in scores.items()}
        best = min(shares, key=lambda a: shares[a]) if shares else None
        records.append(
            Assessment(
                model=run["label"],
                row=row,
                extracted=row.get("exact") is True,
                exposure=exposure,
                exposed=exposure is not None and exposure > exposure_bits,
                flagged_by=tuple(a for a, s in scores.items() if s > thresholds[a]),
                scores=scores,
                rank=shares[best] if best is not None else None,
                rank_attack=best,
            )
        )
    nonmembers = [r for r in text if not r.get("member")]
    judged = [r for r in nonmembers if any(_number(r.get(f"mia_{a}")) is not None for a in thresholds)]
    flagged = sum(any((_number(r.get(f"mia_{a}")) or -math.inf) > t for a, t in thresholds.items()) for r in judged)
    return RunTriage(
        label=run["label"],
        thresholds=thresholds,
        nonmembers={a: len(s) for a, s in held.items()},
        chance={a: chance_rate(len(s)) for a, s in held.items()},
        union_fpr=flagged / len(judged) if judged else None,
        records=records,
        tripped=tripped,
    )


def triage(doc: dict) -> Triage:
    """Every model's member records of a results document, judged by the rules of this module;
    the gates recorded in the document (`gates`) set the exposure threshold and which families
    tripped."""
    gates = doc.get("gates") or []
    bits, source = exposure_threshold(gates)
    tripped: dict[str, set[str]] = {}
    for g in gates:
        m = _METRIC.match(g["expr"].strip())
        family = gate_family(m.group(0)) if m else None
        if family is not None and not g["passed"]:
            tripped.setdefault(g["model"], set()).add(family)
    return Triage(bits, source, [_run_triage(run, bits, frozenset(tripped.get(run["label"], ()))) for run in runs(doc)])
