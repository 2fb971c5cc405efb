"""`memaudit scan model`: load a model, score every audited sequence in one pass, compute the
metrics of the registry, and return the results document (the single source of truth that
every report view is rendered from)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from accelerate.utils import gather_object

from memaudit import __version__
from memaudit.common.errors import MemauditError
from memaudit.common.fileio import sha256_dir, sha256_file
from memaudit.common.parallel import process_state
from memaudit.common.precision import DEFAULT_PRECISION
from memaudit.corpus.audit import AuditSet, sink_id
from memaudit.corpus.sources import doc_id
from memaudit.corpus.tokenizer import encode_documents
from memaudit.memsinks.config import DEFAULT_EVAL_MODE
from memaudit.models.io import LoadedModel, load_model
from memaudit.models.zoo import context_length
from memaudit.probes.blind import blind_scores
from memaudit.probes.config import SCAN_SCHEMA_VERSION, ScanConfig, check_attack_inputs
from memaudit.probes.exposure import canary_exposures
from memaudit.probes.frequencies import TokenFrequencies, count_frequencies, read_frequencies
from memaudit.probes.generation import generate_continuations
from memaudit.probes.gradnorm import gradient_norms, plan_gradnorm
from memaudit.probes.metrics import compute_metrics, sequence_row
from memaudit.probes.recall import check_prefix_room, conditional_nll, recall_prefix, recall_score
from memaudit.probes.rmia import check_rmia_references, rmia_scores
from memaudit.probes.scoring import ScoredSequence, score_sequences


def score_texts(loaded: LoadedModel, texts: list[str], doc_ids: list[int], config: ScanConfig) -> list[ScoredSequence]:
    """The scoring pass over texts, each cut to the model's context."""
    tokens = encode_documents(loaded.tokenizer, texts, context_length(loaded.model.config))
    return score_tokens(loaded, tokens, doc_ids, config)


def score_tokens(
    loaded: LoadedModel, tokens: list[list[int]], doc_ids: list[int], config: ScanConfig
) -> list[ScoredSequence]:
    """The scoring pass over encoded documents, split across processes when launched with
    several (`accelerate launch`): each scores every n-th one, and all gather the list in order."""
    state = process_state()
    mine = list(range(state.process_index, len(tokens), state.num_processes))
    scored = score_sequences(
        loaded.model,
        [tokens[i] for i in mine],
        pad_id=loaded.tokenizer.pad_token_id,
        doc_ids=[doc_ids[i] for i in mine],
        sinks=loaded.sinks,
        max_batch_tokens=config.max_batch_tokens,
        topk=config.topk,
    )
    if state.num_processes == 1:
        return scored
    gathered = gather_object([(i, s) for i, s in zip(mine, scored)])
    return [s for _, s in sorted(gathered, key=lambda pair: pair[0])]


def _continuations(
    loaded: LoadedModel, rows: list[dict], tokens: list[list[int]], config: ScanConfig, samples: int = 1
) -> list[list[list[int]] | None]:
    """For each sequence long enough for the headline probe, `samples` continuations of the
    true prefix (1: greedy; more: top-k sampling); None for the others."""
    p, s = config.prefix_len, config.suffix_len
    todo = [i for i, t in enumerate(tokens) if len(t) > p + s]
    out: list[list[list[int]] | None] = [None] * len(rows)
    continuations = generate_continuations(
        loaded.model,
        [tokens[i][: p + 1] for i in todo],
        s,
        pad_id=loaded.tokenizer.pad_token_id,
        doc_ids=[sink_id(rows[i]) for i in todo],
        sinks=loaded.sinks,
        samples=samples,
        top_k=config.topk,
        seed=config.seed,
    )
    for i, cont in zip(todo, continuations):
        out[i] = cont
    return out


@dataclass(frozen=True)
class _AuditInput:
    """What a scan audits: the rows, the clean validation texts, and where they came from."""

    rows: list[dict]
    valid_texts: list[str]
    data_info: dict  # recorded as `data` in results.json
    canary_spec: dict | None  # the data dir's canary template, for exposure
    natural_texts: list[str] = field(default_factory=list)  # DC-PDD's default frequency corpus


