"""Per-sequence probe results and their aggregation into the registry's metrics. Everything
here is computed from the scoring pass's per-token arrays (METRICS.md), with no model calls;
canary exposure, which needs candidate texts scored, arrives per canary from exposure.py."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from memaudit.errors import MemauditError
from memaudit.probes.extraction import extraction_verdicts
from memaudit.probes.membership import attack_scores, auc, tpr_at_fpr
from memaudit.probes.registry import ATTACKS, FPR_LEVELS, at_prefix, get_metric
from memaudit.probes.scoring import TOPK, ScoredSequence
from memaudit.probes.stats import mean, summarize

# extraction metric -> the sequence-row key it averages
EXTRACTION = {
    "extraction.exact_rate": "exact",
    "extraction.token_match": "token_match",
    "extraction.prefix_match_len": "prefix_match_len",
    "extraction.strength": "strength",
    "extraction.np_discoverable": "np_discoverable",
}


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
        rules = [
            ("prefix_len", self.prefix_len >= 1, ">= 1"),
            ("suffix_len", self.suffix_len >= 1, ">= 1"),
            ("prefix_lens", all(isinstance(p, int) and p >= 1 for p in self.prefix_lens), "positive integers"),
            ("np_n", self.np_n >= 1, ">= 1"),
            ("np_p", 0 < self.np_p <= 1, "in (0, 1]"),
            ("topk", self.topk >= 1, ">= 1"),
            ("mia_attacks", set(self.mia_attacks) <= set(ATTACKS), f"a subset of {', '.join(ATTACKS)}"),
            ("mink_k", 0 < self.mink_k <= 1, "in (0, 1]"),
            ("privleak_attack", self.privleak_attack in ATTACKS, f"one of {', '.join(ATTACKS)}"),
            ("exposure_candidates", self.exposure_candidates >= 0, ">= 0"),
            ("sampling_trials", self.sampling_trials >= 0, ">= 0"),
            ("bootstrap", self.bootstrap >= 0, ">= 0"),
            ("max_batch_tokens", self.max_batch_tokens >= 1, ">= 1"),
        ]
        for key, ok, rule in rules:
            if not ok:
                raise MemauditError(f"{key} must be {rule}, got {getattr(self, key)!r}")


def sequence_row(
    row: dict,
    tokens: list[int],
    scored: ScoredSequence,
    cfg: ScanConfig,
    tok,
    *,
    ref_loss: float | None = None,
    exposure: float | None = None,
) -> dict:
    """One audited sequence's results: loss, extraction verdicts at the headline prefix (plain
    keys) and at each other sweep prefix (`exact@P8` ...), membership scores `mia_<attack>`
    (higher = more member-like, for ROC curves), and `exposure` for canaries.

    `ref_loss`: the reference model's mean NLL on the same text (its `loss`), for `mia_ref`."""
    out = {
        "doc_id": row["doc_id"],
        "kind": row["kind"],
        "repeats": row["repeats"],
        "member": row["repeats"] > 0,
        "n_tokens": len(scored),
        "loss": float(-scored.logp.mean()),
    }
    p, s = cfg.prefix_len, cfg.suffix_len
    headline = extraction_verdicts(scored, p, s, cfg.np_n, cfg.np_p)
    if headline is not None:
        out |= headline
        # tokens[0] is the boundary token; text token j is tokens[j + 1]
        out |= {"prefix": tok.decode(tokens[1 : p + 1]), "suffix": tok.decode(tokens[p + 1 : p + s + 1])}
    for sweep_p in cfg.prefix_lens:
        verdicts = extraction_verdicts(scored, sweep_p, s, cfg.np_n, cfg.np_p) if sweep_p != p else None
        out |= {at_prefix(key, sweep_p): v for key, v in (verdicts or {}).items()}
    scores = attack_scores(scored, row["text"], cfg.mink_k, cfg.mia_attacks, ref_loss)
    out |= {f"mia_{attack}": v for attack, v in scores.items()}
    if exposure is not None:
        out["exposure"] = exposure
    return out


