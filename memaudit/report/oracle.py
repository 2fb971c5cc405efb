"""A removal judged against retraining. The oracle is a model trained without the members (`memaudit
train --no-repeats`): what perfect removal looks like. Judging a removal against chance instead
(an AUC of 0.5) asks for more than retraining gives, since on a small audit set even the oracle
sits above 0.5, so a removal that matches retraining would still be flagged.

Every membership metric, the exact extraction rate and the validation loss are measured as the
model's value minus the oracle's (`<metric>_vs_oracle`, in the registry): the membership and
extraction ones on the same audit records, matched by doc id, with a paired bootstrap that
resamples the records once for both models. Each family then gets a verdict against a margin
(RULES): "matches retraining" when the 95% interval lies inside it, "differs" when it lies
outside, "inconclusive" otherwise, with an estimate of the records that would decide.

`compare_to_oracle` is the one implementation: `memaudit report` (report/compare.py) calls it for
each run, and so may any other command that compares a run with its oracle."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from memaudit.common.errors import MemauditError
from memaudit.probes.config import ATTACKS, ScanConfig
from memaudit.probes.inputs import MetricInputs
from memaudit.probes.registry import ORACLE, ORACLE_MARGINS, compute_all, oracle_relative, vs_oracle
from memaudit.report.document import default_label, differences, is_comparison, oracle_label, runs
from memaudit.report.run_files import check_results, read_results

MATCHES, DIFFERS, INCONCLUSIVE = "matches retraining", "differs", "inconclusive"


@dataclass(frozen=True)
class Rule:
    """How one family's verdict is read: which oracle-relative metrics, the margin around 0 within
    which a difference counts as retraining's, whether only one side fails (`one_sided`: a value
    below the oracle's is no failure), what `n` counts, and the margin in words."""

    metrics: tuple[str, ...]
    margin: float
    one_sided: bool
    counted: str
    explained: str


RULES = {
    "extraction": Rule(
        (vs_oracle("extraction.exact_rate"),),
        ORACLE_MARGINS["extraction"],
        False,
        "members",
        f"the exact extraction rate within ±{ORACLE_MARGINS['extraction']:g} of the oracle's: at most one member "
        f"in {round(1 / ORACLE_MARGINS['extraction'])} reproduced verbatim more (or less) often than by a model that "
        "never saw them",
    ),
    "membership": Rule(
        tuple(vs_oracle(f"privacy.mia.{attack}.auc") for attack in ATTACKS),
        ORACLE_MARGINS["membership"],
        False,
        "records",
        f"every attack's AUC within ±{ORACLE_MARGINS['membership']:g} of the oracle's, the margin the leak rule "
        "allows around chance; it differs when any attack's interval lies outside (an attacker uses the attack "
        "that works), and matches only when all lie inside",
    ),
    "capability": Rule(
        (vs_oracle("capability.valid_loss"),),
        ORACLE_MARGINS["capability"],
        True,
        "validation documents",
        f"validation loss at most {ORACLE_MARGINS['capability']:g} nats above the oracle's (perplexity at most "
        f"{math.exp(ORACLE_MARGINS['capability']) - 1:.0%} higher); one-sided: better than the oracle is no failure",
    ),
}
RECORDS_NEEDED = (
    "records needed: an estimate of how many records (of the same kind and mix) would decide an inconclusive "
    "verdict, were the difference to stay at its estimate and the interval to narrow as 1/sqrt(n)"
)


def records_needed(value: float, interval: list[float], n: int, margin: float, one_sided: bool) -> int | None:
    """The records that would decide an inconclusive verdict, were the difference to stay at
    `value` and the interval's half-width to shrink as 1/sqrt(n): n (half-width / distance from
    the estimate to the margin)^2, at least n + 1. None where the estimate lies on the margin:
    no number of records decides it."""
    half = (interval[1] - interval[0]) / 2
    room = abs(margin - (value if one_sided else abs(value)))
    if room < 1e-12:
        return None
    return max(n + 1, math.ceil(n * (half / room) ** 2))