def _audit_input(
    data_dir: str | Path | None, audit_rows: list[dict] | None, valid_texts: list[str] | None
) -> _AuditInput:
    data_info: dict = {"audit_sha256": None}
    spec = None
    natural = None
    if data_dir is not None:  # audit_rows given too: a subset of the data dir's (memaudit stress)
        data = AuditSet.load(Path(data_dir))
        audit_rows = data.audit if audit_rows is None else audit_rows
        valid_texts = [r["text"] for r in data.valid] if valid_texts is None else valid_texts
        natural = [r["text"] for r in data.train if r["kind"] == "natural"]
        data_info = {"dir": str(data_dir), "manifest_sha256": sha256_file(Path(data_dir) / "manifest.json")}
        spec = data.manifest.get("canary")
    if not audit_rows:
        raise MemauditError("nothing to audit: the audit set is empty")
    data_info["audit_sha256"] = hashlib.sha256(json.dumps(sorted(r["doc_id"] for r in audit_rows)).encode()).hexdigest()
    # Without a data dir, the clean validation text stands in for the natural training text.
    natural = natural if natural is not None else valid_texts or []
    return _AuditInput(audit_rows, valid_texts or [], data_info, spec, natural)


def _set_sink_mode(loaded: LoadedModel, sinks_mode: str | None) -> str | None:
    """The sink mode the scan runs in (a MemSink model defaults to DEFAULT_EVAL_MODE), None for other models."""
    if loaded.sinks is not None:
        loaded.sinks.mode = sinks_mode or DEFAULT_EVAL_MODE
        return loaded.sinks.mode
    if sinks_mode is not None:
        raise MemauditError(f"sinks_mode {sinks_mode}: {loaded.path} is not a MemSink model")
    return None


def _across_processes(work: Callable[[list], list], items: list) -> list:
    """`work(items)` (one result per item) split across the processes of a multi-process launch as
    the scoring pass is (each takes every n-th item), gathered in order on every process."""
    state = process_state()
    mine = list(range(state.process_index, len(items), state.num_processes))
    done = work([items[i] for i in mine])
    if state.num_processes == 1:
        return done
    gathered = gather_object(list(zip(mine, done)))
    return [r for _, r in sorted(gathered, key=lambda pair: pair[0])]


@dataclass
class _AttackPlan:
    """What the membership attacks beyond the one pass's own statistics need (registry.ATTACK_DOCS),
    prepared, and every input of theirs checked, before any scoring starts."""

    frequencies: np.ndarray | None = None  # DC-PDD: a smoothed probability per token id
    recall_prefix: list[int] | None = None  # ReCaLL's prefix P (token ids)
    recall_prefix_ids: list[int] = field(default_factory=list)  # each prefix token's document (MemSink `own`)
    gradnorm_chunk: int | None = None  # texts per batched backward
    rmia_references: list = field(default_factory=list)  # paths, hub ids or LoadedModels
    population: list[int] = field(default_factory=list)  # RMIA's z: indices of clean texts that are not audited
    record: dict = field(default_factory=dict)  # what results.json says they used (`attack_inputs`)


def _plan_attacks(
    loaded: LoadedModel,
    audit: _AuditInput,
    tokens: list[list[int]],
    config: ScanConfig,
    rmia_references: Sequence,
    frequencies: TokenFrequencies | str | Path | None,
) -> _AttackPlan:
    """Every refusal of the attacks is here, before the scoring pass: an RMIA reference with another
    tokenizer, a frequency file of another tokenizer, no room in the context for a ReCaLL prefix,
    a model too large for GradNorm's per-text gradients. The clean validation texts that are not
    audited are the known non-members ReCaLL's prefix and RMIA's population are made of."""
    attacks, plan = config.mia_attacks, _AttackPlan()
    audited = {r["text"] for r in audit.rows}
    clean = [i for i, t in enumerate(audit.valid_texts) if t not in audited]
    if "rmia" in attacks and rmia_references:
        check_rmia_references(loaded.tokenizer, rmia_references, loaded.path)
        if not clean:
            raise MemauditError(
                "rmia needs population text that is neither scored member nor non-member: a data dir's valid.jsonl, "
                "or --valid with --audit"
            )
        plan.rmia_references, plan.population = list(rmia_references), clean
        plan.record["rmia"] = {
            "references": [str(getattr(r, "path", r)) for r in rmia_references],
            "population": len(clean),
            "gamma": config.rmia_gamma,
            "offline_a": config.rmia_offline_a,
        }
    if "recall" in attacks:
        room = check_prefix_room(context_length(loaded.model.config), [len(t) for t in tokens], bool(clean))
        texts = [audit.valid_texts[i] for i in clean]
        docs = encode_documents(loaded.tokenizer, texts)
        plan.recall_prefix = recall_prefix(docs, room)
        plan.recall_prefix_ids = [doc_id(t) for t, d in zip(texts, docs) for _ in d][-len(plan.recall_prefix) :]
        plan.record["recall"] = {"prefix_tokens": len(plan.recall_prefix), "room": room, "from_texts": len(texts)}
    if "gradnorm" in attacks:
        plan.gradnorm_chunk = plan_gradnorm(loaded.model, max(len(t) for t in tokens), loaded.sinks).chunk
        plan.record["gradnorm"] = {"p": 2, "texts_per_backward": plan.gradnorm_chunk}
    if "dcpdd" in attacks:
        freqs = read_frequencies(frequencies) if isinstance(frequencies, (str, Path)) else frequencies
        if freqs is None and audit.natural_texts:
            freqs = count_frequencies(loaded.tokenizer, audit.natural_texts, source="the audit set's natural text")
        if freqs is not None:
            freqs.check_tokenizer(loaded.tokenizer, str(loaded.path))
            plan.frequencies = freqs.probabilities()
            counted = {"documents": freqs.documents, "tokens": int(freqs.counts.sum())}
            plan.record["dcpdd"] = {"frequencies": freqs.source, **counted, "a": config.dcpdd_a}
    return plan


