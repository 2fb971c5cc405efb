"""The unlearning methods, each registered once with what sets it apart (its forget loss, its
defaults, whether it needs retain data or a frozen reference), and `UnlearnConfig`. Torch-free:
the command line takes `--method` choices and default help from here and checks a config
before it imports torch; the losses are imported when a run asks for them.

Defaults (100 steps, batch 8 + 8) measured on the demo model; the figures are in the package
docstring. Gradient ascent has no brake, so it needs a ~10x smaller step than NPO/SimNPO to
stay within max_degradation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from memaudit.common.validation import MAX_COUNT, SEED, Range, check_choice, check_ranges, integer, number
from memaudit.training.config import LoopConfig


@dataclass(frozen=True)
class Method:
    """One unlearning method. Every method minimizes its forget loss plus, when `uses_retain`,
    `retain_weight` times the retain NLL; `loss` names its forget loss in
    memaudit.unlearning.losses, called as loss(batch: ForgetBatch, config: UnlearnConfig)."""

    summary: str
    loss: str
    defaults: dict[str, float]  # what None means for lr (and beta) under this method
    uses_retain: bool = True
    needs_reference: bool = False  # log pi_ref of the forget set, from the frozen starting model

    def forget_loss(self) -> Callable:
        from memaudit.unlearning import losses

        return getattr(losses, self.loss)


METHODS: dict[str, Method] = {
    "ga": Method("gradient ascent on the forget NLL", "ga_loss", {"lr": 1.5e-5}, uses_retain=False),
    "graddiff": Method("ascent on forget, descent on retain", "ga_loss", {"lr": 2e-5}),
    "npo": Method(
        "Negative Preference Optimization against the frozen starting model",
        "npo_loss",
        {"lr": 2e-4, "beta": 0.1},
        needs_reference=True,
    ),
    "simnpo": Method("reference-free, length-normalized NPO", "simnpo_loss", {"lr": 2e-4, "beta": 2.5}),
}
METHOD_DEFAULTS: dict[str, dict[str, float]] = {name: m.defaults for name, m in METHODS.items()}


def defaults_text(setting: str) -> str:
    """The per-method defaults of `setting` in words, for help text: "ga 1.5e-05, graddiff 2e-05, ..."."""
    return ", ".join(f"{name} {m.defaults[setting]:g}" for name, m in METHODS.items() if setting in m.defaults)


@dataclass
class UnlearnConfig(LoopConfig):
    """None for lr or beta means the method's default (METHODS); `resolved()` fills them in."""

    method: str = "npo"
    steps: int = 100
    batch_size: int = 8  # forget documents per step, and as many retain documents (none for ga)
    lr: float | None = None
    warmup_steps: int = 10
    weight_decay: float = 0.0
    eval_every: int = 10
    checkpoint_every: int = 50
    beta: float | None = None  # npo/simnpo inverse temperature
    gamma: float = 0.0  # simnpo reward margin
    retain_weight: float = 1.0  # weight of the retain NLL (graddiff, npo, simnpo)
    forget_file: str | None = None  # texts to forget instead of the data dir's members and canaries
    max_degradation: float | None = 0.5  # nats of valid loss the run may add; None: no limit
    eval_docs: int = 64  # documents of each eval set (valid, forget, held-out)

    RANGES: ClassVar[dict[str, Range]] = {
        **LoopConfig.RANGES,
        "lr": number(0, 1, low_open=True, optional=True),
        "beta": number(0, 100, low_open=True, optional=True),
        "gamma": number(0, 100),
        "retain_weight": number(0, 100),
        "max_degradation": number(0, optional=True),
        "eval_docs": integer(1, MAX_COUNT),
    }

    def __post_init__(self) -> None:
        check_choice("unlearning method", self.method, METHODS)
        super().__post_init__()

    @property
    def spec(self) -> Method:
        return METHODS[self.method]

    def resolved(self) -> UnlearnConfig:
        """This config with the method's defaults in place of None: what a run uses and records."""
        given = {k: v for k, v in (("lr", self.lr), ("beta", self.beta)) if v is not None}
        return replace(self, **{**self.spec.defaults, **given})


@dataclass(frozen=True)
class AblateConfig:
    """Localize-and-ablate settings (memaudit.unlearning.ablate)."""

    ratio: float = 0.1  # fraction of all MLP hidden units to zero
    retain_docs: int = 256  # natural documents sampled as the contrast
    eval_docs: int = 64  # documents of each eval set (valid, forget, held-out)
    seed: int = 0

    RANGES: ClassVar[dict[str, Range]] = {
        "ratio": number(0, 1, low_open=True, high_open=True),
        "retain_docs": integer(1, MAX_COUNT),
        "eval_docs": integer(1, MAX_COUNT),
        "seed": SEED,
    }

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)
