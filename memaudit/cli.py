"""The `memaudit` command line: thin click commands that parse, call the API, and print.
Bad input is one line on stderr and exit 2; a tripped gate is exit 1; never a traceback."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from memaudit.errors import MemauditError

EXIT_BAD_INPUT = 2


def _quiet_libraries() -> None:
    """Library chatter (weight-loading bars, pad-token notes) drowns memaudit's own output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class MemauditGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MemauditError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_BAD_INPUT)


def parse_int_list(value: str, what: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise MemauditError(f"{what} must be comma-separated positive integers, got {value!r}") from None
    if not levels or any(v < 1 for v in levels):
        raise MemauditError(f"{what} must be comma-separated positive integers, got {value!r}")
    return levels


def parse_sinks(value: str) -> tuple[float, float]:
    try:
        g, p = (float(v) for v in value.split(","))
    except ValueError:
        raise MemauditError(
            f"--sinks takes G,P (shared fraction, active fraction), e.g. 0.7,0.3; got {value!r}"
        ) from None
    return g, p


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
    default="austen",
    show_default=True,
    help="Embedded corpus name or a local .jsonl/.txt/.parquet/.csv file.",
)
@click.option("--repeats", default="1,8,32,128", show_default=True, help="Repeat levels to plant members at.")
@click.option("--members-per-level", default=10, show_default=True)
@click.option("--canaries-per-level", default=4, show_default=True)
@click.option("--n-valid", default=400, show_default=True, help="Held-out validation documents (capability).")
@click.option("--n-natural", default=2000, show_default=True, help="Natural training documents (0: all that remain).")
@click.option("--min-tokens", default=96, show_default=True, help="Shortest member/held-out document, in tokens.")
@click.option("--max-tokens", default=160, show_default=True)
@click.option("--vocab-size", default=4096, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def data_build(out: Path, corpus: str, repeats: str, n_natural: int, force: bool, **settings) -> None:
    """Split a corpus, plant repeated members and canaries, pick length-matched held-out
    non-members, train the tokenizer, and write DIR/{manifest.json,train,audit,valid.jsonl,tokenizer/}.

    \b
    Example:  memaudit data build --out data/austen --repeats 1,8,32,128
    """
    from memaudit.corpus.audit import AuditConfig, write_audit_set

    config = AuditConfig(
        corpus=corpus, repeats=parse_int_list(repeats, "--repeats"), n_natural=n_natural or None, **settings
    )
    audit_set = write_audit_set(config, out, force=force)
    counts = audit_set.manifest["counts"]
    click.echo(
        f"wrote {out}: {counts['train_documents']} training documents ({counts['train_occurrences']} occurrences), "
        f"{counts['members']} members, {counts['heldout']} held-out, {counts['canaries']} canaries, {counts['valid']} valid"
    )


@main.command()
@click.option(
    "--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Data dir from `memaudit data build`."
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model dir to write.")
@click.option(
    "--arch",
    default="gpt2-5m",
    show_default=True,
    help="Zoo name (gpt2-1m, gpt2-5m, gpt2-20m, llama-1m, llama-5m), a transformers model type, or a dir with config.json.",
)
@click.option("--steps", default=600, show_default=True)
@click.option("--batch-size", default=16, show_default=True, help="Sequences per step, over all processes.")
@click.option("--seq-len", default=128, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--warmup-steps", default=30, show_default=True)
@click.option(
    "--bf16/--fp32", default=False, show_default=True, help="bf16 autocast (about 2x faster on a recent CPU)."
)
@click.option("--seed", default=0, show_default=True)
@click.option("--no-repeats", is_flag=True, help="Train the oracle that never sees the planted documents.")
@click.option(
    "--sinks",
    "sinks",
    default=None,
    metavar="G,P",
    help="Train a MemSink model: shared fraction G, active fraction P (paper: 0.7,0.3).",
)
@click.option("--sink-scheme", type=click.Choice(["hash", "disjoint"]), default="hash", show_default=True)
@click.option(
    "--sink-groups",
    default=16,
    show_default=True,
    help="Disjoint scheme: id groups that own separate slices of the pool.",
)
@click.option("--eval-every", default=100, show_default=True)
@click.option("--checkpoint-every", default=100, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the interrupted run in MODEL.partial/.")
@click.option("--force", is_flag=True, help="Replace an existing --out (or discard an interrupted run).")
def train(
    data_dir: Path,
    out: Path,
    sinks: str | None,
    sink_scheme: str,
    sink_groups: int,
    resume: bool,
    force: bool,
    **settings,
) -> None:
    """Train a model from scratch on a data dir; writes a Hugging Face model dir + memaudit.json.

    \b
    Examples:
      memaudit train --data data/austen --out models/standard --bf16
      memaudit train --data data/austen --out models/memsink --sinks 0.7,0.3 --bf16
      accelerate launch --multi_gpu --num_processes 2 -m memaudit train ...   (several processes; on CPU too)
    """
    from memaudit.training.loop import TrainConfig
    from memaudit.training.loop import train as run_train

    sink_config = None
    if sinks:
        from memaudit.models.sinks import SinkConfig

        g, p = parse_sinks(sinks)
        sink_config = SinkConfig(shared_fraction=g, active_fraction=p, scheme=sink_scheme, groups=sink_groups).to_dict()
    result = run_train(data_dir, out, TrainConfig(sinks=sink_config, **settings), resume=resume, force=force)
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
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="Data dir (audit.jsonl + valid.jsonl).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run dir to write.")
@click.option(
    "--sinks",
    "sinks_mode",
    type=click.Choice(["off", "off-rescaled", "mean", "own"]),
    default=None,
    help="MemSink evaluation mode (default off, as in the paper).",
)
@click.option("--prefix-len", default=32, show_default=True)
@click.option("--suffix-len", default=32, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def scan_model(
    model: str, data_dir: Path | None, out: Path, sinks_mode: str | None, prefix_len: int, suffix_len: int, force: bool
) -> None:
    """Score MODEL on an audit set in one teacher-forced pass; writes RUN/{results.json,
    sequences.csv,summary.csv,summary.md,report.html}.

    \b
    Example:  memaudit scan model models/standard --data data/austen --out reports/standard
    """
    from memaudit.probes.scan import ScanConfig
    from memaudit.probes.scan import scan as run_scan
    from memaudit.report.console import print_summary
    from memaudit.report.render import write_run

    if data_dir is None:
        raise MemauditError("scan model needs --data DIR (a data dir from `memaudit data build`)")
    if out.exists() and not force:
        raise MemauditError(f"{out} already exists; choose another --out or pass --force to replace it")
    if prefix_len < 1 or suffix_len < 1:
        raise MemauditError(f"--prefix-len and --suffix-len must be positive, got {prefix_len}, {suffix_len}")
    results = run_scan(
        model, data_dir=data_dir, sinks_mode=sinks_mode, config=ScanConfig(prefix_len=prefix_len, suffix_len=suffix_len)
    )
    write_run(results, out, force=force)
    print_summary(results)
    click.echo(f"wrote {out}/report.html")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/demo"), show_default=True)
@click.option("--quick", is_flag=True, help="A tiny run (about a minute) that shows the path, not the effect.")
def demo(out: Path, quick: bool) -> None:
    """The whole path on the embedded Austen corpus: build the audit set, train a standard,
    a no-repeats and a MemSink model, scan each, and compare. Steps already done are skipped.

    \b
    Example:  memaudit demo --out reports/demo
    """
    from memaudit.demo import run_demo

    run_demo(out, quick=quick)


if __name__ == "__main__":
    main()
