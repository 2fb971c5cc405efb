"""`memaudit train`: a model trained from scratch (or fine-tuned with `init`) on a data dir's
packed training stream, with per-document sinks for a MemSink run, on the shared optimization loop
(`memaudit.training.optimize`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memaudit import __version__
from memaudit.common.errors import MemauditError
from memaudit.common.fileio import sha256_file
from memaudit.corpus.audit import AuditSet, resolve_sink_ids, sink_id
from memaudit.corpus.packing import PackedStream
from memaudit.corpus.tokenizer import encode_documents, load_tokenizer
from memaudit.memsinks.config import DEFAULT_EVAL_MODE
from memaudit.memsinks.routing import SinkGradients, outside_mlps, split_token_loss
from memaudit.models.checks import check_model_job
from memaudit.models.zoo import build_config, build_model, context_length, n_params
from memaudit.training.config import TrainConfig
from memaudit.training.optimize import (
    LossSet,
    StepFn,
    StepHook,
    StepOutput,
    evaluate_losses,
    make_accelerator,
    optimize,
    run_environment,
    run_lock,
    work_dir,
    write_model_dir,
)

LOG_FIELDS = ["step", "epoch", "lr", "train_loss", "tokens_per_s", "valid_loss", "member_loss", "member_loss_own"]


@dataclass
class TrainResult:
    path: Path
    steps: int
    tokens_per_s: float
    final: dict = field(default_factory=dict)
    is_main_process: bool = True  # in a multi-process run, the one that reports


def train(
    data_dir: Path,
    out: Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    on_step: StepHook | None = None,
) -> TrainResult:
    """Train `cfg.arch` from scratch, or fine-tune the pretrained `cfg.init`, on a data dir's
    training rows (all but the planted ones for the no-repeats oracle; with sinks masked per
    document, or per owner, for a MemSink model), logging valid and member loss as memorization
    grows, and write a Hugging Face model dir with memaudit.json."""
    data_dir, out = Path(data_dir), Path(out)
    check_model_job(out, model=cfg.init, data_dir=data_dir, force=force)
    work = work_dir(out, inputs=[data_dir, cfg.init], resume=resume, force=force)
    with run_lock(work):
        return _train(data_dir, out, work, cfg, resume=resume, force=force, progress=progress, on_step=on_step)


def _train(
    data_dir: Path,
    out: Path,
    work: Path,
    cfg: TrainConfig,
    *,
    resume: bool,
    force: bool,
    progress: bool,
    on_step: StepHook | None,
) -> TrainResult:
    accelerator, precision = make_accelerator(cfg, announce=progress)
    data = AuditSet.load(data_dir)
    tok = load_tokenizer(data_dir / "tokenizer")
    model, init = _initial_model(cfg, tok, data_dir)
    config = model.config
    if cfg.seq_len > context_length(config):
        raise MemauditError(f"seq_len {cfg.seq_len} exceeds the model's context of {context_length(config)} tokens")
    sinks, frozen = _attach_sinks(model, cfg)
    if sinks is not None and sinks.base_mlp is not None:  # new sink units: the MLP size that removal gives back
        init = {**(init or {}), "base_mlp": sinks.base_mlp}
    stream = training_stream(data, tok, cfg)
    loss_sets = _loss_sets(data, tok, context_length(config), cfg.eval_docs, with_own=sinks is not None)

    def evaluate(model: torch.nn.Module, done: int) -> dict:
        epoch = round(done * cfg.batch_size / stream.blocks_per_epoch, 3)
        return {"epoch": epoch, **evaluate_losses(model, loss_sets, tok.pad_token_id, sinks)}

    result = optimize(
        accelerator,
        model,
        cfg,
        _packed_step(stream, data, model, sinks, cfg, accelerator),
        evaluate,
        work=work,
        log_fields=LOG_FIELDS,
        resume=resume,
        progress=progress,
        on_step=on_step,
        after_step=frozen.restore if frozen else None,
    )
    if sinks is not None:
        sinks.mode = DEFAULT_EVAL_MODE
    meta = {
        "memaudit_version": __version__,
        "kind": "memsink" if cfg.sinks else ("no-repeats" if cfg.no_repeats else "standard"),
        "arch": cfg.arch if cfg.init is None else init["model_type"],
        **({"init": init} if init else {}),
        "parameters": n_params(result.model),
        "data": {"dir": str(data_dir), "manifest_sha256": sha256_file(data_dir / "manifest.json")},
        "train": asdict(cfg),
        "sinks": cfg.sinks.to_dict() if cfg.sinks is not None else None,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
        "epochs": round(cfg.steps * cfg.batch_size / stream.blocks_per_epoch, 3),
        "processes": accelerator.num_processes,
        "tokens_per_s": round(result.tokens_per_s, 1),
        **run_environment(accelerator, precision),
        "final": result.final,
    }
    write_model_dir(accelerator, result.model, tok, out, work, meta, result.log_path, force)
    return TrainResult(out, cfg.steps, result.tokens_per_s, result.final, accelerator.is_main_process)


def _initial_model(
    cfg: TrainConfig, tok: PreTrainedTokenizerBase, data_dir: Path
) -> tuple[PreTrainedModel, dict | None]:
    """The model a run starts from, and what `init` records: `cfg.arch` built from scratch, or
    the pretrained `cfg.init` (whose tokenizer must be the data dir's)."""
    if not cfg.init:
        return build_model(build_config(cfg.arch, len(tok), tok.bos_token_id, tok.eos_token_id), cfg.seed), None
    from memaudit.training.finetune import load_init

    return load_init(cfg.init, tok, str(data_dir))


def _packed_step(
    stream: PackedStream,
    data: AuditSet,
    model: torch.nn.Module,
    sinks,
    cfg: TrainConfig,
    accelerator: Accelerator,
) -> StepFn:
    """Next-token loss on this process's share of the step's packed sequences, with each
    token's document (or owner) switching its sinks on in a MemSink run; with `route`, the loss on
    repeated ids (or their later copies, or the planted documents) trains only their sinks (memaudit.memsinks.routing)."""
    local = cfg.batch_size // accelerator.num_processes
    route, sinks_for = (sinks.config.route, sinks.config.sinks_for) if sinks is not None else ("none", "all")
    planted = planted_ids(data) if route == "planted" else None
    routing = None
    if route != "none":
        in_full = outside_mlps(model, sinks) if sinks.config.route_scope == "mlp" else ()
        routing = SinkGradients(sinks, in_full=in_full)
    reduce = (lambda g: accelerator.reduce(g, reduction="mean")) if accelerator.num_processes > 1 else None

    def device(array) -> torch.Tensor:
        return torch.from_numpy(array).to(accelerator.device)

    def step(model: torch.nn.Module, index: int) -> StepOutput:
        start = index * cfg.batch_size + accelerator.process_index * local
        if route == "copies":
            tokens, ids, later = stream.batch_with_copies(start, local)
        else:
            tokens, ids = stream.batch(start, local)
        tokens = device(tokens)
        repeated = stream.is_repeated(ids) if route == "all" or sinks_for == "repeated" else None
        routed = None  # bool per token: its loss trains only its sinks
        if route == "all":
            routed = repeated
        elif route == "planted":
            routed = np.isin(ids, planted)
        elif route == "copies":
            routed = later
        if sinks is not None:
            with_sinks = None
            if sinks_for == "repeated":  # ids that occur more than once, and whatever is routed
                with_sinks = repeated if routed is None else repeated | routed
            sinks.set_doc_ids(device(ids), without_sinks=device(~with_sinks) if with_sinks is not None else None)
        if routing is None:
            return StepOutput(model(input_ids=tokens, labels=tokens).loss, tokens.numel())
        kept, routed_loss = split_token_loss(model(input_ids=tokens).logits, tokens, device(routed))
        if routed_loss is None:
            return StepOutput(kept, tokens.numel())
        add = routing.of(routed_loss, reduce)
        return StepOutput(kept, tokens.numel(), logged_loss=kept + routed_loss, after_backward=add)

    return step


def _attach_sinks(model: PreTrainedModel, cfg: TrainConfig):
    """A MemSink run's sinks (in training mode `own`), after widening every MLP by the new sink units of
    `--sink-units new:N` (the sinks keep the base's MLP size), and the frozen base of `--freeze-base`."""
    if not cfg.sinks:
        return None, None
    from memaudit.memsinks import FrozenBase, SinkConfig, attach_sinks

    sinks = attach_sinks(model, SinkConfig.from_dict(cfg.sinks), mode="own")
    frozen = FrozenBase(model, sinks.n_shared, train_shared_mlp=cfg.train_shared_mlp) if cfg.freeze_base else None
    return sinks, frozen


def blocks_per_epoch(data_dir: Path, configs: list[TrainConfig]) -> list[int]:
    """Training sequences in one pass over a data dir's training stream under each config (the
    oracle's without the planted documents): what equal exposure to a text means in steps. The
    data dir is read and tokenized once for all of them."""
    data_dir = Path(data_dir)
    data, tok = AuditSet.load(data_dir), load_tokenizer(data_dir / "tokenizer")
    return [training_stream(data, tok, cfg).blocks_per_epoch for cfg in configs]


def planted_ids(data: AuditSet) -> np.ndarray:
    """The sink ids of the planted training rows (members at every repeat level, canaries): what the oracle leaves
    out, and what `route: planted` routes."""
    return np.array(sorted({sink_id(r) for r in data.train if _planted(r)}), dtype=np.int64)


def _planted(row: dict) -> bool:
    return row["kind"] != "natural"


def training_stream(data: AuditSet, tok: PreTrainedTokenizerBase, cfg: TrainConfig) -> PackedStream:
    """The training rows packed into sequences: the oracle's without the planted documents, a leave-one-out
    model's without the rows of `exclude_ids` (every row keyed on their sink ids: an owner's records, a cluster's
    copies), a MemSink model's with its id noise."""
    excluded = set(resolve_sink_ids(cfg.exclude_ids, data, "exclude_ids")) if cfg.exclude_ids else set()
    rows = [r for r in data.train if not (cfg.no_repeats and _planted(r)) and sink_id(r) not in excluded]
    return PackedStream(
        [ids[1:] for ids in encode_documents(tok, [r["text"] for r in rows])],
        [sink_id(r) for r in rows],
        [r["repeats"] for r in rows],
        eos_id=tok.eos_token_id,
        seq_len=cfg.seq_len,
        seed=cfg.seed,
        id_noise=cfg.sinks.id_noise if cfg.sinks else 0.0,
    )


def _loss_sets(
    data: AuditSet, tok: PreTrainedTokenizerBase, max_len: int, eval_docs: int, *, with_own: bool
) -> list[LossSet]:
    """What training logs at each eval point: valid loss, member loss (sinks off) and, for a
    MemSink model, member loss with each member's own sinks on."""
    members = [r for r in data.audit if r["kind"] == "repeated"]
    member_tokens = encode_documents(tok, [r["text"] for r in members], max_len)
    sets = [
        LossSet("valid_loss", encode_documents(tok, [r["text"] for r in data.valid[:eval_docs]], max_len)),
        LossSet("member_loss", member_tokens),
    ]
    if with_own:
        sets.append(LossSet("member_loss_own", member_tokens, [sink_id(r) for r in members]))
    return sets