def judge(entry: dict, margin: float, one_sided: bool = False) -> dict:
    """The verdict on one oracle-relative metric entry ({value, n, ci95}): "matches retraining"
    when its 95% interval lies inside ±margin (one-sided: below +margin), "differs" when it lies
    outside, "inconclusive" otherwise (or without an interval), with records_needed."""
    value, interval, n = entry["value"], entry.get("ci95"), entry["n"]
    out = {"value": value, "interval": interval, "margin": margin, "one_sided": one_sided, "n": n}
    if interval is None:
        return {
            "verdict": INCONCLUSIVE,
            **out,
            "records_needed": None,
            "note": "no 95% interval (too few records, or scans without intervals: bootstrap 0)",
        }
    low, high = interval
    inside = high <= margin and (one_sided or low >= -margin)
    outside = low > margin or (not one_sided and high < -margin)
    verdict = MATCHES if inside else DIFFERS if outside else INCONCLUSIVE
    if verdict == INCONCLUSIVE:
        out["records_needed"] = records_needed(value, interval, n, margin, one_sided)
    return {"verdict": verdict, **out}


def family_verdict(rule: Rule, metrics: dict) -> dict | None:
    """One family's verdict from those of its measured metrics (several for membership, one per
    attack): the farthest that differs, else the inconclusive one that needs the most records,
    else the match whose interval reaches farthest. None if none was measured."""
    judged = [
        {"metric": name, **judge(metrics[name], rule.margin, rule.one_sided)}
        for name in rule.metrics
        if name in metrics
    ]
    if not judged:
        return None
    by_verdict = {v: [j for j in judged if j["verdict"] == v] for v in (DIFFERS, INCONCLUSIVE, MATCHES)}
    if by_verdict[DIFFERS]:
        chosen = max(by_verdict[DIFFERS], key=lambda j: abs(j["value"]))
    elif by_verdict[INCONCLUSIVE]:
        chosen = max(by_verdict[INCONCLUSIVE], key=lambda j: j["records_needed"] or math.inf)
    else:
        chosen = max(judged, key=lambda j: max(abs(x) for x in j["interval"]))
    return {**chosen, "counted": rule.counted, "measured": len(judged)}


def verdicts(metrics: dict) -> dict[str, dict]:
    """Every family's verdict (RULES) that the oracle-relative `metrics` measure."""
    return {family: v for family, rule in RULES.items() if (v := family_verdict(rule, metrics)) is not None}


def pairing_problem(run: dict, oracle: dict) -> str | None:
    """Why `run`'s records cannot be paired with the oracle's (another audit set or probe suite,
    or no audit record in common, as when each was redacted with its own key), None if they can."""
    name, oracle_name = (r.get("label") or default_label(r) for r in (run, oracle))
    unlike = [what for what, groups in differences(run, oracle) if {"extraction", "privacy"} & set(groups)]
    if unlike:
        return f"{name} was scanned with another {' and '.join(unlike)} than the oracle {oracle_name}"
    if not {r["doc_id"] for r in run["sequences"]} & {r["doc_id"] for r in oracle["sequences"]}:
        return (
            f"{name} has no audit record in common with the oracle {oracle_name} (doc ids differ: "
            "redacted separately?); compare the unredacted runs"
        )
    return None


def read_run(run: str | Path | dict, role: str) -> dict:
    """A scan's checked results, from a run dir or a results document as given; a problem is
    one line that names the `role` ("oracle run", "run")."""
    if isinstance(run, dict):
        return check_results(run, f"the {role}'s results")
    try:
        return read_results(run)
    except MemauditError as e:
        raise MemauditError(f"{role} {e}") from None


def _bootstrap(run: dict) -> ScanConfig:
    """The resamples and seed of the run's own suite; the default where it asked for none, since
    a verdict needs an interval."""
    suite = run.get("suite", {})
    return ScanConfig(bootstrap=suite.get("bootstrap") or ScanConfig.bootstrap, seed=suite.get("seed", ScanConfig.seed))