def _metric(name: str, summary: dict, by_repeats: dict | None = None) -> dict:
    m = get_metric(name)
    out = {**summary, "higher_is_better": m.higher_is_better, "group": m.group}
    if m.ideal is not None:
        out["ideal"] = m.ideal
    if by_repeats:
        out["by_repeats"] = by_repeats
    return out


def relative_to_reference(name: str, entry: dict, ref: dict, f: Callable[[float, float], float]) -> dict:
    """`name` = f(this model's metric, the reference's same metric), level by level. The
    reference is held fixed: the interval is this model's interval mapped through f."""

    def one(e: dict, r: dict) -> dict:
        out = {"value": f(e["value"], r["value"]), "n": e["n"]}
        if "ci95" in e:
            out["ci95"] = sorted(f(x, r["value"]) for x in e["ci95"])
        return out

    ref_levels = ref.get("by_repeats", {})
    levels = {lv: one(e, ref_levels[lv]) for lv, e in entry.get("by_repeats", {}).items() if lv in ref_levels}
    return _metric(name, one(entry, ref), {lv: v for lv, v in levels.items() if math.isfinite(v["value"])})


def forgetting_and_degradation(metrics: dict, reference: dict) -> dict:
    """Member loss and validation loss against a reference model's (METRICS.md): how much was
    forgotten, and what it cost."""
    pairs = {"memorization.forgetting": "memorization.member_loss", "capability.degradation": "capability.valid_loss"}
    return {
        name: relative_to_reference(name, metrics[base], reference[base], lambda v, r: v - r)
        for name, base in pairs.items()
        if base in metrics and base in reference
    }


def gap_closed(metrics: dict, standard: dict) -> dict:
    """The fraction of the standard model's member/non-member loss gap this model removes."""
    member, nonmember = "memorization.member_loss", "memorization.nonmember_loss"
    if member not in metrics or member not in standard or nonmember not in standard:
        return {}
    std_nonmember = standard[nonmember]["value"]
    closed = lambda v, r: (v - r) / (std_nonmember - r) if std_nonmember != r else math.nan  # noqa: E731
    return {
        "memorization.gap_closed": relative_to_reference(
            "memorization.gap_closed", metrics[member], standard[member], closed
        )
    }


