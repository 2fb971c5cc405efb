"""The `memaudit` command line: thin click commands that parse, call the API, and print.
Bad input is one line on stderr and exit 2; a tripped gate is exit 1; never a traceback.

Defaults, choices and ranges come from the config dataclasses and registries (torch-free), and
each command builds its config (which checks itself) before it imports anything heavy, so a
refused command answers at once. docs/reliability.md states the whole contract."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import click

from memaudit.app.requests import ReportRequest, ScanRequest, report_and_write, scan_and_write
from memaudit.common.errors import MemauditError
from memaudit.common.precision import DEFAULT_PRECISION, PRECISIONS
from memaudit.common.validation import default_of
from memaudit.corpus.config import DEFAULT_VOCAB_SIZE, AuditConfig, ScanDataConfig
from memaudit.corpus.sources import parse_ids
from memaudit.memsinks.config import (
    DEFAULT_EVAL_MODE,
    EVAL_MODES,
    EXISTING_UNITS,
    ROUTE_SCOPES,
    ROUTES,
    SCHEMES,
    SINKS_FOR,
    SinkConfig,
)
from memaudit.models.checks import check_model_job
from memaudit.models.zoo import ZOO
from memaudit.probes.config import GROUPS
from memaudit.probes.suite import suite_names
from memaudit.stress.attacks import StressConfig
from memaudit.training.config import TrainConfig
from memaudit.unlearning.config import METHODS, AblateConfig, UnlearnConfig, defaults_text

EXIT_BAD_INPUT = 2
EXIT_GATE_TRIPPED = 1
_ATTACK_HELP = (
    "quant:int8 or quant:int4 (weight-only, symmetric, groups of 128), relearn:forget-half:STEPS (fine-tune on "
    "half of the members, measure the other half) or relearn:retain:STEPS (fine-tune on natural text). Repeatable."
)


def fail_on_options(command):
    """--fail-on and --junit, the same on `scan model` and `report`."""
    command = click.option(
        "--junit",
        type=click.Path(path_type=Path),
        help="Also write the --fail-on verdicts as JUnit XML (one testcase per gate and model).",
    )(command)
    return click.option(
        "--fail-on",
        "fail_on",
        multiple=True,
        metavar="EXPR",
        help="Exit 1 when EXPR holds for a model, e.g. 'extraction.exact_rate>0' or "
        "'extraction.exact_rate[64]>=0.5' (METRIC[REPEATS] OP NUMBER; docs/gates.md). Repeatable.",
    )(command)


def sarif_option(command):
    """--sarif, the same on `scan model` and `report`: the request writes the file."""
    return click.option(
        "--sarif",
        type=click.Path(path_type=Path),
        help="Also write the leaking audit records as SARIF 2.1.0 for code scanning: one result per record, at "
        "its file and line; errors where a --fail-on gate of its kind tripped (docs/gates.md).",
    )(command)


def finish_gates(verdicts: list, junit: Path | None) -> None:
    """Publish the --fail-on verdicts where CI looks (JUnit file, GitHub job summary), print
    them, and exit 1 if any tripped."""
    from memaudit.report.console import print_gates
    from memaudit.report.gate import publish_gates

    publish_gates(verdicts, junit)
    print_gates(verdicts)
    if any(not v.passed for v in verdicts):
        sys.exit(EXIT_GATE_TRIPPED)


def precision_options(command):
    """--precision (with --bf16/--fp32 kept as aliases) and --threads, the same on every command that computes."""
    command = click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="Torch threads for this process [default: all cores; cores / processes in a multi-process launch].",
    )(command)
    command = click.option("--bf16", "legacy_precision", flag_value="bf16", hidden=True)(command)
    command = click.option("--fp32", "legacy_precision", flag_value="fp32", hidden=True)(command)
    return click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default=DEFAULT_PRECISION,
        show_default=True,
        help="Compute precision. auto: bf16 only where the hardware runs it natively (a GPU with bf16, or a CPU "
        "whose bf16 a cached micro-benchmark shows faster than fp32), else fp32. --bf16/--fp32 are aliases.",
    )(command)


def pick_precision(precision: str, legacy_precision: str | None) -> str:
    """--precision, or the older --bf16/--fp32 spelling of it; both at once must agree."""
    if legacy_precision is None:
        return precision
    if precision not in (DEFAULT_PRECISION, legacy_precision):
        raise MemauditError(f"--{legacy_precision} contradicts --precision {precision}; give one of them")
    return legacy_precision


def _quiet_libraries() -> None:
    """Library chatter (weight-loading bars, pad-token notes) drowns memaudit's own output. Set
    through the environment and the logging module, read by each library when (and if) a
    command imports it: importing transformers here would cost every command seconds."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' own bars follow this too
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.getLogger("accelerate").setLevel(logging.ERROR)  # "Removed shared tensor" on every tied-weights save
    transformers = sys.modules.get("transformers")
    if transformers is not None:  # imported before this (a caller in the same process): too late for the environment
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()


