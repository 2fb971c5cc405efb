"""`memaudit demo`: the whole path on the embedded Austen corpus. Build the audit set; train a
standard, a no-repeats (oracle) and a MemSink model; remove the sinks; unlearn the standard
model (GA, NPO) and ablate it; scan everything; write one comparative report. Each step is
skipped when its output already exists, so a rerun (or an interrupted run) picks up where it was.

`memaudit demo --finetune` is the same path from a model that already exists: it pretrains a
base model on one half of the corpus (natural text only), then fine-tunes it on an audit set
built from the other half, standard and with sinks (`new:N` units and `existing` ones), and
compares them with the fine-tuning oracle and NPO."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from memaudit.common.errors import MemauditError
from memaudit.common.fileio import atomic_dir, read_json, write_jsonl
from memaudit.corpus.audit import AuditConfig, distinct_texts, write_audit_set
from memaudit.memsinks.config import SinkConfig
from memaudit.models.removal import remove_sinks
from memaudit.probes.scan import scan
from memaudit.probes.suite import load_suite
from memaudit.report.compare import compare_runs
from memaudit.report.console import print_report
from memaudit.report.render import write_report, write_run
from memaudit.training.config import TrainConfig
from memaudit.training.train import blocks_per_epoch, train
from memaudit.unlearning.ablate import ablate
from memaudit.unlearning.run import UnlearnConfig, unlearn


@dataclass(frozen=True)
class Pretraining:
    """The base model of `--finetune`, standing for the model a user already has: trained from scratch on the
    natural text of one half of the corpus (alternate documents), which the fine-tuning audit set never uses."""

    train: TrainConfig
    # Natural documents of that half: 1,000 are ~2.7 epochs in the demo's 300 steps, enough to carry the base past
    # the early loss plateau that fewer epochs left some seeds on (docs/results.md).
    n_natural: int = 1000


@dataclass(frozen=True)
class DemoConfig:
    # Lean enough for 10 minutes on a 2-core CPU without native bf16, in fp32: 6 members and 2
    # canaries per repeat level (x128 included), 500 natural documents, members of 64-96 tokens
    # (the `ci` suite's probe needs 64), a 2k vocabulary (the LM head dominates at this size).
    data: AuditConfig = field(
        default_factory=lambda: AuditConfig(
            members_per_level=6,
            canaries_per_level=2,
            n_valid=200,
            n_natural=500,
            min_tokens=64,
            max_tokens=96,
            vocab_size=2048,
        )
    )
    # ~2 epochs of that set (307k tokens a model): the regime where memorization and MemSinks'
    # effect show. Batches of 8 at lr 2e-3 give twice the optimizer steps of 16 at 1e-3 for the
    # same tokens, and memorize more (measured in docs/results.md).
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(arch="gpt2-5m", steps=300, batch_size=8, lr=2e-3, warmup_steps=20)
    )
    # One MemSink model per entry, named as its runs are (paper defaults G=0.7, P=0.3).
    sinks: dict[str, SinkConfig] = field(default_factory=lambda: {"memsink": SinkConfig()})
    pretrain: Pretraining | None = None  # set: fine-tune a base model pretrained here (`--finetune`)
    # Method defaults (lr, beta), 60 steps, fewer and smaller evaluations: the max-degradation
    # guard still checks validation loss every 20 steps.
    unlearn: UnlearnConfig = field(default_factory=lambda: UnlearnConfig(steps=60, eval_every=20, eval_docs=32))
    unlearn_methods: tuple[str, ...] = ("ga", "npo")
    ablate_ratio: float | None = 0.1  # at 1% this model barely changes (docs/results.md)
    suite: str = "ci"  # the headline probes; `memaudit scan model --suite full` for the rest
    # Data, unlearning, ablation and scans cost about this fraction of the training time, for the estimate. They
    # scale with the same CPU speed, so the ratio carries across machines (measured: docs/results.md).
    other_work_ratio: float = 0.6


QUICK = DemoConfig(  # tiny settings that show the whole path in about a minute, not the effect at scale
    data=AuditConfig(
        repeats=(1, 8, 64),
        members_per_level=4,
        canaries_per_level=1,
        n_valid=40,
        n_natural=150,
        min_tokens=64,
        max_tokens=120,
        vocab_size=512,
    ),
    # fp32: at 1M parameters bf16 gains little, and fp32 makes these models (the tests' too) the same on every CPU.
    train=TrainConfig(arch="gpt2-1m", steps=300, batch_size=8, lr=3e-3, warmup_steps=10, precision="fp32"),
    unlearn=UnlearnConfig(steps=30, lr=1e-3, warmup_steps=3, eval_every=10, precision="fp32"),  # a larger step at 1M
    suite="ci",
)

# `--finetune`: the lean demo's audit set, training and NPO, from a base pretrained here for as many steps on
# the natural text of the other half. `new:512` adds half the base's 1024 units to each MLP: a pool of a third of
# the widened MLP, as G = 0.7 splits it for `existing`. Measured in docs/results.md.
FINETUNE = DemoConfig(
    pretrain=Pretraining(train=DemoConfig().train),
    sinks={"memsink-new": SinkConfig(new_units=512), "memsink-existing": SinkConfig()},
    unlearn_methods=("npo",),
    ablate_ratio=None,
    other_work_ratio=0.25,  # one unlearning run and nine scans of small models (measured: docs/results.md)
)
QUICK_FINETUNE = replace(
    QUICK,
    pretrain=Pretraining(train=QUICK.train),
    sinks={"memsink-new": SinkConfig(new_units=256), "memsink-existing": SinkConfig()},
    unlearn_methods=("npo",),
    ablate_ratio=None,
)

# `--isolation`: the regime of the isolation study (docs/results.md): 100 members each at x1, x8 and x64 beside all
# the natural text (about 37% of the tokens are members), gpt2-1m for 2,400 steps (~1.5 epochs, 240 of them warm-up,
# which trains it 7% better than 10) in fp32, the paper's MemSinks at P = 0.1 beside MemSinks whose planted documents
# train only their sinks (`route: planted`, `sinks_for: repeated`), every removal judged against the oracle on 300
# members and 300 held-out texts.
ISOLATION = replace(
    QUICK,
    data=AuditConfig(
        repeats=(1, 8, 64),
        members_per_level=100,
        canaries_per_level=1,
        n_valid=200,
        n_natural=None,
        min_tokens=64,
        max_tokens=96,
        vocab_size=2048,
    ),
    train=replace(QUICK.train, steps=2400, warmup_steps=240),
    # At the quick demo's lr 1e-3 both methods doubled validation loss within 10 steps on these 300 members and the
    # guard kept the standard model; at 1e-4 they run their 30 steps (docs/results.md).
    unlearn=replace(QUICK.unlearn, lr=1e-4),
    sinks={
        "memsink": SinkConfig(active_fraction=0.1),
        "memsink-routed": SinkConfig(active_fraction=0.1, route="planted", sinks_for="repeated"),
    },
    other_work_ratio=0.25,
)


class _Steps:
    """Runs each step unless its output exists, timing what it ran."""

    def __init__(self, console: Console):
        self.console, self.seconds, self.n = console, {}, 0

    def __call__(self, name: str, done: Path, work: Callable[[], object]) -> None:
        self.n += 1
        if done.exists():
            self.console.print(f"[dim]{self.n:>2}. {name}: done already ({done.parent})[/]")
            return
        self.console.print(f"[bold]{self.n:>2}. {name}[/]")
        start = time.perf_counter()
        work()
        self.seconds[name] = time.perf_counter() - start


@dataclass
class _Estimate:
    """Prints, once, after the first trained model's first steps, how long the whole demo will
    take: the training steps left at the measured step time, plus the rest (unlearning, ablation,
    scans), which costs about `other_work_ratio` of the training time."""

    console: Console
    training_steps: int  # of every model still to train
    begin: float
    other_work_ratio: float  # the config's
    after_steps: int = 10
    printed: bool = False

    def __call__(self, done: int, seconds_per_step: float) -> None:
        if self.printed or done < self.after_steps:
            return
        self.printed = True
        training = self.training_steps * seconds_per_step
        total = training * (1 + self.other_work_ratio)
        self.console.print(
            f"[dim]estimate: about {_minutes(total)} in all ({seconds_per_step:.2f} s a training step here; "
            f"training {_minutes(training)}), done around {time.strftime('%H:%M', time.localtime(self.begin + total))}[/]"
        )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def training_plan(cfg: DemoConfig, data: Path, init: Path | None = None) -> dict[str, TrainConfig]:
    """The models' settings: standard, no-repeats oracle and one per sink config, fine-tuning
    `init` when given. The oracle trains on the same stream without the planted documents, for as
    many epochs as the standard model (so in fewer steps): the run the standard model would have
    been had the members never been there, seeing the natural text exactly as often, rather than
    2.5 times as often in the same number of steps."""
    standard = replace(cfg.train, no_repeats=False, sinks=None, init=None if init is None else str(init))
    oracle = oracle_steps(replace(standard, no_repeats=True), data)
    sinks = {name: replace(standard, sinks=sink) for name, sink in cfg.sinks.items()}
    return {"standard": standard, "no-repeats": oracle, **sinks}


def oracle_steps(oracle: TrainConfig, data: Path) -> TrainConfig:
    """The oracle's config with as many epochs of the natural text as the standard model's `steps` give it."""
    oracle_blocks, standard_blocks = blocks_per_epoch(data, [oracle, replace(oracle, no_repeats=False)])
    return replace(oracle, steps=max(1, round(oracle.steps * oracle_blocks / standard_blocks)))


def run_demo(
    out: Path,
    quick: bool = False,
    console: Console | None = None,
    config: DemoConfig | None = None,
    *,
    finetune: bool = False,
    isolation: bool = False,
    precision: str | None = None,
    threads: int | None = None,
) -> dict:
    """Returns the comparative report document (also written to OUT/report/). `quick`, `finetune` and
    `isolation` pick the built-in configuration (QUICK, FINETUNE, QUICK_FINETUNE, ISOLATION); `config`
    replaces it (e.g. more training steps, the full probe suite); `precision` and `threads`, when given,
    replace the config's for training and unlearning."""
    console = console or Console()
    if isolation and (quick or finetune):
        raise MemauditError("isolation is a configuration of its own: drop quick and finetune")
    if isolation:
        cfg = config or ISOLATION
    else:
        cfg = config or ((QUICK_FINETUNE if quick else FINETUNE) if finetune else (QUICK if quick else DemoConfig()))
    overrides = {k: v for k, v in (("precision", precision), ("threads", threads)) if v is not None}
    cfg = replace(cfg, train=replace(cfg.train, **overrides), unlearn=replace(cfg.unlearn, **overrides))
    if cfg.pretrain is not None:
        cfg = replace(cfg, pretrain=replace(cfg.pretrain, train=replace(cfg.pretrain.train, **overrides)))
    out = Path(out)
    step = _Steps(console)
    begin = time.perf_counter()
    estimate = _Estimate(console, _steps_to_train(cfg, out), time.time(), cfg.other_work_ratio)
    data, base = _prepare_data(cfg, out, step, estimate)
    _make_models(cfg, data, base, out / "models", step, estimate)
    order = _scan_models(cfg, data, out / "models", out / "runs", step)
    doc = compare_runs([out / "runs" / r for r in order], reference=out / "runs" / "standard")
    write_report(doc, out / "report", force=True)
    print_report(doc, console)
    ran = ", ".join(f"{name.split(' (')[0]} {s:.0f}s" for name, s in step.seconds.items())
    console.print(f"took {time.perf_counter() - begin:.0f}s ({ran or 'everything was done already'})")
    console.print(f"report: {out / 'report' / 'report.html'}")
    return doc


