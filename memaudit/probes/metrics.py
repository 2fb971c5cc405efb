"""Per-sequence probe results, and their aggregation into the registry's metrics. A row holds what
the scoring pass's per-token arrays say about one audited sequence (extraction verdicts at every
prefix, membership scores, loss), with no model calls; canary exposure, which needs candidate
texts scored, arrives per canary from exposure.py. What each metric computes from the rows is
the registry's (registry.py, documented in docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Sequence

from memaudit.corpus.sources import SOURCE_KEYS
from memaudit.probes.config import ScanConfig
from memaudit.probes.extraction import extraction_verdicts
from memaudit.probes.inputs import MetricInputs
from memaudit.probes.membership import attack_scores
from memaudit.probes.registry import at_prefix, compute_all
from memaudit.probes.scoring import ScoredSequence


def sequence_row(
    row: dict,
    tokens: list[int],
    scored: ScoredSequence,
    cfg: ScanConfig,
    tok,
    *,
    ref_loss: float | None = None,
    exposure: float | None = None,
    truncated: bool = False,
    frequencies=None,
    more_scores: dict[str, float] | None = None,
) -> dict:
    """One audited sequence's results: loss, extraction verdicts at the headline prefix (plain
    keys) and at each other sweep prefix (`exact@P8` ...), membership scores `mia_<attack>`
    (higher = more member-like, for ROC curves), and `exposure` for canaries.

    `ref_loss`: the reference model's mean NLL on the same text (its `loss`), for `mia_ref`.
    `truncated`: the text was cut to the context, so zlib compresses the decoded scored tokens, not
    the whole text. `frequencies`: DC-PDD's smoothed probability per token id, for `mia_dcpdd`.
    `more_scores`: the scores of the attacks that need more than this pass (recall, gradnorm, rmia)."""
    out = {
        "doc_id": row["doc_id"],
        **{k: row[k] for k in SOURCE_KEYS if k in row},  # where the record is: its file and line, for triage
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
    text = tok.decode(tokens[1:]) if truncated else row["text"]  # the text that was scored
    dcpdd = dict(tokens=tokens[1:], frequencies=frequencies, dcpdd_a=cfg.dcpdd_a)
    scores = attack_scores(scored, text, cfg.mink_k, cfg.mia_attacks, ref_loss, **dcpdd)
    scores |= {a: v for a, v in (more_scores or {}).items() if a in cfg.mia_attacks}
    out |= {f"mia_{attack}": v for attack in cfg.mia_attacks if (v := scores.get(attack)) is not None}
    if exposure is not None:
        out["exposure"] = exposure
    return out


def compute_metrics(
    seqs: list[dict],
    valid: Sequence[ScoredSequence],
    cfg: ScanConfig,
    *,
    reference: dict | None = None,
    standard: dict | None = None,
    before: dict | None = None,
    attack: dict | None = None,
) -> dict:
    """The registry's metrics from per-sequence rows; `by_repeats["0"]` is the held-out baseline.

    `reference`: the results document of a reference model scanned on the same audit set (a
    model never trained on the members, or the pre-unlearning model): adds forgetting,
    privleak and degradation. `standard`: the standard model's results document: adds
    gap_closed. `before` (the same model before `attack`, memaudit stress) with `standard`:
    adds the robustness metrics. Levels or attacks with no rows are left out, never NaN."""
    others = {"reference": reference, "retrained": reference, "standard": standard, "before": before}
    inputs = MetricInputs(
        rows=seqs,
        valid=[(float(-s.logp.sum()), len(s)) for s in valid],
        config=cfg,
        others={role: doc["metrics"] for role, doc in others.items() if doc is not None},
        attack=attack,
    )
    return compute_all(inputs)
