"""MemSink settings and the registries of mask schemes and evaluation modes, without torch: the
command line takes its choices and help text from here, and checks `--sinks G,P` before it
imports anything heavy. `memaudit.memsinks.sinks` applies them to a model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from memaudit.common.errors import MemauditError
from memaudit.common.validation import MAX_COUNT, Range, check_choice, check_ranges, integer, number

# scheme -> what it does (the masks themselves: memaudit.memsinks.masks.hash_mask / disjoint_mask / sparse_mask)
SCHEMES: dict[str, str] = {
    "hash": "the reference function of docs/memsinks.md (documents' masks overlap)",
    "disjoint": "ids fall into `groups` groups that own separate slices of the pool, so one group's sinks "
    "can be deleted alone",
    "sparse": "each id switches on exactly `k` units of the pool, chosen by a hash of the id (two ids share about "
    "k*k/pool units), so one id's sinks can be deleted with little harm to the others",
}


# route -> which occurrences of a repeated id train only its sinks, never the shared weights (gradient routing)
ROUTES: dict[str, str] = {
    "none": "every occurrence trains its sinks and the shared weights (the paper)",
    "all": "every occurrence of a repeated id trains only its sinks: the shared weights never learn from it",
    "copies": "all but an id's first occurrence in each epoch train only its sinks: the shared weights see a repeated "
    "document as often as one seen once, as if the corpus were deduplicated",
    "planted": "every occurrence of a planted document (the audit set's members at every repeat level, those seen once "
    "included, and its canaries) trains only its sinks: the documents the oracle leaves out, named at training time",
}
# route_scope -> which weights a routed occurrence is kept from: where the leak of the shared weights lives
ROUTE_SCOPES: dict[str, str] = {
    "model": "every weight outside its sinks: shared MLP units, attention, embeddings, norms and LM head",
    "mlp": "only the shared MLP units: attention, embeddings, norms and LM head learn from it as in plain training",
}
# sinks_for -> which ids switch their sinks on in training
SINKS_FOR: dict[str, str] = {
    "all": "every document (the paper)",
    "repeated": "only ids that occur more than once an epoch, and routed ones; documents seen once train with the pool "
    "off, as the deployed model runs",
}


@dataclass(frozen=True)
class EvalMode:
    """What the sink pool and the shared units do in a forward pass. `scales(g, p)` gives the
    (shared, sink) multipliers; None for `own`, whose sink scale is each document's own mask."""

    summary: str
    scales: Callable[[float, float], tuple[float, float]] | None


EVAL_MODES: dict[str, EvalMode] = {
    "off": EvalMode("sink pool zeroed: the paper's evaluation and deployment", lambda g, p: (1.0, 0.0)),
    "off-rescaled": EvalMode(
        "pool zeroed, shared units x(G+P)/G (the authors' code's dropout mode)", lambda g, p: ((g + p) / g, 0.0)
    ),
    "mean": EvalMode("pool x P (the authors' code's default 'all' mode)", lambda g, p: (1.0, p)),
    "own": EvalMode("each document's own training mask: memorization on", None),
}
DEFAULT_EVAL_MODE = "off"  # what a loaded MemSink model runs in, and what a scan measures, unless asked
# `--sink-units`: split the pretrained model's own units at G (the other choice is new:N, N fresh units per MLP).
EXISTING_UNITS = "existing"