def _steps_to_train(cfg: DemoConfig, out: Path) -> int:
    """Training steps of the models not trained yet, for the estimate. Before the audit set exists
    (`--finetune` pretrains first), the oracle counts at the standard model's steps, so the estimate runs a little high."""
    models = out / "models"
    steps = 0 if cfg.pretrain is None or (models / "base" / "memaudit.json").exists() else cfg.pretrain.train.steps
    data = out / "data"
    if (data / "manifest.json").exists():
        plan = {name: c.steps for name, c in training_plan(cfg, data).items()}  # `init` changes no step count
    else:
        plan = dict.fromkeys(["standard", "no-repeats", *cfg.sinks], cfg.train.steps)
    return steps + sum(n for name, n in plan.items() if not (models / name / "memaudit.json").exists())


def _prepare_data(cfg: DemoConfig, out: Path, step: _Steps, estimate: _Estimate) -> tuple[Path, Path | None]:
    """The audit set the models train on and, with `pretrain`, the base model they fine-tune: pretrained on the
    natural text of one half of the corpus, with the audit set built from the other half in its tokenizer."""
    data = out / "data"
    if cfg.pretrain is None:
        step("build the audit set", data / "manifest.json", lambda: write_audit_set(cfg.data, data, force=True))
        return data, None
    corpus, pretrain_data, base = out / "corpus", out / "pretrain-data", out / "models" / "base"
    step("split the corpus in two halves", corpus / "finetune.jsonl", lambda: write_halves(cfg.data.corpus, corpus))
    natural = replace(cfg.data, corpus=str(corpus / "pretrain.jsonl"), n_natural=cfg.pretrain.n_natural)
    step(
        "build the pretraining set (the first half)",
        pretrain_data / "manifest.json",
        lambda: write_audit_set(natural, pretrain_data, force=True),
    )
    _train_step(step, "base", pretrain_data, base, replace(cfg.pretrain.train, no_repeats=True, sinks=None), estimate)
    planted = replace(cfg.data, corpus=str(corpus / "finetune.jsonl"), tokenizer=str(base), vocab_size=None)
    step(
        "build the fine-tuning audit set (the second half, in the base model's tokenizer)",
        data / "manifest.json",
        lambda: write_audit_set(planted, data, force=True),
    )
    return data, base


