"""The probe suite a scan runs (`ScanConfig`), kept apart from the probes themselves so that a
suite file or a command line can be checked before torch is imported: this module imports
nothing heavier than the standard library."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from memaudit.common.errors import MemauditError
from memaudit.common.validation import MAX_COUNT, SEED, Range, check_choice, check_ranges, integer, number

SCAN_SCHEMA_VERSION = 1  # of results.json, the document a scan writes; `memaudit report` reads this one only
TOPK = 40  # the sampling distribution of (n,p)-discoverable extraction: top-k 40, temperature 1
# Membership inference: `privacy.mia.<attack>.*`, defined in docs/metrics.md (registry.ATTACK_DOCS), in the
# order views list them. The first ones come out of the one scoring pass (`ref` and `rmia` also need other
# models' scores, and run only when those models are given); `recall` and `gradnorm` need a pass of their own.
ATTACKS = ("loss", "zlib", "zlib_total", "mink", "minkpp", "dcpdd", "ref", "rmia", "recall", "gradnorm")
EXTRA_PASS_ATTACKS = ("recall", "gradnorm")  # a forward (ReCaLL) or forward-and-backward (GradNorm) pass each
DEFAULT_ATTACKS = tuple(a for a in ATTACKS if a not in EXTRA_PASS_ATTACKS)  # the `default` and `ci` suites
# The groups of the metric registry (memaudit.probes.registry), in the order every view shows them.
GROUPS = ("memorization", "extraction", "privacy", "capability", "robustness")
# The stress attack families (memaudit.stress), as the robustness metrics spell them
# (`robustness.<family>.gap_closed_retained`).
FAMILIES = {
    "quant_int8": "8-bit weight quantization",
    "quant_int4": "4-bit weight quantization",
    "relearn_forget_half": "relearning on half of the members",
    "relearn_retain": "fine-tuning on natural training text",
}


@dataclass(frozen=True)
class ScanConfig:
    """A probe suite: which probes run, with which parameters. Suite YAML files (suite.py) set
    these fields by name; results.json records them all under `suite`."""

    name: str = "default"
    prefix_len: int = 32  # P of the headline extraction metrics
    suffix_len: int = 32  # S, for every prefix length
    prefix_lens: tuple[int, ...] = (8, 16, 32, 64)  # the sweep: `<metric>@P<n>` for each n != prefix_len
    np_n: int = 100  # (n, p)-discoverable extraction: n samples ...
    np_p: float = 0.5  # ... contain the suffix with probability >= p
    topk: int = TOPK  # the sampling distribution of (n, p)-discoverability: top-k, temperature 1
    mia_attacks: tuple[str, ...] = DEFAULT_ATTACKS  # `ref` and `rmia` run only when their models are given
    mink_k: float = 0.2  # the fraction of lowest tokens for Min-K% and Min-K%++
    dcpdd_a: float = 0.01  # DC-PDD: the cap a on each token's p * log(1 / frequency) (MIMIR's default)
    rmia_gamma: float = 1.0  # RMIA: a population sample z counts when LR(x) / LR(z) > gamma (privacy-meter's)
    rmia_offline_a: float = 0.3  # RMIA offline: Pr(x) = ((1 + a) Pr_ref(x) + (1 - a)) / 2 (privacy-meter's)
    privleak_attack: str = "mink"  # the attack whose AUC PrivLeak compares (MUSE uses Min-K%)
    exposure_candidates: int = 2000  # sampled secrets each canary is ranked against; 0 = no exposure
    sampling_trials: int = 0  # the sampling extraction attack: continuations sampled per member; 0 = off
    bootstrap: int = 1000  # resamples for every ci95; 0 = no intervals
    seed: int = 0
    max_batch_tokens: int = 16384

    # Upper bounds keep a typo in a suite file from asking for a scan that never ends
    # (`bootstrap: 10**12`), not sensible suites from running.
    RANGES: ClassVar[dict[str, Range]] = {
        "prefix_len": integer(1, MAX_COUNT),
        "suffix_len": integer(1, MAX_COUNT),
        "np_n": integer(1, 1_000_000),
        "np_p": number(0, 1, low_open=True),
        "topk": integer(1, MAX_COUNT),
        "mink_k": number(0, 1, low_open=True),
        "dcpdd_a": number(0, low_open=True),
        "rmia_gamma": number(0, low_open=True),
        "rmia_offline_a": number(0, 1),
        "exposure_candidates": integer(0, 10_000_000),
        "sampling_trials": integer(0, 10_000),
        "bootstrap": integer(0, 1_000_000),
        "seed": SEED,
        "max_batch_tokens": integer(1, 1 << 30),
    }

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise MemauditError(f"name must be a non-empty string, got {self.name!r}")
        check_ranges(self, self.RANGES)
        for key in ("prefix_lens", "mia_attacks"):  # YAML and callers give lists
            value = getattr(self, key)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise MemauditError(f"{key} must be a list, got {value!r}")
            object.__setattr__(self, key, tuple(value))
        object.__setattr__(
            self, "prefix_lens", tuple(self.RANGES["prefix_len"].check("prefix_lens", p) for p in self.prefix_lens)
        )
        for attack in (*self.mia_attacks, self.privleak_attack):
            check_choice("membership attack", attack, ATTACKS)


def check_attack_inputs(config: ScanConfig, *, rmia_references: tuple = (), frequencies: object = None) -> None:
    """An input that only one membership attack reads (RMIA's reference models, DC-PDD's token
    frequencies) comes with a suite that runs that attack, or it would be silently ignored."""
    needs = ((rmia_references, "rmia", "RMIA reference models"), (frequencies, "dcpdd", "token frequencies"))
    for given, attack, what in needs:
        if given and attack not in config.mia_attacks:
            raise MemauditError(
                f"{what} are given but the suite {config.name!r} does not run {attack} "
                f"(its mia_attacks: {', '.join(config.mia_attacks)}); add {attack} to the suite's mia_attacks"
            )
