"""Post-hoc memorization removal, the baselines MemSinks is compared with: gradient ascent,
GradDiff, NPO and SimNPO on the shared training loop, and localize-and-ablate."""

from memaudit.unlearning.ablate import AblateResult, ablate
from memaudit.unlearning.run import UnlearnConfig, UnlearnResult, unlearn

__all__ = ["AblateResult", "UnlearnConfig", "UnlearnResult", "ablate", "unlearn"]