def write_halves(corpus: str, out: Path) -> None:
    """The corpus's distinct documents in two halves, alternate documents each, as JSONL (pretrain.jsonl and
    finetune.jsonl): no text of the fine-tuning half, members included, was in the base model's pretraining."""
    texts = distinct_texts(corpus)
    with atomic_dir(out, force=True) as tmp:
        for part, name in enumerate(("pretrain.jsonl", "finetune.jsonl")):
            write_jsonl(tmp / name, ({"text": text} for text in texts[part::2]))


def _train_step(step: _Steps, name: str, data: Path, model: Path, cfg: TrainConfig, estimate: _Estimate) -> None:
    what = f"fine-tune {cfg.init}" if cfg.init else cfg.arch
    resume = model.with_name(model.name + ".partial").exists()
    step(
        f"train the {name} model ({what}, {cfg.steps} steps)",
        model / "memaudit.json",
        lambda: train(data, model, cfg, resume=resume, on_step=estimate),
    )


def _make_models(
    cfg: DemoConfig, data: Path, base: Path | None, models: Path, step: _Steps, estimate: _Estimate
) -> None:
    """Train the standard, oracle and MemSink models, then derive the others: sinks removed,
    unlearned with each method, ablated."""
    for name, train_cfg in training_plan(cfg, data, base).items():
        _train_step(step, name, data, models / name, train_cfg, estimate)
    for name in cfg.sinks:
        step(
            f"remove the {name} model's sinks",
            models / f"{name}-removed" / "memaudit.json",
            lambda n=name: remove_sinks(models / n, models / f"{n}-removed", force=True),
        )
    for method in cfg.unlearn_methods:
        step(
            f"unlearn the standard model with {method}",
            models / f"unlearn-{method}" / "memaudit.json",
            lambda m=method: unlearn(
                models / "standard", data, models / f"unlearn-{m}", replace(cfg.unlearn, method=m), force=True
            ),
        )
    if cfg.ablate_ratio is not None:
        step(
            f"ablate the standard model's top {cfg.ablate_ratio:.0%} member-specific MLP units",
            models / "ablate" / "memaudit.json",
            lambda: ablate(models / "standard", data, models / "ablate", cfg.ablate_ratio, force=True),
        )