def _nll(scored: ScoredSequence) -> float:
    return float(-scored.logp.astype(np.float64).mean()) if len(scored) else float("nan")


def _more_scores(
    loaded: LoadedModel,
    audit: _AuditInput,
    tokens: list[list[int]],
    scored: list[ScoredSequence],
    valid: list[ScoredSequence],
    config: ScanConfig,
    plan: _AttackPlan,
    precision: str,
) -> list[dict[str, float]]:
    """Per audited sequence, the scores of the attacks that need more than its scoring pass:
    `recall` (a forward pass after the prefix), `gradnorm` (per-text gradients), `rmia` (the
    reference models, each loaded, scored on the audited and the population texts, and let go)."""
    extra: list[dict[str, float]] = [{} for _ in tokens]
    nll = [_nll(s) for s in scored]
    todo = [i for i, n in enumerate(nll) if np.isfinite(n)]
    pad = loaded.tokenizer.pad_token_id
    if plan.recall_prefix is not None:
        conditional = _across_processes(
            lambda idx: conditional_nll(
                loaded.model,
                plan.recall_prefix,
                [tokens[i] for i in idx],
                pad_id=pad,
                doc_ids=[sink_id(audit.rows[i]) for i in idx],
                prefix_doc_ids=plan.recall_prefix_ids,
                sinks=loaded.sinks,
                max_batch_tokens=config.max_batch_tokens,
            ),
            todo,
        )
        for i, c in zip(todo, conditional):
            extra[i]["recall"] = recall_score(c, nll[i])
    if plan.gradnorm_chunk is not None:
        chunk = plan.gradnorm_chunk
        norms = _across_processes(
            lambda idx: gradient_norms(loaded.model, [tokens[i] for i in idx], pad_id=pad, chunk=chunk), todo
        )
        for i, g in zip(todo, norms):
            extra[i]["gradnorm"] = -g
    if plan.rmia_references:
        population = [audit.valid_texts[i] for i in plan.population]
        pop_tokens = encode_documents(loaded.tokenizer, population, context_length(loaded.model.config))
        references_x, references_z = [], []
        for ref in plan.rmia_references:
            ref_loaded = ref if isinstance(ref, LoadedModel) else load_model(ref, precision=precision)
            longest = max(len(t) for t in [*tokens, *pop_tokens])
            if context_length(ref_loaded.model.config) < longest:
                raise MemauditError(
                    f"rmia reference {ref_loaded.path}: its context ({context_length(ref_loaded.model.config)} tokens) "
                    f"is shorter than the texts the scanned model scores ({longest} tokens)"
                )
            ids = [sink_id(audit.rows[i]) for i in todo]
            audited = score_tokens(ref_loaded, [tokens[i] for i in todo], ids, config)
            references_x.append([_nll(s) for s in audited])
            pop = score_tokens(ref_loaded, pop_tokens, [doc_id(t) for t in population], config)
            references_z.append([_nll(s) for s in pop])
            del ref_loaded
        scores = rmia_scores(
            [nll[i] for i in todo],
            references_x,
            [_nll(valid[i]) for i in plan.population],
            references_z,
            gamma=config.rmia_gamma,
            a=config.rmia_offline_a,
        )
        for i, v in zip(todo, scores):
            extra[i]["rmia"] = float(v)
    return extra


