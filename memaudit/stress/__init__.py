"""Stress tests of memorization removal: does it survive 4- and 8-bit weight quantization, or a
few steps of fine-tuning (relearning)? `stress()` attacks a model and scans the result into run
dirs that reports, gates and charts read like any scan (`memaudit stress`, `scan model --stress`).

The attack specs and settings (`memaudit.stress.attacks`) import no torch, so the command line
checks them first; `stress` (which does) is imported on first use."""

from importlib import import_module

from memaudit.stress.attacks import Attack, StressConfig, parse_attack, parse_attacks

__all__ = ["Attack", "StressConfig", "parse_attack", "parse_attacks", "stress"]


def __getattr__(name: str):
    if name == "stress":
        return import_module("memaudit.stress.run").stress
    raise AttributeError(f"module 'memaudit.stress' has no attribute {name!r}")
