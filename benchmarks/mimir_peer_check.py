"""memaudit's membership scores against MIMIR's implementation of the same attacks (loss, zlib,
Min-K%, Min-K%++, GradNorm, ReCaLL, DC-PDD), per text, on the same model and the same token ids.

MIMIR (github.com/iamgroot42/mimir) is not on PyPI and is not copied into this project: give a
checkout of it with `--mimir PATH` (the directory that holds the `mimir` package), e.g.

    git clone https://github.com/iamgroot42/mimir /tmp/mimir
    python benchmarks/mimir_peer_check.py --mimir /tmp/mimir [--model DIR --data DIR] [--json FILE]

Importing MIMIR: `mimir.config` needs `simple_parsing` and `mimir.data_utils` needs `nltk` (both on
PyPI: `pip install simple_parsing nltk`; this script stubs whichever is missing, as neither is used
by the attacks compared); `mimir.models` imports `openai` and `hf_olmo` (OLMo's package), which the
compared code never calls: the script puts empty modules in their place when they are not installed.

How MIMIR is driven: each attack class's own `_attack` method, on an object built with
`Cls.__new__(Cls)`, whose `target_model` is a small duck-typed model whose `get_probabilities` and
`get_ll` are MIMIR's own `mimir.models.Model` functions (they read only `model`, `tokenizer`,
`device`, `name`, `stride`, `max_length`; stride and max_length are set as MIMIR's
`load_model_properties` sets them). DC-PDD's frequency table comes from MIMIR's own `__init__`
(so its own Laplace smoothing), with its C4 download replaced by memaudit's counts of the same
reference corpus (`count_frequencies` over the audit set's natural text).

memaudit's side is memaudit's own code paths: `score_sequences` on `[boundary] + tokens` and
`attack_scores` (loss, zlib, mink, minkpp, dcpdd), `conditional_nll` + `recall_score` (ReCaLL),
`plan_gradnorm` + `gradient_norms` (GradNorm, negated as the scan negates it).

Matched runs ("same ids"): MIMIR gets exactly memaudit's token ids, boundary token first, so both
score the same tokens from the same context. Its scores are mapped to memaudit's orientation
(higher = member) by the documented form: MIMIR's loss, zlib, Min-K%, Min-K%++, DC-PDD and ReCaLL
values are negated; GradNorm's `-||g||` is memaudit's value as is. Reported per attack: the largest
absolute difference after the mapping, Spearman's rho, and each side's AUC (members vs held-out),
each side oriented by its own convention (MIMIR's `get_roc_metrics` negates every score: lower =
member).

Deliberate differences, each run as MIMIR runs it by default, with its AUC beside memaudit's:
- first token: MIMIR tokenizes the text itself with no boundary token, so the first text token is
  never scored (loss, zlib, Min-K%, Min-K%++);
- ReCaLL's prefix: MIMIR joins the non-member texts with "" (no boundary tokens between them), keeps
  as many whole texts as fit beside the average text, scores the text's first token after the
  prefix but not without it, and slides a non-overlapping window past the context; memaudit's
  prefix is the last tokens of the boundary-joined documents that fit beside the longest text;
- GradNorm's p: MIMIR's default is p = inf (memaudit and OpenUnlearning use p = 2), and MIMIR's
  orientation ranks a LARGER gradient as member (it returns -||g|| and its ROC negates again);
- zlib: memaudit's `zlib_total` (total NLL over zlib bytes) is not MIMIR's zlib; its rank agreement
  is shown.

Without `--model/--data` the script builds a small audit set and trains gpt2-1m on it as `memaudit
demo --quick` does (members repeated 1, 8 and 64 times), in `--work` (a temporary dir by default)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import transformers
from scipy.stats import spearmanr

from memaudit.common.hardware import cpu_description
from memaudit.corpus.audit import AuditSet
from memaudit.corpus.tokenizer import boundary_id, encode_documents
from memaudit.models.io import load_model
from memaudit.models.zoo import context_length
from memaudit.probes.frequencies import count_frequencies
from memaudit.probes.gradnorm import gradient_norms, plan_gradnorm
from memaudit.probes.membership import attack_scores, auc
from memaudit.probes.recall import check_prefix_room, conditional_nll, recall_prefix, recall_score
from memaudit.probes.scoring import score_sequences

K = 0.2  # Min-K% and Min-K%++ (memaudit's and MIMIR's default)
DCPDD_A = 0.01  # DC-PDD's cap (both defaults)


def import_mimir(path: Path) -> types.SimpleNamespace:
    """MIMIR's modules from a checkout, with empty stand-ins for the imports the compared code never uses."""
    for name in ("openai", "hf_olmo"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    try:
        import simple_parsing.helpers  # noqa: F401
    except ImportError:
        sp, helpers = types.ModuleType("simple_parsing"), types.ModuleType("simple_parsing.helpers")
        helpers.Serializable, helpers.field = object, lambda *a, default=None, **k: default
        sp.helpers = helpers
        sys.modules |= {"simple_parsing": sp, "simple_parsing.helpers": helpers}
    try:
        import nltk.tokenize  # noqa: F401
    except ImportError:
        nltk, tokenize = types.ModuleType("nltk"), types.ModuleType("nltk.tokenize")
        tokenize.WhitespaceTokenizer = object
        nltk.tokenize = tokenize
        sys.modules |= {"nltk": nltk, "nltk.tokenize": tokenize}
    os.environ["MIMIR_CACHE_PATH"] = tempfile.mkdtemp(prefix="mimir-cache-")  # read at import: DC-PDD's table
    sys.path.insert(0, str(path))
    import mimir.models
    from mimir.attacks.dc_pdd import DC_PDDAttack
    from mimir.attacks.gradnorm import GradNormAttack
    from mimir.attacks.loss import LOSSAttack
    from mimir.attacks.min_k import MinKProbAttack
    from mimir.attacks.min_k_plus_plus import MinKPlusPlusAttack
    from mimir.attacks.recall import ReCaLLAttack
    from mimir.attacks.zlib import ZLIBAttack

    return types.SimpleNamespace(
        Model=mimir.models.Model,
        loss=LOSSAttack,
        zlib=ZLIBAttack,
        mink=MinKProbAttack,
        minkpp=MinKPlusPlusAttack,
        gradnorm=GradNormAttack,
        recall=ReCaLLAttack,
        dcpdd=DC_PDDAttack,
        source=str(Path(mimir.models.__file__).resolve().parent),
    )


class MimirTarget:
    """What MIMIR's Model.get_probabilities / get_ll read, with those two functions as its methods."""

    def __init__(self, mimir, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.device = next(model.parameters()).device
        self.max_length = context_length(model.config)  # MIMIR's load_model_properties: n_positions ...
        self.stride = self.max_length // 2  # ... and half of it
        self.get_probabilities = types.MethodType(mimir.Model.get_probabilities, self)
        self.get_ll = types.MethodType(mimir.Model.get_ll, self)


def attack(cls, target):
    obj = cls.__new__(cls)
    obj.target_model, obj.ref_model, obj.config, obj.is_loaded = target, None, None, True
    return obj


def build(work: Path) -> tuple[Path, Path]:
    """An audit set and a gpt2-1m trained on it, as `memaudit demo --quick` builds them (more members)."""
    from memaudit.app.demo import QUICK, training_plan
    from memaudit.corpus.audit import write_audit_set
    from memaudit.training.train import train

    data, model = work / "data", work / "model"
    if not (data / "manifest.json").exists():
        write_audit_set(replace(QUICK.data, members_per_level=12, n_valid=60), data, force=True)
    if not (model / "config.json").exists():
        train(data, model, training_plan(QUICK, data)["standard"], force=True, progress=False)
    return model, data


def orient_auc(scores: np.ndarray, member: np.ndarray) -> float:
    return float(auc(scores[member], scores[~member]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mimir", type=Path, required=True, help="a checkout of github.com/iamgroot42/mimir")
    ap.add_argument("--model", type=Path, help="a model dir trained by memaudit (with --data)")
    ap.add_argument("--data", type=Path, help="its data dir (audit.jsonl, valid.jsonl, train.jsonl)")
    ap.add_argument("--work", type=Path, help="where to build the model and data when not given")
    ap.add_argument("--json", type=Path, default=Path("mimir_peer_check.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()
    mimir = import_mimir(args.mimir)
    if args.model is None or args.data is None:
        work = args.work or Path(tempfile.mkdtemp(prefix="mimir-peer-"))
        print(f"building the audit set and the model in {work} ...", flush=True)
        args.model, args.data = build(work)
    loaded = load_model(args.model, precision="fp32")
    model, tok = loaded.model.eval(), loaded.tokenizer
    data = AuditSet.load(args.data)
    rows = [r for r in data.audit if r["kind"] != "canary"]  # members and held-out, as the membership metrics
    member = np.array([r["kind"] != "heldout" for r in rows])
    texts = [r["text"] for r in rows]
    ctx = context_length(model.config)
    seqs = encode_documents(tok, texts, ctx)
    assert all(len(s) < ctx for s in seqs), "a text was cut to the context: zlib would differ by design"
    start = boundary_id(tok)
    pad = tok.pad_token_id

    # memaudit
    audited = set(texts)
    clean = [r["text"] for r in data.valid if r["text"] not in audited]
    natural = [r["text"] for r in data.train if r["kind"] == "natural"]
    freqs = count_frequencies(tok, natural, source="natural")
    scored = score_sequences(model, seqs, pad_id=pad)
    names = ("loss", "zlib", "zlib_total", "mink", "minkpp", "dcpdd")
    ours = {a: [] for a in (*names, "recall", "gradnorm")}
    for s, t, text in zip(scored, seqs, texts):
        got = attack_scores(
            s, text, K, names, tokens=np.asarray(t[1:]), frequencies=freqs.probabilities(), dcpdd_a=DCPDD_A
        )
        for a in names:
            ours[a].append(got[a])
    room = check_prefix_room(ctx, [len(s) for s in seqs], bool(clean))
    prefix = recall_prefix(encode_documents(tok, clean), room)
    cond = conditional_nll(model, prefix, seqs, pad_id=pad)
    ours["recall"] = [recall_score(c, -float(s.logp.astype(np.float64).mean())) for c, s in zip(cond, scored)]
    chunk = plan_gradnorm(model, max(len(s) for s in seqs)).chunk
    ours["gradnorm"] = [-g for g in gradient_norms(model, seqs, pad_id=pad, chunk=chunk)]
    ours = {a: np.array(v, dtype=np.float64) for a, v in ours.items()}

    # MIMIR on the same ids (boundary first), and as MIMIR runs by default (its own tokenization)
    target = MimirTarget(mimir, model, tok, "memaudit-peer-check")  # a plain name: DC-PDD caches under it
    for p in model.parameters():
        p.requires_grad_(True)  # GradNorm's backward (memaudit's torch.func path does not need it)
    counts = torch.as_tensor(freqs.counts, dtype=torch.float32)
    cls = mimir.dcpdd
    cls._collect_frequency_data = lambda self, fil_num=15: self.fre_dis.add_(counts)  # no C4 download
    dc = cls(types.SimpleNamespace(), target)  # MIMIR's own __init__: its cache file, its Laplace smoothing
    loss_a, zlib_a, mink_a, minkpp_a = (attack(c, target) for c in (mimir.loss, mimir.zlib, mimir.mink, mimir.minkpp))
    grad_a, recall_a, recall_raw = (
        attack(mimir.gradnorm, target),
        attack(mimir.recall, target),
        attack(mimir.recall, target),
    )
    # Matched ReCaLL: memaudit's prefix ids with the boundary token after it, the text without its boundary
    # token, so MIMIR's conditional pass scores exactly memaudit's tokens after exactly memaudit's context.
    prefix_text = tok.decode([*prefix, start])
    prefix_ok = tok(prefix_text).input_ids == [*prefix, start]
    recall_a.prefix, recall_raw.prefix = [prefix_text], None  # None: MIMIR's process_prefix picks its own
    avg_len = int(np.mean([len(s) - 1 for s in seqs]))
    raw_dict = {"prefix": clean, "num_shots": len(clean), "avg_length": avg_len}
    theirs = {a: [] for a in ("loss", "zlib", "mink", "minkpp", "dcpdd", "recall", "gradnorm", "gradnorm_inf")}
    default = {a: [] for a in ("loss", "zlib", "mink", "minkpp", "recall")}
    dcpdd_ids_ok = True
    for t, text in zip(seqs, texts):
        ids = np.array([t])
        probs, all_probs = target.get_probabilities(text, tokens=ids, return_all_probs=True)
        loss = loss_a._attack(text, probs=probs)
        theirs["loss"].append(loss)
        theirs["zlib"].append(zlib_a._attack(text, probs=probs, loss=loss))
        theirs["mink"].append(mink_a._attack(text, probs=probs, k=K))
        theirs["minkpp"].append(minkpp_a._attack(text, probs=probs, all_probs=all_probs, k=K))
        dcpdd_ids_ok &= [start, *tok(text).input_ids] == list(t)  # DC-PDD tokenizes the text itself, EOS first
        theirs["dcpdd"].append(dc._attack(text, probs=None, a=DCPDD_A))
        text_ids = types.SimpleNamespace(input_ids=torch.tensor([t[1:]]))
        recall_dict = {"prefix": recall_a.prefix, "num_shots": 1, "avg_length": avg_len}
        theirs["recall"].append(recall_a._attack(text, probs=probs, tokens=text_ids, recall_dict=recall_dict))
        theirs["gradnorm"].append(float(grad_a._attack(text, probs=None, tokens=ids, p=2)))
        theirs["gradnorm_inf"].append(float(grad_a._attack(text, probs=None, tokens=ids, p=np.inf)))
        # As MIMIR runs by default: its own tokenization of the text (no boundary token), its own prefix.
        own = tok(text, return_tensors="pt")
        probs0, all0 = target.get_probabilities(text, return_all_probs=True)
        loss0 = loss_a._attack(text, probs=probs0)
        default["loss"].append(loss0)
        default["zlib"].append(zlib_a._attack(text, probs=probs0, loss=loss0))
        default["mink"].append(mink_a._attack(text, probs=probs0, k=K))
        default["minkpp"].append(minkpp_a._attack(text, probs=probs0, all_probs=all0, k=K))
        default["recall"].append(recall_raw._attack(text, probs=probs0, tokens=own, recall_dict=raw_dict))
    theirs = {a: np.array(v, dtype=np.float64) for a, v in theirs.items()}
    default = {a: np.array(v, dtype=np.float64) for a, v in default.items()}

    # MIMIR's value -> memaudit's form (higher = member), and MIMIR's own ROC orientation (lower = member)
    to_ours = {"loss": -1, "zlib": -1, "mink": -1, "minkpp": -1, "dcpdd": -1, "recall": -1, "gradnorm": 1}
    table = []
    for a, sign in to_ours.items():
        mapped = sign * theirs[a]
        table.append(
            {
                "attack": a,
                "mapping": "memaudit = -MIMIR" if sign < 0 else "memaudit = MIMIR",
                "max_abs_diff": float(np.max(np.abs(ours[a] - mapped))),
                "max_rel_diff": float(np.max(np.abs(ours[a] - mapped) / np.maximum(np.abs(ours[a]), 1e-30))),
                "spearman": float(spearmanr(ours[a], mapped).statistic),
                "auc_memaudit": orient_auc(ours[a], member),
                "auc_mimir": orient_auc(-theirs[a], member),
            }
        )
    differences = []
    for a in ("loss", "zlib", "mink", "minkpp"):
        differences.append(
            {
                "difference": f"first token ({a}): MIMIR's own tokenization, no boundary token, first token unscored",
                "auc_memaudit": orient_auc(ours[a], member),
                "auc_mimir": orient_auc(-default[a], member),
                "spearman": float(spearmanr(ours[a], -default[a]).statistic),
            }
        )
    differences += [
        {
            "difference": "ReCaLL prefix: MIMIR's own (texts joined by '', whole texts that fit the average length, "
            "first token scored only with the prefix)",
            "auc_memaudit": orient_auc(ours["recall"], member),
            "auc_mimir": orient_auc(-default["recall"], member),
            "spearman": float(spearmanr(ours["recall"], -default["recall"]).statistic),
        },
        {
            "difference": "GradNorm p = inf (MIMIR's default) instead of p = 2, memaudit's orientation",
            "auc_memaudit": orient_auc(ours["gradnorm"], member),
            "auc_mimir": orient_auc(theirs["gradnorm_inf"], member),
            "spearman": float(spearmanr(ours["gradnorm"], theirs["gradnorm_inf"]).statistic),
        },
        {
            "difference": "GradNorm orientation: MIMIR's ROC ranks a larger gradient as member (p = 2)",
            "auc_memaudit": orient_auc(ours["gradnorm"], member),
            "auc_mimir": orient_auc(-theirs["gradnorm"], member),
            "spearman": float(spearmanr(ours["gradnorm"], -theirs["gradnorm"]).statistic),
        },
        {
            "difference": "GradNorm p = inf in MIMIR's orientation (MIMIR's defaults)",
            "auc_memaudit": orient_auc(ours["gradnorm"], member),
            "auc_mimir": orient_auc(-theirs["gradnorm_inf"], member),
            "spearman": float(spearmanr(ours["gradnorm"], -theirs["gradnorm_inf"]).statistic),
        },
        {
            "difference": "memaudit zlib_total (total NLL / zlib bytes) against MIMIR's zlib",
            "auc_memaudit": orient_auc(ours["zlib_total"], member),
            "auc_mimir": orient_auc(-theirs["zlib"], member),
            "spearman": float(spearmanr(ours["zlib_total"], -theirs["zlib"]).statistic),
        },
    ]
    print(
        f"model {args.model}, data {args.data}: {member.sum()} members, {(~member).sum()} held-out; "
        f"MIMIR from {mimir.source}; CPU {cpu_description()}"
    )
    print(
        f"checks: DC-PDD's own tokenization gives memaudit's ids: {dcpdd_ids_ok}; ReCaLL prefix round-trips: {prefix_ok}"
    )
    print(
        f"\n{'attack':<9} {'mapping':<18} {'max |diff|':>10} {'max rel':>9} {'spearman':>8} {'AUC ours':>8} {'AUC MIMIR':>9}"
    )
    for r in table:
        print(
            f"{r['attack']:<9} {r['mapping']:<18} {r['max_abs_diff']:>10.2e} {r['max_rel_diff']:>9.1e} "
            f"{r['spearman']:>8.4f} {r['auc_memaudit']:>8.4f} {r['auc_mimir']:>9.4f}"
        )
    print(f"\n{'deliberate difference':<100} {'spearman':>8} {'AUC ours':>8} {'AUC MIMIR':>9}")
    for r in differences:
        print(f"{r['difference']:<100} {r['spearman']:>8.4f} {r['auc_memaudit']:>8.4f} {r['auc_mimir']:>9.4f}")
    doc = {
        "model": str(args.model),
        "data": str(args.data),
        "members": int(member.sum()),
        "heldout": int((~member).sum()),
        "cpu": cpu_description(),
        "torch": torch.__version__,
        "mimir": mimir.source,
        "checks": {"dcpdd_tokenization_matches": bool(dcpdd_ids_ok), "recall_prefix_round_trips": bool(prefix_ok)},
        "recall_prefix_tokens": len(prefix),
        "gradnorm_texts_per_backward": chunk,
        "matched": table,
        "differences": differences,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