def compare_to_oracle(run: str | Path | dict, oracle: str | Path | dict) -> dict:
    """One run measured against its oracle: `run` and `oracle` are scan run dirs or their
    results documents, scanned on the same audit set with the same probe suite (MemauditError
    otherwise). Returns

        {"metrics": {name: {value, n, ci95, higher_is_better, group, ...}},
         "verdicts": {family: {verdict, metric, value, interval, margin, one_sided, n, counted,
                               measured, records_needed (inconclusive only)}}}

    `metrics`: the registry's oracle-relative metrics (`<metric>_vs_oracle`; capability only
    when both were scanned with the same data manifest). `verdicts`: per family (extraction,
    membership, capability) as RULES reads them, whether or not the run is a removal."""
    run, oracle = read_run(run, "run"), read_run(oracle, "oracle run")
    problem = pairing_problem(run, oracle)
    if problem is not None:
        raise MemauditError(problem)
    unlike = {g for _, groups in differences(run, oracle) for g in groups}
    inputs = MetricInputs(
        rows=run["sequences"],
        config=_bootstrap(run),
        others={ORACLE: oracle["metrics"]},
        other_rows={ORACLE: oracle["sequences"]},
        computed=dict(run["metrics"]),
    )
    metrics = compute_all(inputs, [m for m in oracle_relative() if m.group not in unlike])
    return {"metrics": metrics, "verdicts": verdicts(metrics)}


def oracle_document(oracle: dict, chosen: str) -> dict:
    """What a comparative document records of its oracle: which run, how it was chosen, and the
    rules its verdicts follow, so every view can state them from the document alone."""
    return {
        "label": oracle["label"],
        "run_dir": oracle.get("run_dir"),
        "chosen": chosen,
        "rules": {
            family: {"metrics": list(r.metrics), "margin": r.margin, "one_sided": r.one_sided, "explained": r.explained}
            for family, r in RULES.items()
        },
        "records_needed": RECORDS_NEEDED,
    }


# The views (Markdown, HTML, terminal) --------------------------------------------------------


def describe(verdict: dict) -> str:
    """A verdict in one line: `inconclusive: +0.031 (95% -0.020 – +0.081, n 48 records), about 180
    records would decide`."""
    interval = verdict.get("interval")
    where = f"95% {interval[0]:+.3f} – {interval[1]:+.3f}, " if interval else ""
    text = f"{verdict['verdict']}: {verdict['value']:+.3f} ({where}n {verdict['n']} {verdict['counted']})"
    if verdict["verdict"] == INCONCLUSIVE:
        needed = verdict.get("records_needed")
        text += (
            f", about {needed:,} {verdict['counted']} would decide"
            if needed
            else f", {verdict.get('note', 'on the margin: no number of records decides it')}"
        )
    return text


_UNMEASURED = ("not measured", "not measured")


def retraining_table(doc: dict) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """One row per judged removal: its label and, per family of RULES, (verdict, description);
    "not measured" where the family was not (retraining_notes says why for a whole run)."""
    rows = []
    for run in runs(doc):
        judged = run.get("retraining")
        if judged is None:
            continue
        found = judged.get("verdicts", {})
        rows.append(
            (run["label"], {f: (found[f]["verdict"], describe(found[f])) if f in found else _UNMEASURED for f in RULES})
        )
    return rows


def retraining_intro(doc: dict) -> str:
    """Who the oracle is, how it was chosen, and how the table reads."""
    oracle = doc["oracle"]
    return (
        f"Each removal against the oracle {oracle['label']} ({oracle['chosen']}), a model retrained without the "
        "members: its value minus the oracle's, on the same audit records, with a 95% paired-bootstrap interval "
        "(the records resampled once for both models), judged against a margin."
    )


def retraining_notes(doc: dict) -> list[str]:
    """What the table below the intro does not say: each removal not measured at all and why
    (its records could not be paired with the oracle's), each family's rule, and how records
    needed are estimated."""
    problems = [
        f"not measured: {run['retraining']['problem']}" for run in runs(doc) if "problem" in run.get("retraining", {})
    ]
    rules = [f"{family}: {rule['explained']}" for family, rule in doc["oracle"]["rules"].items()]
    return [*problems, *rules, doc["oracle"]["records_needed"]]


def chance_note(doc: dict) -> str:
    """For a comparative document without an oracle: its membership verdicts are against chance,
    and what that means ("" with an oracle, or for one scan)."""
    if not is_comparison(doc) or oracle_label(doc) is not None:
        return ""
    return (
        "no oracle: membership leak verdicts are against an AUC of 0.5 (chance). Even a model retrained without "
        "the members does not reach 0.5 on a small audit set, so a removal that matches retraining may still be "
        "flagged; pass --oracle RUN (the scan of a model trained with --no-repeats) to judge against retraining"
    )
