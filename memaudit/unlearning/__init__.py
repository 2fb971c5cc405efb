"""Post-hoc memorization removal, the baselines MemSinks is compared with: gradient ascent,
GradDiff, NPO and SimNPO on the shared training loop (`unlearn`), and localize-and-ablate
(`ablate`). Standard models only: a MemSink model is refused (remove its sinks first).

Defaults measured on the demo model (gpt2-5m, 500 steps, members at 1/8/32/128 repeats; 100
steps of 8 forget + 8 retain documents; `memaudit scan`): exact extraction at x32/x128 goes
from 0.9/1.0 to 0/0 for every method, at a valid-loss change of -0.04 (npo, lr 2e-4, beta 0.1),
-0.05 (simnpo, lr 2e-4, beta 2.5), +0.12 (graddiff, lr 2e-5) and +0.41 (ga, lr 1.5e-5, stopped
by max_degradation 0.5 at step 100). At lr 2e-4, ga and graddiff cross that limit within 20
steps. Ablating 1% / 10% / 20% of MLP units leaves x128 extraction at 1.0 / 0.9 / 0.6.

The configs and the method registry (`memaudit.unlearning.config`) import no torch; `unlearn`
(which does) is imported on first use, so the command line can check a config first. The
ablation function is `memaudit.ablate` (or `memaudit.unlearning.ablate.ablate`): this package's
attribute `ablate` is its submodule."""

from importlib import import_module

from memaudit.unlearning.config import METHOD_DEFAULTS, METHODS, AblateConfig, Method, UnlearnConfig

_LAZY = {
    "unlearn": "memaudit.unlearning.run",
    "UnlearnResult": "memaudit.unlearning.run",
    "AblateResult": "memaudit.unlearning.ablate",
}
__all__ = ["METHODS", "METHOD_DEFAULTS", "AblateConfig", "Method", "UnlearnConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memaudit.unlearning' has no attribute {name!r}")