def _scan_models(cfg: DemoConfig, data: Path, models: Path, runs: Path, step: _Steps) -> list[str]:
    """Scan every model (each MemSink model with its sinks off and own, and removed), each against
    the oracle, which never saw the members: the reference of the `ref` membership attack. Returns
    the run names in report order."""
    suite = load_suite(cfg.suite)

    def _scan(run: str, model: str, mode: str | None = None, reference: dict | None = None) -> None:
        results = scan(models / model, data_dir=data, sinks_mode=mode, config=suite, reference=reference)
        write_run(results, runs / run, force=True)

    step("scan the no-repeats oracle", runs / "no-repeats" / "results.json", lambda: _scan("no-repeats", "no-repeats"))
    oracle = read_json(runs / "no-repeats" / "results.json")
    scans = {"standard": ("standard", None)}
    for name in cfg.sinks:
        scans |= {
            f"{name}-off": (name, "off"),
            f"{name}-own": (name, "own"),
            f"{name}-removed": (f"{name}-removed", None),
        }
    scans |= {"ablate": ("ablate", None)} if cfg.ablate_ratio is not None else {}
    scans |= {f"unlearn-{m}": (f"unlearn-{m}", None) for m in cfg.unlearn_methods}
    for run, (model, mode) in scans.items():
        step(
            f"scan {run}", runs / run / "results.json", lambda r=run, m=model, s=mode: _scan(r, m, s, reference=oracle)
        )
    return ["standard", "no-repeats", *[r for r in scans if r != "standard"]]
