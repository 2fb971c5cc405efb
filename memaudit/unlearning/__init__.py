"""Post-hoc memorization removal, the baselines MemSinks is compared with: gradient ascent,
GradDiff, NPO and SimNPO on the shared training loop (`unlearn`), and localize-and-ablate
(`ablate`). Standard models only: a MemSink model is refused (remove its sinks first). How the
method defaults were chosen, and what they do on the demo model, is measured in docs/results.md.

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