def compute_metrics(
    seqs: list[dict],
    valid: list[ScoredSequence],
    cfg: ScanConfig,
    *,
    reference: dict | None = None,
    standard: dict | None = None,
) -> dict:
    """The registry's metrics from per-sequence rows; `by_repeats["0"]` is the held-out baseline.

    `reference`: the results document of a reference model scanned on the same audit set (a
    model never trained on the members, or the pre-unlearning model): adds forgetting,
    privleak and degradation. `standard`: the standard model's results document: adds
    gap_closed. Levels or attacks with no rows are left out, never reported as NaN."""
    text = [r for r in seqs if r["kind"] != "canary"]
    members = [r for r in text if r["member"]]
    nonmembers = [r for r in text if not r["member"]]
    levels = sorted({r["repeats"] for r in text})
    boot = dict(n_boot=cfg.bootstrap, seed=cfg.seed)

    def values(rows: list[dict], key: str) -> np.ndarray:
        return np.array([float(r[key]) for r in rows if key in r])

    def at_level(rows: list[dict], level: int) -> list[dict]:
        return [r for r in rows if r["repeats"] == level]

    def mean_metric(name: str, key: str, rows: list[dict], by_level: bool = True) -> dict:
        """The mean over `rows` as the headline, and over every text row of each level."""
        split = {str(lv): values(at_level(text, lv), key) for lv in levels} if by_level else {}
        return _metric(
            name,
            summarize([values(rows, key)], mean, **boot),
            {lv: summarize([v], mean, **boot) for lv, v in split.items() if len(v)},
        )

    metrics = {
        "memorization.member_loss": mean_metric("memorization.member_loss", "loss", members),
        "memorization.nonmember_loss": mean_metric("memorization.nonmember_loss", "loss", nonmembers, by_level=False),
    }
    gap = lambda non, mem: mean(non) - mean(mem)  # noqa: E731
    gap_levels = {
        str(lv): summarize([values(nonmembers, "loss"), values(at_level(members, lv), "loss")], gap, **boot)
        for lv in levels
        if lv > 0
    }
    metrics["memorization.loss_gap"] = _metric(
        "memorization.loss_gap",
        summarize([values(nonmembers, "loss"), values(members, "loss")], gap, **boot),
        gap_levels,
    )
    if standard is not None:
        metrics |= gap_closed(metrics, standard["metrics"])

    for name, key in EXTRACTION.items():
        metrics[name] = mean_metric(name, key, members)
    if any("sampled_exact" in r for r in members):
        metrics["extraction.sampling_rate"] = mean_metric("extraction.sampling_rate", "sampled_exact", members)
    for p in cfg.prefix_lens:
        if p != cfg.prefix_len and any(at_prefix("exact", p) in r for r in text):
            for name, key in EXTRACTION.items():
                metrics[at_prefix(name, p)] = mean_metric(at_prefix(name, p), at_prefix(key, p), members)

    member_levels = sorted({r["repeats"] for r in members})
    for attack in cfg.mia_attacks:
        key = f"mia_{attack}"
        pos, neg = values(members, key), values(nonmembers, key)
        if not len(pos) or not len(neg):
            continue  # `ref` without a reference
        stats = {f"privacy.mia.{attack}.auc": auc} | {
            f"privacy.mia.{attack}.tpr@{label}fpr": partial(tpr_at_fpr, fpr=fpr) for label, fpr in FPR_LEVELS.items()
        }
        for name, stat in stats.items():
            metrics[name] = _metric(
                name,
                summarize([pos, neg], stat, **boot),
                {str(lv): summarize([values(at_level(members, lv), key), neg], stat, **boot) for lv in member_levels},
            )
    privleak_auc = f"privacy.mia.{cfg.privleak_attack}.auc"
    if reference is not None and privleak_auc in metrics and privleak_auc in reference["metrics"]:
        metrics["privacy.privleak"] = relative_to_reference(
            "privacy.privleak",
            metrics[privleak_auc],
            reference["metrics"][privleak_auc],
            lambda v, r: (v - r) / r * 100,
        )

    canaries = [r for r in seqs if r["kind"] == "canary" and "exposure" in r]
    if canaries:
        metrics["privacy.exposure"] = _metric(
            "privacy.exposure",
            summarize([values([r for r in canaries if r["member"]], "exposure")], mean, **boot),
            {
                str(lv): summarize([values(at_level(canaries, lv), "exposure")], mean, **boot)
                for lv in sorted({r["repeats"] for r in canaries})
            },
        )

    if valid:
        nll = [(-s.logp.sum(), len(s)) for s in valid]
        sums, counts = np.array([a for a, _ in nll]), np.array([b for _, b in nll])
        pooled = lambda idx: float(sums[idx.astype(int)].sum() / counts[idx.astype(int)].sum())  # noqa: E731
        loss = summarize([np.arange(len(valid))], pooled, **boot)
        metrics["capability.valid_loss"] = _metric("capability.valid_loss", loss)
        ppl = {**loss, "value": math.exp(loss["value"])}
        if "ci95" in loss:
            ppl["ci95"] = [math.exp(v) for v in loss["ci95"]]
        metrics["capability.valid_ppl"] = _metric("capability.valid_ppl", ppl)
    if reference is not None:
        metrics |= forgetting_and_degradation(metrics, reference["metrics"])
    return metrics
