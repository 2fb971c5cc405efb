"""The metric registry as a reader sees it: `memaudit metrics` (a table in the terminal, or
Markdown) and docs/metrics.md, which is that Markdown committed (`python scripts/gen_metrics_doc.py`
rewrites it; a test keeps the two equal). Everything per metric comes from registry.py; the
prose here explains what the groups and conventions mean."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memaudit.common.errors import MemauditError
from memaudit.common.validation import did_you_mean
from memaudit.probes.config import ATTACKS, DEFAULT_ATTACKS
from memaudit.probes.registry import ABSENT_ATTACKS, AGAINST, ATTACK_DOCS, GROUPS, MIN_NONMEMBERS, Metric, listed

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
            hint = did_you_mean(group, GROUPS, n=1, cutoff=0.4)
            raise MemauditError(
                f"unknown metric group {group!r}; {hint + ' ' if hint else ''}groups: {', '.join(GROUPS)}"
            )
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
        if group == "privacy":
            blocks.append(attacks_markdown())
    return "\n".join(blocks)


def attacks_markdown() -> str:
    """The membership attacks section of docs/metrics.md: each attack's score, parameters, inputs,
    suites and source (registry.ATTACK_DOCS), the attacks left out and the low-FPR warning."""
    default = ", ".join(f"`{a}`" for a in DEFAULT_ATTACKS)
    extra = ", ".join(f"`{a}`" for a in ATTACKS if a not in DEFAULT_ATTACKS)
    few = " and ".join(f"{n:,} for {label}" for label, n in MIN_NONMEMBERS.items())
    lines = [
        "### Membership attacks",
        "",
        "`privacy.mia.<attack>.*` for each attack below; every score is oriented so that higher means more",
        "member-like, and `sequences.csv` holds it per text as `mia_<attack>` (the ROC chart is drawn from these).",
        "n is the number of text tokens, NLL_i = -log p_i the negative log-likelihood of the i-th, predicted",
        "from the boundary token and the text before it. The suites `default` and `ci` (`mia_attacks`) run",
        f"{default}:",
        "everything that comes out of the one scoring pass, `ref` and `rmia` only when their models are given;",
        f"`full` adds {extra}, which need a pass of their own. A suite may list any of them.",
        "",
        "Each `tpr@<x>%fpr` entry measured on fewer non-members than about 1 / FPR",
        f"({few}) carries a `note` saying so, and every view warns: with so few, the",
        "threshold is set by the single highest non-member score (or none), and the rate means little.",
        "",
    ]
    for name in ATTACKS:
        d = ATTACK_DOCS[name]
        lines += [
            f"- **`{name}`**: {d.meaning}.",
            f"  - score: {d.score}.",
            f"  - parameters: {d.parameters}; reads: {d.inputs}; runs in: {d.runs}.",
            *([f"  - source: {d.source}"] if d.source else []),
        ]
    lines += [
        "",
        "**Token-frequency files** (`--frequencies FILE`, for `dcpdd`): one JSON object",
        '`{"format": "memaudit-token-frequencies", "version": 1, "tokenizer": {"vocab_size": V, "vocab_sha256": H},',
        '"documents": D, "source": "...", "counts": [c_0, ..., c_{V-1}]}`, where `counts[i]` is how often token id i',
        "occurs in the corpus (each text tokenized without special tokens or truncation) and H is",
        "`memaudit.probes.frequencies.vocab_sha256(tokenizer)`; a file of another tokenizer is refused.",
        "`memaudit.write_frequencies(memaudit.count_frequencies(tokenizer, texts), path)` writes one.",
        "",
        "**Checked against MIMIR** (`benchmarks/mimir_peer_check.py --mimir PATH`, figures in docs/results.md):",
        "MIMIR's own attack code, given memaudit's token ids (boundary token first), gives the same per-text",
        "scores as `loss`, `zlib`, `mink`, `minkpp`, `dcpdd`, `recall` and `gradnorm` up to float error (relative",
        "differences at most about 1e-5, Spearman 1.0). MIMIR's values are the negatives of memaudit's for all",
        "but `gradnorm` (MIMIR returns the mean NLL, -Min-K%, -DC-PDD and a negative ReCaLL ratio, lower =",
        "member); its `-||g||` is memaudit's `gradnorm` as it is. The deliberate differences, each with its",
        "effect on AUC in docs/results.md:",
        "- first token: MIMIR scores the text as its tokenizer gives it, with no boundary token, so the first",
        "  text token is never scored; memaudit predicts it from the boundary token, as the model saw documents",
        "  in training (AUC moves by under 0.01 on the check's model);",
        "- ReCaLL's prefix: MIMIR joins whole non-member texts as strings (no boundary between them), keeps as",
        "  many as fit beside the average text, scores the text's first token only under the prefix, and cuts",
        "  a longer input into non-overlapping windows; memaudit fills the context beside the longest text with",
        "  boundary-joined documents and scores the same tokens with and without the prefix;",
        "- DC-PDD's smoothing is MIMIR's (Laplace, (c + 1) / (sum c + V)); only the corpus differs (a local one",
        "  instead of 15 C4 shards);",
        "- GradNorm's p-norm: p = 2 as OpenUnlearning; MIMIR's default is p = inf;",
        "- GradNorm's orientation: MIMIR returns -||g|| and its ROC negates every score again, so it ranks a",
        "  LARGER gradient as member: its AUC is 1 - memaudit's at p = 2. memaudit follows OpenUnlearning and",
        "  the reasoning of the attack (a trained-on text sits near a minimum of the loss);",
        "- `zlib_total` is not MIMIR's zlib (total NLL, not mean, over the zlib bytes); `zlib` is.",
        "",
        "**Not here**:",
        *[f"- **{name}**: {why}" for name, why in ABSENT_ATTACKS.items()],
        "",
    ]
    return "\n".join(lines)


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
