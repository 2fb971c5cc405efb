"""The unlearning objectives, on sequence log-likelihoods log pi(y|x) = sum of the token
log-probs of a document (the boundary token is the context x, the text is y). Every method is
a forget term plus, except plain gradient ascent, `retain_weight` times the token-mean NLL of
retain documents (GradDiff's descent term), so the methods differ only in the forget term:
each is named by its method in `memaudit.unlearning.config.METHODS` and called the same way,
loss(batch, config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from memaudit.unlearning.config import UnlearnConfig


@dataclass
class ForgetBatch:
    """The forget documents of one step, as a forget loss reads them."""

    logp: torch.Tensor  # log pi_theta(y|x) [B]
    lengths: torch.Tensor  # |y| [B]
    ref_logp: torch.Tensor | None = None  # log pi_ref(y|x) [B], for methods with `needs_reference`


def sequence_logp(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, V] logits and [B, T] labels (-100 at padding) -> (log pi(y|x) [B], |y| [B]).
    Position t predicts label t+1, so label 0 (the boundary token) is never a target."""
    targets = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return -nll.sum(1), (targets != -100).sum(1)


def ga_loss(batch: ForgetBatch, config: UnlearnConfig) -> torch.Tensor:
    """Gradient ascent: minimize the token-mean log-likelihood of the forget batch (= ascend its NLL)."""
    return batch.logp.sum() / batch.lengths.sum()


def npo_loss(batch: ForgetBatch, config: UnlearnConfig) -> torch.Tensor:
    """NPO (Zhang et al. 2024): (2/beta) * mean log(1 + (pi_theta(y|x) / pi_ref(y|x))^beta)
    = (2/beta) * mean softplus(beta * (log pi_theta - log pi_ref)), pi_ref the frozen starting
    model. Bounded below by 0, so unlike gradient ascent it slows down as pi_theta falls."""
    beta = config.beta
    return 2 / beta * F.softplus(beta * (batch.logp - batch.ref_logp)).mean()


def simnpo_loss(batch: ForgetBatch, config: UnlearnConfig) -> torch.Tensor:
    """SimNPO (Fan et al. 2024, eq. for L_SimNPO): -(2/beta) * mean log sigmoid(-(beta/|y|) log pi_theta(y|x) - gamma)
    = (2/beta) * mean log(1 + exp((beta/|y|) log pi_theta(y|x) + gamma)): NPO with the reference
    replaced by length normalization and a reward margin gamma. (The sign matters: with
    exp(-(beta/|y|) log pi - gamma) inside, minimizing would raise the forget likelihood.)
    Equals open-unlearning's `-logsigmoid(beta * (nll_mean - delta)) * 2/beta` with gamma = beta*delta."""
    beta = config.beta
    return 2 / beta * F.softplus(beta * batch.logp / batch.lengths + config.gamma).mean()
