"""RMIA (Zarifzadeh et al., "Low-Cost High-Power Membership Inference Attacks", ICML 2024), offline,
for language models as privacy-meter computes it (docs/metrics.md, "Membership attacks").

A text's likelihood under a model is its geometric-mean token probability, Pr(x|θ) = exp(-mean
token NLL). Reference models never trained on the members give Pr_ref(x); the offline
approximation of Pr(x), the likelihood averaged over models that did and did not train on x, is
((1 + a) * mean_ref Pr_ref(x) + (1 - a)) / 2. The likelihood ratio LR(x) = Pr(x|θ) / Pr(x) is then
compared with that of population texts z, neither scored member nor non-member: the score is the
fraction of z with LR(x) / LR(z) > γ, higher = more member-like."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from memaudit.common.errors import MemauditError


def _ratio(target_nll: np.ndarray, reference_nll: np.ndarray, a: float) -> np.ndarray:
    """LR = Pr(x|θ) / Pr(x) for each text, from mean NLLs: target [n], references [R, n]."""
    pr_out = np.exp(-np.asarray(reference_nll, dtype=np.float64)).mean(axis=0)
    return np.exp(-np.asarray(target_nll, dtype=np.float64)) / ((1 + a) / 2 * pr_out + (1 - a) / 2)


def rmia_scores(
    target_x: Sequence[float],
    references_x: Sequence[Sequence[float]],
    target_z: Sequence[float],
    references_z: Sequence[Sequence[float]],
    *,
    gamma: float,
    a: float,
) -> np.ndarray:
    """The RMIA score of each audited text x: the fraction of population texts z with
    LR(x) / LR(z) > gamma. Inputs are mean token NLLs: the target's on the audited texts [n] and on
    the population [m], each reference model's on the same texts ([R, n] and [R, m])."""
    lr_x = _ratio(np.asarray(target_x), np.atleast_2d(references_x), a)
    lr_z = _ratio(np.asarray(target_z), np.atleast_2d(references_z), a)
    if not len(lr_z):
        raise MemauditError("rmia needs population texts (neither scored member nor non-member)")
    out = np.empty(len(lr_x))
    for start in range(0, len(lr_x), 1024):  # [1024, m] at a time
        block = lr_x[start : start + 1024, None] / lr_z[None, :]
        out[start : start + 1024] = (block > gamma).mean(axis=1)
    return out


def check_rmia_references(tokenizer, references: Sequence, model: str | Path) -> None:
    """Each RMIA reference (a path or hub id, or a loaded model with `path` and `tokenizer`) must be
    another model than the one scanned, with the same tokenizer (the same token ids, so the same
    texts are scored); checked from the references' tokenizers alone, before anything is scanned."""
    from memaudit.corpus.tokenizer import model_tokenizer
    from memaudit.probes.frequencies import vocab_sha256

    own = vocab_sha256(tokenizer)
    for item in references:
        ref = getattr(item, "path", item)
        if Path(str(ref)).resolve() == Path(str(model)).resolve():
            raise MemauditError(
                f"rmia reference {ref} is the model being scanned; a reference must be a model that never "
                "saw the members (e.g. `memaudit train --no-repeats --seed 1` on the same data dir)"
            )
        if vocab_sha256(getattr(item, "tokenizer", None) or model_tokenizer(str(ref))) != own:
            raise MemauditError(
                f"rmia reference {ref}: its tokenizer is not the scanned model's; a reference must share the "
                "model's tokenizer (the same token ids)"
            )