def _refuse(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _as_flags(message: str, command: click.Command | None) -> str:
    """Library messages name settings by their field names: as the first word ("batch_size must
    be ...") or in backticks elsewhere ("min_tokens must be <= `max_tokens`"). On the command
    line, name the options instead ("--batch-size", "--max-tokens"); anything else is untouched."""
    flags = {
        p.name: max(p.opts, key=len)
        for p in (command.params if command is not None else ())
        if isinstance(p, click.Option) and not p.hidden
    }
    first, _, rest = message.partition(" ")
    message = f"{flags.get(first, first)} {rest}" if rest else message
    return re.sub(r"`(\w+)`", lambda m: flags.get(m[1], m[0]), message)


class MemauditGroup(click.Group):
    """Every refusal is one line on stderr and exit 2: memaudit's own errors and click's usage
    errors (a missing option, a value of the wrong type) alike."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            _refuse(f"{e.format_message()} (see `{where} --help`)")
        except MemauditError as e:
            name = ctx.invoked_subcommand
            _refuse(_as_flags(str(e), self.get_command(ctx, name) if name else None))


MemauditGroup.group_class = MemauditGroup  # `data` and `scan` refuse the same way


def parse_int_list(value: str, what: str) -> tuple[int, ...]:
    """Comma-separated integers, e.g. "1,8,32"; every item must be there ("1,,8" is refused)."""
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise MemauditError(f"{what} takes comma-separated integers like 1,8,32, got {value!r}") from None


def _default(config: type, name: str, **option) -> dict:
    """click settings for an option whose default is a config field's: shown in --help."""
    return {"default": default_of(config, name), "show_default": True, **option}


def _described(choices: dict[str, str]) -> str:
    """A registry of choices (name -> what it does) as --help text."""
    return "; ".join(f"{name}: {what}" for name, what in choices.items()) + "."


@click.group(cls=MemauditGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="memaudit")
def main() -> None:
    """Audit language models for verbatim memorization, and for how well it can be removed."""
    _quiet_libraries()


@main.group()
def data() -> None:
    """Build audit sets."""


@data.command("build")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Data dir to write.")
@click.option(
    "--corpus",
    **_default(AuditConfig, "corpus", help="Embedded corpus name or a local .jsonl/.txt/.parquet/.csv file."),
)
@click.option(
    "--repeats",
    default=",".join(map(str, default_of(AuditConfig, "repeats"))),
    show_default=True,
    help="Repeat levels to plant members at.",
)
@click.option("--members-per-level", **_default(AuditConfig, "members_per_level"))
@click.option("--canaries-per-level", **_default(AuditConfig, "canaries_per_level"))
@click.option("--n-valid", **_default(AuditConfig, "n_valid", help="Held-out validation documents (capability)."))
@click.option(
    "--n-natural", **_default(AuditConfig, "n_natural", help="Natural training documents (0: all that remain).")
)
@click.option(
    "--min-tokens", **_default(AuditConfig, "min_tokens", help="Shortest member/held-out document, in tokens.")
)
@click.option("--max-tokens", **_default(AuditConfig, "max_tokens"))
@click.option("--vocab-size", type=int, default=None, help=f"[default: {DEFAULT_VOCAB_SIZE}]")
@click.option("--seed", **_default(AuditConfig, "seed"))
@click.option(
    "--tokenizer",
    metavar="MODEL",
    help="Use this model's own tokenizer (model dir, GGUF file or hub id) instead of training one: "
    "for fine-tuning it with `train --init MODEL`.",
)
@click.option(
    "--id-field",
    metavar="FIELD",
    help="A field of the corpus rows (e.g. user_id; an integer or a string) whose owners share sinks: "
    "`remove-sinks --ids` then deletes by owner.",
)
@click.option(
    "--cluster-ids",
    is_flag=True,
    help="Key sinks on near-duplicate clusters (MinHash, as `scan data` finds them): the documents of a cluster, "
    "edited copies of one record, share one sink id.",
)
@click.option(
    "--cluster-threshold",
    **_default(AuditConfig, "cluster_threshold", help="With --cluster-ids: the clusters' Jaccard (word 5-grams)."),
)
@click.option(
    "--edit-rate",
    **_default(
        AuditConfig,
        "edit_rate",
        help="Write each repeat of a member after its first as a copy with this share of its words edited "
        "(deleted or replaced); the audit set scores the original.",
    ),
)
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def data_build(out: Path, corpus: str, repeats: str, n_natural: int, force: bool, **settings) -> None:
    """Split a corpus, plant repeated members and canaries, pick length-matched held-out
    non-members, train the tokenizer, and write DIR/{manifest.json,train,audit,valid.jsonl,tokenizer/}.

    \b
    \b
    Examples:
      memaudit data build --out data/austen --repeats 1,8,32,128
      memaudit data build --out data/near --edit-rate 0.02 --cluster-ids   (edited copies sharing their sinks)
    """
    from memaudit.corpus.audit import write_audit_set

    config = AuditConfig(
        corpus=corpus, repeats=parse_int_list(repeats, "--repeats"), n_natural=n_natural or None, **settings
    )
    audit_set = write_audit_set(config, out, force=force)
    counts = audit_set.manifest["counts"]
    click.echo(
        f"wrote {out}: {counts['train_documents']} training documents ({counts['train_occurrences']} occurrences), "
        f"{counts['members']} members, {counts['heldout']} held-out, {counts['canaries']} canaries, {counts['valid']} valid"
    )
    if "edited_copies" in counts:
        click.echo(f"{counts['edited_copies']} edited copies, {counts['word_edit_rate']:.1%} of their words edited")
    if "near_clusters" in counts:
        click.echo(f"{counts['near_clusters']} near-duplicate clusters share a sink id each")


@main.command()
@click.option(
    "--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Data dir from `memaudit data build`."
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model dir to write.")
@click.option(
    "--arch",
    **_default(
        TrainConfig, "arch", help=f"Zoo name ({', '.join(ZOO)}), a transformers model type, or a dir with config.json."
    ),
)
@click.option("--steps", **_default(TrainConfig, "steps"))
@click.option("--batch-size", **_default(TrainConfig, "batch_size", help="Sequences per step, over all processes."))
@click.option("--seq-len", **_default(TrainConfig, "seq_len"))
@click.option("--lr", **_default(TrainConfig, "lr", help="Peak learning rate."))
@click.option("--warmup-steps", **_default(TrainConfig, "warmup_steps"))
@precision_options
@click.option("--seed", **_default(TrainConfig, "seed"))
@click.option("--no-repeats", is_flag=True, help="Train the oracle that never sees the planted documents.")
@click.option(
    "--sinks",
    "sinks",
    default=None,
    metavar="G,P",
    help="Train a MemSink model: shared fraction G, active fraction P (paper: 0.7,0.3).",
)
@click.option(
    "--sink-scheme",
    "scheme",
    type=click.Choice(list(SCHEMES)),
    **_default(SinkConfig, "scheme", help=_described(SCHEMES)),
)
@click.option(
    "--sink-groups",
    "groups",
    **_default(SinkConfig, "groups", help="Disjoint scheme: id groups that own separate slices of the pool."),
)
@click.option("--sink-k", "k", **_default(SinkConfig, "k", help="Sparse scheme: the pool units each id switches on."))
@click.option(
    "--id-noise",
    **_default(
        SinkConfig,
        "id_noise",
        help="With --sinks: the chance that an occurrence of a repeated id trains under a random id instead.",
    ),
)
@click.option(
    "--route",
    type=click.Choice(list(ROUTES)),
    **_default(
        SinkConfig,
        "route",
        help="With --sinks, which occurrences of an id that occurs more than once train only its sinks, never the "
        "shared weights (gradient routing): " + _described(ROUTES),
    ),
)
@click.option(
    "--route-scope",
    type=click.Choice(list(ROUTE_SCOPES)),
    **_default(
        SinkConfig,
        "route_scope",
        help="With --route, which weights a routed occurrence is kept from: " + _described(ROUTE_SCOPES),
    ),
)
@click.option(
    "--sinks-for",
    type=click.Choice(list(SINKS_FOR)),
    **_default(
        SinkConfig,
        "sinks_for",
        help="With --sinks, which ids switch sinks on in training: " + _described(SINKS_FOR),
    ),
)
@click.option(
    "--exclude-ids",
    metavar="IDS",
    help="Leave these comma-separated document ids (or owners, for a data dir built with --id-field) out of "
    "training: a model to judge `remove-sinks --ids` against.",
)
@click.option(
    "--init",
    metavar="MODEL",
    help="Fine-tune this pretrained model (model dir, GGUF file or hub id) instead of training --arch from "
    "scratch; build the data dir with `data build --tokenizer MODEL`.",
)
@click.option(
    "--sink-units",
    default=EXISTING_UNITS,
    show_default=True,
    metavar="new:N|existing",
    help="With --sinks and --init (or the sparse scheme): new:N adds N fresh sink units to every MLP (the model "
    "is unchanged at step 0; G is then unused); existing splits the pretrained units at G.",
)
@click.option("--freeze-base", is_flag=True, help="With --sink-units new:N: train only the new sink units.")
@click.option("--train-shared-mlp", is_flag=True, help="With --freeze-base: the pretrained MLP units train too.")
@click.option("--eval-every", **_default(TrainConfig, "eval_every"))
@click.option("--checkpoint-every", **_default(TrainConfig, "checkpoint_every"))
@click.option("--resume", is_flag=True, help="Continue the interrupted run in MODEL.partial/.")
@click.option("--force", is_flag=True, help="Replace an existing --out (or discard an interrupted run).")
def train(
    data_dir: Path,
    out: Path,
    sinks: str | None,
    scheme: str,
    groups: int,
    k: int,
    id_noise: float,
    route: str,
    route_scope: str,
    sinks_for: str,
    exclude_ids: str | None,
    sink_units: str,
    resume: bool,
    force: bool,
    precision: str,
    legacy_precision: str | None,
    **settings,
) -> None:
    """Train a model from scratch (or fine-tune one with --init) on a data dir; writes a Hugging
    Face model dir + memaudit.json.

    \b
    Examples:
      memaudit train --data data/austen --out models/standard
      memaudit train --data data/austen --out models/memsink --sinks 0.7,0.3 --precision fp32
      memaudit train --data data/mine --out models/ft --init base/ --sinks 0.7,0.3 --sink-units new:256
      memaudit train --data data/austen --out models/sparse --sinks 0.7,0.3 --sink-scheme sparse --sink-k 8
      accelerate launch --multi_gpu --num_processes 2 -m memaudit train ...   (several processes; on CPU too)
    """
    sink_config = SinkConfig.parse(
        sinks,
        sink_units=sink_units,
        scheme=scheme,
        groups=groups,
        k=k,
        id_noise=id_noise,
        route=route,
        route_scope=route_scope,
        sinks_for=sinks_for,
    )
    config = TrainConfig(
        sinks=sink_config,
        exclude_ids=tuple(parse_ids(exclude_ids)) if exclude_ids else (),
        precision=pick_precision(precision, legacy_precision),
        **settings,
    )
    check_model_job(out, model=config.init, data_dir=data_dir, force=force)

    from memaudit.training.train import train as run_train

    result = run_train(data_dir, out, config, resume=resume, force=force)
    final = result.final
    if not result.is_main_process:
        return
    click.echo(
        f"wrote {out}: {result.steps} steps, {result.tokens_per_s:,.0f} tokens/s, "
        f"valid loss {final.get('valid_loss', float('nan')):.3f}, member loss {final.get('member_loss', float('nan')):.3f}"
    )


@main.group()
def scan() -> None:
    """Probe a model (or a corpus) for memorization."""


@scan.command("model")
@click.argument("model")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    help="Data dir from `memaudit data build` (audit.jsonl + valid.jsonl).",
)
@click.option(
    "--audit",
    type=click.Path(path_type=Path),
    help="Texts to audit (.jsonl/.csv/.parquet/.txt; optional `member`, `repeats` columns).",
)
@click.option("--nonmembers", type=click.Path(path_type=Path), help="Texts known NOT to be in training (with --audit).")
@click.option(
    "--valid", type=click.Path(path_type=Path), help="Clean text of the training distribution, for capability metrics."
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run dir to write.")
@click.option(
    "--sinks",
    "sinks_mode",
    type=click.Choice(list(EVAL_MODES)),
    default=None,
    help="MemSink evaluation mode: "
    + "; ".join(f"{name}: {mode.summary}" for name, mode in EVAL_MODES.items())
    + f" [default: {DEFAULT_EVAL_MODE}].",
)
@click.option(
    "--suite",
    **_default(ScanRequest, "suite", help=f"Probe suite: {', '.join(suite_names())}, or a YAML file (see probes/)."),
)
@click.option(
    "--reference",
    help="Reference model (never trained on the members, or the model before unlearning): `ref` attack and reference-relative metrics.",
)
@click.option(
    "--rmia-reference",
    "rmia_references",
    multiple=True,
    metavar="MODEL",
    help="A reference model for the `rmia` attack (repeatable): the model's tokenizer, never trained on the members, "
    "e.g. `memaudit train --no-repeats --seed 1` on the same data dir; not the oracle a report judges against.",
)
@click.option(
    "--frequencies",
    type=click.Path(path_type=Path),
    help="Token counts in the model's tokenizer for the `dcpdd` attack (a JSON file; docs/metrics.md) "
    "[default: counted from the data dir's natural training text].",
)
@click.option("--prefix-len", type=int, help="Override the suite's headline prefix length (tokens).")
@click.option("--suffix-len", type=int, help="Override the suite's suffix length (tokens).")
@click.option("--tokenizer", help="Tokenizer dir or hub id, when the model's own is elsewhere.")
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Load pickled (.bin) weights; they can run code, so only from a source you trust.",
)
@click.option("--trust-remote-code", is_flag=True, help="Run the model repo's own Python code (off by default).")
@click.option("--redact", is_flag=True, help="Show audit texts and canary secrets as short keyed hashes.")
@click.option(
    "--stress",
    multiple=True,
    metavar="ATTACK",
    help="Then attack the model and scan it again into OUT/stress/<attack>/ (memaudit stress): " + _ATTACK_HELP,
)
@precision_options
@fail_on_options
@sarif_option
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def scan_model(junit: Path | None, precision: str, legacy_precision: str | None, **options) -> None:
    """Score MODEL (a model dir or hub id) on an audit set in one teacher-forced pass; writes
    RUN/{results.json,sequences.csv,summary.csv,summary.md,report.html}.

    \b
    Examples:
      memaudit scan model models/standard --data data/austen --out reports/standard
      memaudit scan model EleutherAI/pythia-70m --audit secrets.jsonl --nonmembers heldout.txt --out reports/pythia
      memaudit scan model models/candidate --data data/austen --out reports/rc --fail-on "extraction.exact_rate>0" --junit gates.xml
      memaudit scan model models/candidate --data data/austen --out reports/rc --sarif memaudit.sarif
      accelerate launch --multi_gpu --num_processes 2 -m memaudit scan model ...   (sequences split across processes)
    """
    request = ScanRequest(precision=pick_precision(precision, legacy_precision), **options)

    def show_scan(run) -> None:
        from memaudit.report.console import print_summary

        print_summary(run.results)
        click.echo(f"wrote {request.out}/report.html" + (f" and {request.sarif}" if request.sarif else ""))

    run = scan_and_write(request, on_written=show_scan)
    if run is None:  # not the main process of a multi-process launch
        return
    if request.stress:
        from memaudit.report.console import print_stress

        print_stress(run.stress)
        click.echo(f"wrote {request.stress_out}/ (memaudit report {request.out} {request.stress_out}/* --out REPORT)")
    finish_gates(run.verdicts, junit)


@scan.command("data")
@click.argument("corpus", metavar="FILE")
@click.option(
    "--ngram", **_default(ScanDataConfig, "ngram_tokens", help="Length in tokens of the shared sequences to count.")
)
@click.option(
    "--near",
    **_default(ScanDataConfig, "near_threshold", help="Jaccard similarity (word 5-grams) of a near duplicate."),
)
@click.option("--top", **_default(ScanDataConfig, "top", help="How many of the most repeated sequences to list."))
@click.option(
    "--emit-audit",
    "audit_out",
    type=click.Path(path_type=Path),
    help="Write the repeated documents as an audit JSONL for `memaudit scan model --audit`.",
)
@click.option(
    "--emit-min-tokens",
    **_default(
        ScanDataConfig,
        "emit_min_tokens",
        help="Only emit sequences at least this long (64 = long enough for extraction probes).",
    ),
)
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the statistics as JSON.")
def scan_data(
    corpus: str, ngram: int, near: float, top: int, audit_out: Path | None, emit_min_tokens: int, json_out: Path | None
) -> None:
    """Duplication statistics of a corpus: exact duplicate documents, long n-grams shared across
    documents, near-duplicate clusters (MinHash + LSH), and the most repeated sequences, the ones a
    model is most likely to memorize. FILE is an embedded corpus (austen), a local
    .jsonl/.txt/.csv/.parquet file, or a data dir (its training rows count `repeats` times).

    \b
    Examples:
      memaudit scan data austen
      memaudit scan data data/austen --emit-audit repeated.jsonl --json duplicates.json
    """
    config = ScanDataConfig(ngram_tokens=ngram, near_threshold=near, top=top, emit_min_tokens=emit_min_tokens)

    from rich.console import Console

    from memaudit.corpus.duplicates import format_report, scan_and_write_corpus

    report, emitted = scan_and_write_corpus(corpus, config, json_out=json_out, audit_out=audit_out)
    Console().print(format_report(report))
    if json_out:
        click.echo(f"wrote {json_out}")
    if audit_out:
        click.echo(f"wrote {audit_out}: {emitted} repeated sequences")


@main.command("remove-sinks")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model dir to write (never the input).")
@click.option(
    "--ids",
    default=None,
    help="Comma-separated document ids (or owners, for a data dir built with --id-field): delete only their sinks "
    "(disjoint scheme: exact).",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    help="Data dir to check --ids against (default: the one the model was trained on).",
)
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def remove_sinks(model: Path, out: Path, ids: str | None, data_dir: Path | None, force: bool) -> None:
    """Delete the sink units of a MemSink model: a plain, smaller Hugging Face model whose
    outputs equal the MemSink model's `off` mode, loadable without memaudit.

    \b
    Examples:
      memaudit remove-sinks models/memsink --out models/memsink-removed
      memaudit remove-sinks models/memsink --out models/forget-two --ids 123456789,987654321
    """
    check_model_job(out, model=model, data_dir=data_dir, force=force)

    from memaudit.models.removal import hash_scheme_note, parse_ids
    from memaudit.models.removal import remove_sinks as run_remove

    id_list = parse_ids(ids) if ids else None
    report = run_remove(model, out, ids=id_list, data_dir=data_dir, force=force)
    click.echo(
        f"wrote {out}: MLP width {report['units_before']} -> {report['units_after']} "
        f"({report['removed']} units, {report['pool_fraction_removed']:.1%} of the sink pool)"
    )
    note = hash_scheme_note(report, id_list)
    if note is not None:
        click.echo(note)


def parse_limit(value: str) -> float | None:
    """A number, or none/off for no limit."""
    if value.strip().lower() in ("none", "off"):
        return None
    try:
        return float(value)
    except ValueError:
        raise MemauditError(f"--max-degradation takes nats of valid loss (e.g. 0.5) or 'none', got {value!r}") from None


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Data dir from `memaudit data build`: forget its members and canaries, retain its natural documents.",
)
@click.option(
    "--method",
    type=click.Choice(list(METHODS)),
    **_default(UnlearnConfig, "method", help="; ".join(f"{name}: {m.summary}" for name, m in METHODS.items()) + "."),
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model dir to write.")
@click.option(
    "--forget",
    "forget_file",
    type=click.Path(path_type=Path),
    help="Texts to forget instead of the data dir's members (.jsonl/.csv/.parquet with `text`, or .txt).",
)
@click.option("--steps", **_default(UnlearnConfig, "steps"))
@click.option(
    "--batch-size", **_default(UnlearnConfig, "batch_size", help="Forget documents per step (and as many retain).")
)
@click.option("--lr", type=float, default=None, help=f"Peak learning rate [default: {defaults_text('lr')}].")
@click.option("--beta", type=float, default=None, help=f"Inverse temperature [default: {defaults_text('beta')}].")
@click.option("--gamma", **_default(UnlearnConfig, "gamma", help="SimNPO reward margin."))
@click.option("--retain-weight", **_default(UnlearnConfig, "retain_weight", help="Weight of the retain loss (not ga)."))
@click.option(
    "--max-degradation",
    default=str(default_of(UnlearnConfig, "max_degradation")),
    show_default=True,
    help="Stop when valid loss rises more than this many nats, keeping the last state within it ('none': no limit).",
)
@click.option("--eval-every", **_default(UnlearnConfig, "eval_every"))
@precision_options
@click.option("--seed", **_default(UnlearnConfig, "seed"))
@click.option("--resume", is_flag=True, help="Continue the interrupted run in OUT.partial/.")
@click.option("--force", is_flag=True, help="Replace an existing --out (or discard an interrupted run).")
def unlearn(
    model: Path,
    data_dir: Path,
    out: Path,
    forget_file: Path | None,
    max_degradation: str,
    resume: bool,
    force: bool,
    precision: str,
    legacy_precision: str | None,
    **settings,
) -> None:
    """Remove memorized documents from a standard model after training (the baselines MemSinks
    is compared with); writes a plain Hugging Face model dir + memaudit.json. MODEL is never modified.

    \b
    Examples:
      memaudit unlearn models/standard --data data/austen --method npo --out models/npo
      memaudit unlearn models/standard --data data/austen --method ga --max-degradation 0.3 --out models/ga
      memaudit unlearn models/standard --data data/austen --forget secrets.jsonl --out models/no-secrets
    """
    config = UnlearnConfig(
        forget_file=str(forget_file) if forget_file else None,
        max_degradation=parse_limit(max_degradation),
        precision=pick_precision(precision, legacy_precision),
        **settings,
    )
    check_model_job(out, model=model, data_dir=data_dir, inputs=[forget_file], force=force)

    from memaudit.unlearning.run import unlearn as run_unlearn

    result = run_unlearn(model, data_dir, out, config, resume=resume, force=force)
    if not result.is_main_process:
        return
    start, end = result.start, result.end
    stopped = f" (stopped early: {result.stopped_early})" if result.stopped_early else ""
    click.echo(
        f"wrote {out}: {result.method}, {result.steps} steps{stopped}; forget loss {start['forget_loss']:.3f} -> "
        f"{end['forget_loss']:.3f}, held-out {start['heldout_loss']:.3f} -> {end['heldout_loss']:.3f}, "
        f"valid {start['valid_loss']:.3f} -> {end['valid_loss']:.3f}"
    )


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Data dir from `memaudit data build`: units are scored on its members vs its natural documents.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model dir to write.")
@click.option("--ratio", **_default(AblateConfig, "ratio", help="Fraction of all MLP hidden units to zero."))
@click.option(
    "--forget", "forget_file", type=click.Path(path_type=Path), help="Texts to forget instead of the members."
)
@click.option(
    "--retain-docs", **_default(AblateConfig, "retain_docs", help="Natural documents sampled as the contrast.")
)
@click.option("--seed", **_default(AblateConfig, "seed"))
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def ablate(
    model: Path,
    data_dir: Path,
    out: Path,
    ratio: float,
    forget_file: Path | None,
    retain_docs: int,
    seed: int,
    force: bool,
) -> None:
    """Localize-and-ablate baseline: zero the MLP units that fire most specifically on the forget
    set; writes a plain Hugging Face model dir + memaudit.json. MODEL is never modified.

    \b
    Example:  memaudit ablate models/standard --data data/austen --ratio 0.1 --out models/ablated
    """
    config = AblateConfig(ratio=ratio, retain_docs=retain_docs, seed=seed)
    check_model_job(out, model=model, data_dir=data_dir, inputs=[forget_file], force=force)

    from memaudit.unlearning.ablate import ablate as run_ablate

    result = run_ablate(model, data_dir, out, forget_file=forget_file, force=force, **dataclasses.asdict(config))
    start, end = result.start, result.end
    click.echo(
        f"wrote {out}: {sum(map(len, result.units.values()))} units zeroed in {len(result.units)} layers; "
        f"forget loss {start['forget_loss']:.3f} -> {end['forget_loss']:.3f}, "
        f"valid {start['valid_loss']:.3f} -> {end['valid_loss']:.3f}"
    )


@main.command()
@click.argument("model")
@click.option(
    "--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Data dir the model was trained on."
)
@click.option("--attack", "attacks", multiple=True, required=True, metavar="ATTACK", help=_ATTACK_HELP)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for OUT/before/ and OUT/<attack>/.")
@click.option(
    "--standard",
    type=click.Path(path_type=Path),
    help="Run dir of the standard model's scan on the same data: adds gap closed and the robustness metrics.",
)
@click.option(
    "--suite",
    **_default(StressConfig, "suite", help=f"Probe suite of every scan: {', '.join(suite_names())}, or a YAML file."),
)
@click.option("--relearn-lr", **_default(StressConfig, "relearn_lr"))
@click.option("--relearn-batch-size", **_default(StressConfig, "relearn_batch_size", help="Documents per step."))
@precision_options
@click.option("--seed", **_default(StressConfig, "seed", help="The forget-half split and the relearning order."))
@click.option("--resume", is_flag=True, help="Keep finished run dirs; continue an interrupted relearning.")
@click.option("--force", is_flag=True, help="Replace existing run dirs.")
def stress(
    model: str,
    data_dir: Path,
    out: Path,
    standard: Path | None,
    resume: bool,
    force: bool,
    precision: str,
    legacy_precision: str | None,
    **settings,
) -> None:
    """Attack MODEL after its memorization was removed, and scan it again: does the memorization
    come back under 4- or 8-bit quantization, or after a few steps of fine-tuning? Writes
    OUT/before/ and one run dir per attack (OUT/quant-int4/, ...), each a normal scan run dir.

    \b
    Examples:
      memaudit stress models/npo --data data/austen --attack quant:int4 --attack relearn:forget-half:40 \\
          --standard reports/standard --out stress/npo
      memaudit report reports/standard stress/npo/* --out reports/stress
    """
    from memaudit.stress.checks import check_stress

    config = StressConfig(precision=pick_precision(precision, legacy_precision), **settings)
    check_stress(model, data_dir, out, config, standard=standard, force=force, resume=resume)

    from memaudit.report.console import print_stress
    from memaudit.stress.run import stress as run_stress

    print_stress(run_stress(model, data_dir, out, config, standard=standard, force=force, resume=resume))
    click.echo(f"wrote {out}/ (memaudit report {out}/* --out REPORT)")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Report dir to write.")
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    help="Run every model is measured against (gap_closed, forgetting, degradation); "
    "default: the one run whose model kind is standard.",
)
@click.option(
    "--oracle",
    type=click.Path(path_type=Path),
    help="Run of a model retrained without the members (memaudit train --no-repeats): every model's *_vs_oracle "
    "metrics, paired record by record, and each removal's verdict against retraining; default: the one run whose "
    "model kind is no-repeats.",
)
@click.option("--redact", is_flag=True, help="Show audit texts and canary secrets as short keyed hashes, everywhere.")
@fail_on_options
@sarif_option
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def report(
    runs: tuple[Path, ...],
    out: Path,
    reference: Path | None,
    oracle: Path | None,
    redact: bool,
    fail_on: tuple[str, ...],
    junit: Path | None,
    sarif: Path | None,
    force: bool,
) -> None:
    """Compare scan runs in one report: every metric by model with 95% intervals, gap closed,
    forgetting and degradation against a reference model, each removal against retraining (the
    oracle), memorization vs capability with the Pareto front, by-repeat and ROC charts, and each
    sequence with what every model emitted.
    Writes OUT/{report.html,summary.csv,sequences.csv,results.json,summary.md}.

    \b
    Examples:
      memaudit report reports/standard reports/memsink reports/oracle --out reports/compare
      memaudit report reports/* --reference reports/standard --redact --out reports/shareable
      memaudit report reports/* --out reports/ci --fail-on "memorization.gap_closed<0.5" --junit gates.xml
      memaudit report reports/* --oracle reports/oracle --out reports/ci --fail-on "privacy.mia.loss.auc_vs_oracle>0.05"
      memaudit report reports/rc --redact --out reports/shared --sarif memaudit.sarif
    """
    request = ReportRequest(
        runs=runs,
        out=out,
        reference=reference,
        oracle=oracle,
        redact=redact,
        fail_on=fail_on,
        sarif=sarif,
        force=force,
    )
    written = report_and_write(request)

    from memaudit.report.console import print_report

    print_report(written.doc)
    click.echo(f"wrote {out}/report.html" + (f" and {sarif}" if sarif else ""))
    finish_gates(written.verdicts, junit)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/demo"), show_default=True)
