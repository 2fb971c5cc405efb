"""The metric registry as a reader sees it: `memaudit metrics` (a table in the terminal, or
Markdown) and docs/metrics.md, which is that Markdown committed (`python scripts/gen_metrics_doc.py`
rewrites it; a test keeps the two equal). Everything per metric comes from registry.py; the
prose here explains what the groups and conventions mean."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memaudit.common.errors import MemauditError
from memaudit.probes.registry import AGAINST, GROUPS, Metric, listed

REGENERATE = "python scripts/gen_metrics_doc.py"

INTRO = f"""\
# Metrics

<!-- Generated from memaudit/probes/registry.py by `{REGENERATE}` (the same text as
`memaudit metrics --markdown`); edit the registry, not this file. -->

Every number memaudit reports is one of the metrics below, with a stable dotted name that gates
(`--fail-on`), suites and reports use. `memaudit metrics [--group GROUP]` lists them in a terminal.

## Reading a metric

- **Direction**: ↑ higher is better, ↓ lower is better, →x the closer to x the better, · no better
  side (a baseline, shown for context).
- **Entry**: each metric in `results.json` holds `value`, `n` (the rows it was computed from), `ci95`
  (a seeded percentile bootstrap, resampling each group of rows on its own: the same scan gives
  the same interval), `higher_is_better` (null when closer to `ideal` is better), `group`, `ideal`
  where one exists, and `by_repeats`: the same metric per repeat level, the number of times a
  sequence occurred in training. Level `0` is the held-out non-members (never-trained canaries for
  exposure): the baseline a member level has to be read against.
- **Headline**: the columns of every summary (terminal, HTML, Markdown). A headline with a leak
  rule decides whether the report says a model leaks.
- **Pareto axis**: the report's memorization-vs-capability view plots capability on x against each
  memorization axis on y and names the models no other model beats on both.
- **Relative** metrics compare the model with another one and are present only when that model is
  given; a comparative report recomputes those measured against "a reference model" or "the
  standard model" against its own reference.
- Levels, attacks or probes without rows are left out of a scan's metrics, never reported as NaN.
"""

GROUP_NOTES = {
    "memorization": """\
How much better the model predicts the texts planted in its training data (members) than texts
of the same kind and length it never saw. Loss is the mean negative log-likelihood per token, in
nats, each text scored whole from the boundary token.""",
    "extraction": """\
Each member is cut into a true prefix of P tokens and the S tokens after it (P = S = 32 by
default). Greedy decoding reproduces the suffix exactly when every suffix token is the argmax of
the model's prediction given the true text before it, so one teacher-forced scoring pass gives
these verdicts, for every prefix length at once, with no generation. The headline value counts
members only; level 0 is the same measurement on held-out texts (formulaic text is "extracted"
without being memorized). For (n, p)-discoverability, q is the product over the suffix of the true
token's probability renormalized within the top k tokens (0 outside them), and a member counts
when 1 - (1 - q)^n >= p. The sampling rate instead really samples `sampling_trials`
continuations per member (off unless the suite sets it).

`<metric>@P<n>` is the extraction sweep: the same metric from a prefix of n tokens, for each n of
the suite's `prefix_lens` other than its `prefix_len`.""",
    "privacy": """\
A membership-inference attack gives every text a score, oriented here so that higher always
means "more likely a member"; the AUC over members against held-out non-members is 0.5 when the
attack cannot tell them apart, whichever its usual sign. A true-positive rate at 1% or 0.1% false
positives asks whether some members are exposed with near certainty, which an average hides.
An AUC far *below* 0.5 is a leak too, which is why the leak rule is two-sided: over-unlearned
members stand out by their unusually high loss, and an attacker simply flips the score
(OpenUnlearning issue #167). The blind baseline asks the same question of the texts alone, with no
model (Das et al. 2024): where it beats 0.6, members and non-members differ in distribution, and
reports warn that membership AUCs may measure that shift rather than memorization.
A canary is a template sentence with a random secret (by default a 9-digit number). Its exposure
ranks the true secret, by the total NLL the model gives the whole sentence, among secrets sampled
from the same space R: log2 |R| - log2 rank bits, about 30 for a secret the model prefers to all
10^9 others. Ranks beyond the sample are extrapolated from a skew-normal fit to the sampled
scores.""",
    "capability": """\
What the model still does well: clean held-out text of the training distribution, each document
scored whole from its boundary token, tokens pooled over documents (the bootstrap resamples
whole documents).""",
    "robustness": """\
Whether a removal lasts (`memaudit stress`): the model is attacked after the removal, by weight
quantization (`quant:int8`, `quant:int4`: symmetric round-to-nearest, groups of 128 input columns,
every block projection) or a few steps of fine-tuning (`relearn:forget-half:STEPS` on half of the
members, measured on the other half; `relearn:retain:STEPS` on natural training text), and scanned
again. Gap closed is measured against the standard model on the rows the attacked model was
scanned on, before and after the attack; `<family>` is `quant_int8`, `quant_int4`,
`relearn_forget_half` or `relearn_retain`. These metrics are present only in the run dir of an
attacked model scanned with `--standard`; reports keep them as measured.""",
}


def check_groups(groups: Sequence[str]) -> tuple[str, ...]:
    """The groups asked for (all when none), or a MemauditError naming the closest group."""
    for group in groups:
        if group not in GROUPS:
            close = difflib.get_close_matches(group, GROUPS, n=1, cutoff=0.4)
            hint = f"did you mean {close[0]}? " if close else ""
            raise MemauditError(f"unknown metric group {group!r}; {hint}groups: {', '.join(GROUPS)}")
    return tuple(groups) or GROUPS


def role(m: Metric) -> str:
    """What a metric does beyond being listed: headline, leak rule, Pareto axis, what it needs."""
    parts = []
    if m.headline:
        where = " (at the top repeat level)" if m.headline.top_level else ""
        parts.append(f'headline "{m.headline.label}"{where}')
        if m.headline.leak:
            parts.append(f"leaks when {m.headline.leak.describe(m.higher_is_better)}")
    if m.pareto:
        parts.append(f"Pareto {m.pareto} axis")
    if m.against:
        parts.append(f"needs {AGAINST[m.against]}")
    return "; ".join(parts)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def metrics_markdown(groups: Sequence[str] = ()) -> str:
    """docs/metrics.md (for the given groups only, if any)."""
    blocks = [INTRO]
    for group in check_groups(groups):
        rows = [
            f"| `{_md(m.name)}` | {m.arrow} | {_md(m.meaning)} | {_md(role(m))} |" for m in listed() if m.group == group
        ]
        table = "\n".join(["| metric | dir | meaning | role |", "|---|---|---|---|", *rows])
        blocks.append(f"## {group.capitalize()}\n\n{GROUP_NOTES[group]}\n\n{table}\n")
    return "\n".join(blocks)


def print_metrics(groups: Sequence[str] = (), console: Console | None = None) -> None:
    """The registry as a terminal table (like `lm_eval ls`): names whole, so they can be copied
    into a gate; each metric's role in dim under its meaning."""
    table = Table(title="memaudit metrics (docs/metrics.md)", title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("dir", no_wrap=True)
    table.add_column("meaning")
    for group in check_groups(groups):
        table.add_section()
        table.add_row(f"[bold]{group}[/]", "", "")
        for m in listed():
            if m.group == group:
                text = escape(m.meaning) + (f"\n[dim]{escape(role(m))}[/]" if role(m) else "")
                table.add_row(escape(m.name), m.arrow, text)
    (console or Console()).print(table)