def _sequence_rows(
    loaded: LoadedModel,
    audit: _AuditInput,
    tokens: list[list[int]],
    config: ScanConfig,
    reference: dict | None,
    *,
    plan: _AttackPlan | None = None,
    valid: list[ScoredSequence] | None = None,
    truncated: list[bool] | None = None,
    precision: str = DEFAULT_PRECISION,
) -> tuple[list[dict], list[dict], list[list[int]]]:
    """Every scored sequence's row (sequence_row), with the audit rows and tokens they came from
    (sequences that scored no token are left out). `plan`: the attacks beyond the one pass
    (_plan_attacks), with `valid` (the validation texts' scores: RMIA's population); `truncated`:
    which sequences were cut to the context (zlib is then taken over the decoded scored tokens)."""
    scored = score_tokens(loaded, tokens, [sink_id(r) for r in audit.rows], config)  # `own` mode: each row's sinks
    plan = plan or _AttackPlan()
    more = _more_scores(loaded, audit, tokens, scored, valid or [], config, plan, precision)
    cut = truncated or [False] * len(tokens)
    ref_loss = {r["doc_id"]: r["loss"] for r in reference["sequences"]} if reference else {}
    exposures = {}
    if audit.canary_spec and config.exposure_candidates:  # candidate secrets scored exactly like the audit set
        exposures = canary_exposures(
            [r for r in audit.rows if r["kind"] == "canary"],
            audit.canary_spec,
            lambda ts: score_texts(loaded, ts, [doc_id(t) for t in ts], config),
            config.exposure_candidates,
            config.seed,
        )
    kept = [(r, t, s, m, c) for r, t, s, m, c in zip(audit.rows, tokens, scored, more, cut) if len(s) > 0]
    seqs = [
        sequence_row(
            r,
            t,
            s,
            config,
            loaded.tokenizer,
            ref_loss=ref_loss.get(r["doc_id"]),
            exposure=exposures.get(r["doc_id"]),
            truncated=c,
            frequencies=plan.frequencies,
            more_scores=m,
        )
        for r, t, s, m, c in kept
    ]
    return seqs, [k[0] for k in kept], [k[1] for k in kept]


def _add_blind_scores(seqs: list[dict], rows: list[dict], config: ScanConfig) -> None:
    """`blind` on every text row, in place: its member probability under a classifier that sees
    only the texts (blind.py), the baseline a membership attack must beat."""
    text = [(seq, row["text"]) for seq, row in zip(seqs, rows) if seq["kind"] != "canary"]
    scores = blind_scores([t for _, t in text], [seq["member"] for seq, _ in text], config.seed)
    for (seq, _), score in zip(text, scores or []):
        seq["blind"] = score


def _check_extractable(seqs: list[dict], config: ScanConfig) -> int:
    """How many text sequences are too short for extraction; an error if all of them are."""
    text = [r for r in seqs if r["kind"] != "canary"]
    short = sum(1 for r in text if "exact" not in r)
    if short == len(text):
        raise MemauditError(
            f"every audited sequence is shorter than prefix {config.prefix_len} + suffix {config.suffix_len} tokens; "
            "audit longer texts or lower the prefix/suffix lengths"
        )
    return short


def _add_generations(
    loaded: LoadedModel, seqs: list[dict], rows: list[dict], tokens: list[list[int]], config: ScanConfig, emitted: bool
) -> None:
    """`emitted` (what greedy decoding says after each prefix, for reports to show) and, with
    `sampling_trials`, `sampled_exact` (the sampling attack: does any of n samples give the
    exact suffix?) on the rows, in place."""
    if emitted:
        for row, cont in zip(seqs, _continuations(loaded, rows, tokens, config)):
            if cont is not None:
                row["emitted"] = loaded.tokenizer.decode(cont[0])
    if config.sampling_trials:
        p, s = config.prefix_len, config.suffix_len
        samples = _continuations(loaded, rows, tokens, config, samples=config.sampling_trials)
        for row, seq, cont in zip(seqs, tokens, samples):
            if cont is not None and row["kind"] != "canary":
                row["sampled_exact"] = any(c == seq[p + 1 : p + s + 1] for c in cont)


# What results.json keeps of a model's memaudit.json: how long it trained, and for an unlearned model whether
# its max-degradation guard stopped the run (reports then say why it may score like its input).
TRAINED_KEYS = (
    "steps",
    "epochs",
    "tokens_seen",
    "seed",
    "method",
    "steps_done",
    "stopped_early",
    "stop_reason",
    "stopped_at_step",
)