@click.option("--quick", is_flag=True, help="Tiny models (about a minute): shows the path, not the effect at scale.")
@click.option(
    "--finetune",
    is_flag=True,
    help="Sink fine-tuning: pretrain a base model on half the corpus, then fine-tune it with planted members.",
)
@click.option(
    "--isolation",
    is_flag=True,
    help="The isolation study's regime (gpt2-1m, 300 members at x1/x8/x64 beside all the natural text, 2,400 "
    "steps): the paper's MemSinks beside MemSinks whose repeats train only their sinks, each judged against the "
    "oracle.",
)
@precision_options
def demo(
    out: Path,
    quick: bool,
    finetune: bool,
    isolation: bool,
    precision: str,
    legacy_precision: str | None,
    threads: int | None,
) -> None:
    """The whole path on the embedded Austen corpus: build the audit set, train a standard, a
    no-repeats and a MemSink model, remove the sinks, unlearn (GA, NPO) and ablate the standard
    model, scan everything and write one comparative report. Steps already done are skipped.

    With --finetune, the path starts from a model that already exists: a base model pretrained on
    one half of the corpus is fine-tuned on the other half, with planted members, four ways:
    standard, with new sink units (new:512), with its own units as sinks (existing), and without
    the members (the oracle); NPO unlearns the standard fine-tune.

    With --isolation, the regime where removal matches retraining (docs/results.md): gpt2-1m on
    300 members at x1, x8 and x64 beside all the natural text, the paper's MemSinks (P = 0.1)
    beside MemSinks whose planted documents train only their sinks (--route planted, --sinks-for
    repeated), every removal judged against the oracle.

    --quick and --isolation train in fp32 unless --precision is given.

    \b
    Examples:  memaudit demo --out reports/demo
               memaudit demo --finetune --out reports/demo-finetune
               memaudit demo --isolation --out reports/demo-isolation
    """
    from memaudit.app.demo import run_demo

    # Unless asked for, each demo keeps its own precision: `auto`, or fp32 for the --quick ones (1M-parameter
    # models gain little from bf16, and fp32 makes them reproduce across CPUs to float tolerance).
    asked = click.get_current_context().get_parameter_source("precision") is click.core.ParameterSource.COMMANDLINE
    chosen = pick_precision(precision, legacy_precision) if asked or legacy_precision else None
    run_demo(out, quick=quick, finetune=finetune, isolation=isolation, precision=chosen, threads=threads)