@dataclass(frozen=True)
class SinkConfig:
    """How a MemSink model splits its MLPs; saved with the model so masks can be rebuilt bit for bit."""

    shared_fraction: float = 0.7  # g: the first int(width * g) hidden units are shared
    active_fraction: float = 0.3  # p: fraction of the sink pool (or of its group's slice) one id switches on
    scheme: str = "hash"  # hash: ids draw from the whole pool; disjoint: id groups own slices; sparse: k units an id
    groups: int = 16  # disjoint scheme: number of id groups (group = id % groups)
    k: int = 8  # sparse scheme: the pool units each id switches on (active_fraction is then unused for masks)
    # Sink fine-tuning of a pretrained model (`--sink-units new:N`): the pool is N units added to every MLP after
    # its pretrained ones, which all stay shared; None: the pool is split off the MLP at shared_fraction.
    new_units: int | None = None
    # Training only, not the masks: the chance that an occurrence of an id that occurs more than once in the packed
    # stream trains under a fresh random id instead (the paper's robustness to wrong ids); drawn from the seed.
    id_noise: float = 0.0
    # Training only (memaudit.memsinks.routing): which occurrences of a repeated id (one that occurs more than once an
    # epoch: a repeated document, a near-duplicate cluster, an owner's records) train only their sinks (ROUTES), and
    # which weights a routed occurrence is kept from (ROUTE_SCOPES), and which ids switch sinks on at all (SINKS_FOR).
    route: str = "none"
    route_scope: str = "model"
    sinks_for: str = "all"

    RANGES: ClassVar[dict[str, Range]] = {
        "shared_fraction": number(0, 1, low_open=True, high_open=True),
        "active_fraction": number(0, 1, low_open=True, high_open=True),
        "groups": integer(1, 1 << 16),
        "k": integer(1, MAX_COUNT),
        "new_units": integer(1, MAX_COUNT, optional=True),
        "id_noise": number(0, 1),
    }

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)
        check_choice("sink scheme", self.scheme, SCHEMES)
        check_choice("route", self.route, ROUTES)
        check_choice("route_scope", self.route_scope, ROUTE_SCOPES)
        if self.route == "none" and self.route_scope != "model":
            raise MemauditError(
                f"route_scope {self.route_scope!r} says what routing keeps a repeat from: set route too"
            )
        check_choice("sinks_for", self.sinks_for, SINKS_FOR)

    def to_dict(self) -> dict:
        """The settings as memaudit.json records them."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | SinkConfig) -> SinkConfig:
        """The settings from their recorded mapping (memaudit.json, a saved `TrainConfig`), every key
        checked; a SinkConfig is returned as it is."""
        if isinstance(d, cls):
            return d
        if not isinstance(d, dict):
            raise MemauditError(f"a sink config is a mapping of {', '.join(f.name for f in fields(cls))}, got {d!r}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise MemauditError(
                f"unknown sink config keys {sorted(unknown)}; allowed: {', '.join(f.name for f in fields(cls))}"
            )
        return cls(**d)

    @classmethod
    def parse(cls, value: str | None, *, sink_units: str = EXISTING_UNITS, **settings) -> SinkConfig | None:
        """`G,P` as the command line writes it (e.g. "0.7,0.3"; None or empty: no sinks), the pool as `--sink-units`
        writes it (parse_sink_units), and the other settings by name."""
        new_units = parse_sink_units(sink_units)
        if not value:
            if new_units:
                raise MemauditError("sink_units new:N adds sink units: pass `sinks` G,P too")
            if settings.get("id_noise"):
                raise MemauditError("id_noise gives sinks wrong ids: pass `sinks` G,P too")
            for name in ("route", "route_scope", "sinks_for"):
                default = cls.__dataclass_fields__[name].default
                if settings.get(name, default) != default:
                    raise MemauditError(f"{name} says how repeats train their sinks: pass `sinks` G,P too")
            return None
        try:
            g, p = (float(v) for v in value.split(","))
        except ValueError:
            raise MemauditError(
                f"sinks take G,P (shared fraction, active fraction), e.g. 0.7,0.3; got {value!r}"
            ) from None
        return cls(shared_fraction=g, active_fraction=p, new_units=new_units, **settings)


def parse_sink_units(value: str) -> int | None:
    """`--sink-units`: "existing" (None: split the model's own units) or "new:N" (N fresh units per MLP)."""
    if value == EXISTING_UNITS:
        return None
    kind, _, count = value.partition(":")
    if kind != "new" or not count.strip().isdigit():
        raise MemauditError(f"sink_units takes `existing` or new:N (N fresh sink units per MLP), got {value!r}")
    return int(count)