def _model_info(loaded: LoadedModel, sink_mode: str | None) -> dict:
    """The results document's `model`: what was scanned, how, and its training record."""
    meta, path = loaded.meta, Path(loaded.path)
    return {
        "path": str(loaded.path),
        "sha256": sha256_dir(path) if path.is_dir() else sha256_file(path) if path.is_file() else None,
        "kind": meta.get("kind", "external"),
        "arch": meta.get("arch", type(loaded.model).__name__),
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "sink_mode": sink_mode,
        "precision": loaded.precision.to_dict(),
        "sinks": meta.get("sinks"),
        "trained": {k: meta[k] for k in TRAINED_KEYS if k in meta},
    }


def scan(
    model: str | Path | LoadedModel,
    *,
    data_dir: str | Path | None = None,
    audit_rows: list[dict] | None = None,
    valid_texts: list[str] | None = None,
    sinks_mode: str | None = None,
    config: ScanConfig | None = None,
    emitted: bool = True,
    reference: dict | None = None,
    standard: dict | None = None,
    before: dict | None = None,
    attack: dict | None = None,
    rmia_references: Sequence[str | Path | LoadedModel] = (),
    frequencies: TokenFrequencies | str | Path | None = None,
    precision: str = DEFAULT_PRECISION,
) -> dict:
    """Score a model on an audit set (a data dir, or rows from `load_audit_rows`, or both: a
    subset of the data dir's rows); returns the results document, the single source of truth
    every report view is rendered from. In a multi-process launch every process returns it.

    `reference` is the results document of a reference model (never trained on the members, or
    the model before unlearning) scanned on the same audit set: it feeds the `ref` membership
    attack and the reference-relative metrics (forgetting, privleak, degradation). `standard`,
    `before` and `attack` (memaudit stress) add gap_closed and the robustness metrics
    (metrics.compute_metrics).

    `rmia_references`: models never trained on the members, with the model's tokenizer (paths or hub
    ids, loaded one at a time at `precision`, or LoadedModels), for the `rmia` attack; `frequencies`:
    DC-PDD's token frequencies (a TokenFrequencies or a frequency file), by default counted from the
    audit set's natural training text (without a data dir: the validation texts)."""
    config = config or ScanConfig()
    check_attack_inputs(config, rmia_references=tuple(rmia_references), frequencies=frequencies)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, precision=precision)
    audit = _audit_input(data_dir, audit_rows, valid_texts)
    sink_mode = _set_sink_mode(loaded, sinks_mode)
    ctx = context_length(loaded.model.config)
    whole = encode_documents(loaded.tokenizer, [r["text"] for r in audit.rows])  # tokenized once, cut below
    tokens = [t[:ctx] for t in whole]
    plan = _plan_attacks(loaded, audit, tokens, config, rmia_references, frequencies)  # refusals come first
    # `own` mode scores each validation text with its own (never trained) sinks.
    valid = (
        score_texts(loaded, audit.valid_texts, [doc_id(t) for t in audit.valid_texts], config)
        if audit.valid_texts
        else []
    )
    truncated = [len(t) > ctx for t in whole]
    seqs, kept_rows, kept_tokens = _sequence_rows(
        loaded, audit, tokens, config, reference, plan=plan, valid=valid, truncated=truncated, precision=precision
    )
    short = _check_extractable(seqs, config)
    _add_blind_scores(seqs, kept_rows, config)
    _add_generations(loaded, seqs, kept_rows, kept_tokens, config, emitted)
    text = [r for r in seqs if r["kind"] != "canary"]
    return {
        "schema_version": SCAN_SCHEMA_VERSION,
        "memaudit_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": _model_info(loaded, sink_mode),
        "data": audit.data_info,
        "suite": asdict(config),
        "counts": {
            "members": sum(1 for r in text if r["member"]),
            "nonmembers": sum(1 for r in text if not r["member"]),
            "canaries": len(seqs) - len(text),
            "too_short_for_extraction": short,
            "truncated_to_context": sum(1 for t in whole if len(t) > ctx),
            "valid_documents": len(valid),
        },
        "processes": process_state().num_processes,
        "reference": {"path": reference["model"]["path"], "sha256": reference["model"]["sha256"]}
        if reference
        else None,
        "attack_inputs": plan.record,  # what the attacks beyond the one pass used (docs/metrics.md)
        "metrics": compute_metrics(
            seqs, valid, config, reference=reference, standard=standard, before=before, attack=attack
        ),
        "sequences": seqs,
    }