@main.command()
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="the sweep's folder (resumable)")
@click.option("--set", "sets", multiple=True, metavar="KEY=V1,V2", help="fix (one value) or vary a setting")
@click.option("--dry-run", is_flag=True, help="print the plan and an estimate of its time; run nothing")
@click.option("--rerun-failed", is_flag=True, help="retry the runs that failed (done ones are never redone)")
@click.option("--launcher", type=click.Choice(["local", "submitit"]), default="local", show_default=True)
@click.option("--cluster", default=None, help="submitit: slurm, local or debug (default: slurm where it exists)")
@click.option("--slurm-partition", default=None, help="submitit on Slurm: the partition")
@click.option("--timeout-min", type=int, default=60, show_default=True, help="submitit: minutes a job may run")
@click.option("--threads", type=int, default=None, help="torch threads of each job (default: torch's choice)")
@click.option(
    "--jobs",
    type=click.Path(path_type=Path),
    default=None,
    help="the folder of jobs, shared by sweeps that give the same one (default: OUT/jobs)",
)
def sweep(
    sweep_file: Path,
    out: Path,
    sets: tuple[str, ...],
    dry_run: bool,
    rerun_failed: bool,
    launcher: str,
    cluster: str | None,
    slurm_partition: str | None,
    timeout_min: int,
    threads: int | None,
    jobs: Path | None,
) -> None:
    """Settings x seeds in one command: every point of SWEEP_FILE's grid, under every seed, with
    every arm (standard, oracle, MemSink modes and removal, unlearning, ablation, stress attacks),
    aggregated over seeds into OUT/sweep.json with CSV, Markdown and HTML views. Work that does not
    depend on a swept setting is shared; a rerun continues where the last one stopped; sweeps that
    give the same --jobs folder share the jobs they have in common. Exit 1 when a run failed (the
    others still run).

    \b
    Examples:  memaudit sweep sweeps/quick.yaml --out reports/quick
               memaudit sweep sweeps/quick.yaml --out reports/p --set sinks.active_fraction=0.1,0.3,0.5
               memaudit sweep sweeps/isolation-planted.yaml --out reports/planted --jobs reports/isolation-jobs
               memaudit sweep sweeps/demo.yaml --out reports/demo-seeds --launcher submitit --slurm-partition cpu
    """
    from memaudit.app.sweep import run_sweep

    options = {"cluster": cluster, "timeout_min": timeout_min}
    if slurm_partition:
        options["slurm_partition"] = slurm_partition
    code = run_sweep(
        sweep_file,
        out,
        sets,
        dry_run=dry_run,
        rerun_failed=rerun_failed,
        launcher=launcher,
        executor_options=options,
        threads=threads,
        jobs=jobs,
        echo=click.echo,
    )
    sys.exit(code)


@main.command("metrics")
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="GROUP",
    help=f"Only this group: {', '.join(GROUPS[:-1])} or {GROUPS[-1]}. Repeatable.",
)
@click.option("--markdown", is_flag=True, help="Print Markdown: the text of docs/metrics.md.")
def metrics_list(groups: tuple[str, ...], markdown: bool) -> None:
    """List every metric memaudit reports, from its registry: name, direction (↑ higher is better,
    ↓ lower, →x closer to x), group, meaning, and its role (headline, leak rule, Pareto axis,
    the model it needs).

    \b
    Examples:
      memaudit metrics --group privacy
      memaudit metrics --markdown > docs/metrics.md
    """
    from memaudit.probes.listing import metrics_markdown, print_metrics

    if markdown:
        click.echo(metrics_markdown(groups), nl=False)
    else:
        print_metrics(groups)


if __name__ == "__main__":
    main()
