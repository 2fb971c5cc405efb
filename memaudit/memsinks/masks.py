"""Which sink units each document id switches on. `hash_mask` is the reference function of
docs/memsinks.md, bit for bit, so a mask can be rebuilt from an id and a `SinkConfig` alone, in any
process, with no table to save; `disjoint_mask` gives id groups separate slices of the pool;
`sparse_mask` gives each id exactly k units, also from the id alone."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from memaudit.common.errors import MemauditError

# The reference hash (docs/memsinks.md). `id * _BASE` wraps in int64, so the hash sees only `id mod _ID_PERIOD`.
_A, _M, _BASE = 1588635695, 4294967291, 65536
_ID_PERIOD = 2**48


def check_ids(ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Document ids as int64 [N]; refuses ids the reference hash maps onto id 0 (every sink on)."""
    ids = torch.as_tensor(ids)
    if ids.dim() != 1 or ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise MemauditError(f"document ids must be a 1-D integer tensor, got {ids.dtype} of shape {tuple(ids.shape)}")
    ids = ids.to(torch.int64)
    bad = ids[(ids <= 0) | (ids % _ID_PERIOD == 0)]
    if bad.numel():
        raise MemauditError(
            f"document id {bad[0].item()} is not allowed: ids must be positive and not a multiple of 2**48 "
            "(the reference hash sees only id mod 2**48, and 0 switches every sink on)"
        )
    return ids


@functools.lru_cache(maxsize=16)
def _multipliers(n_sink: int) -> torch.Tensor:
    """c[j] = (a**j as wrapping int64) mod M; integer pow wraps exactly like repeated int64 products."""
    return torch.remainder(torch.pow(torch.tensor(_A), torch.arange(n_sink)), _M)


def hash_mask(ids: torch.Tensor, n_sink: int, p: float) -> torch.Tensor:
    """The reference mask of docs/memsinks.md, bit-exact: int64 with wrap-around. ids: int64 [N] -> bool [N, n_sink].

    h / M is compared with p in float64. Raises MemauditError on ids <= 0 and on multiples of 2**48, which wrap to
    id 0 and would switch every sink on."""
    ids = check_ids(ids)
    c = _multipliers(n_sink).to(ids.device)
    h = torch.remainder((ids[:, None] * _BASE) * c[None, :], _M)
    return h.to(torch.float64) / _M < p


def group_of(ids: torch.Tensor | Sequence[int], groups: int) -> torch.Tensor:
    """The id group (disjoint scheme): id % groups."""
    return torch.remainder(torch.as_tensor(ids, dtype=torch.int64), groups)


def disjoint_mask(ids: torch.Tensor, n_sink: int, p: float, groups: int) -> torch.Tensor:
    """Group g = id % groups owns the g-th of `groups` contiguous, near-equal slices of the pool; within it an id
    switches on its hash_mask over the slice (about p of it). Ids of different groups never share a sink, so
    deleting one group's sinks leaves every other group's intact. ids: int64 [N] -> bool [N, n_sink]."""
    ids = check_ids(ids)
    if n_sink < groups:
        raise MemauditError(f"the sink pool has {n_sink} units, fewer than the {groups} disjoint groups; lower groups")
    bounds = [g * n_sink // groups for g in range(groups + 1)]
    group = group_of(ids, groups)
    out = torch.zeros(len(ids), n_sink, dtype=torch.bool, device=ids.device)
    for g in group.unique().tolist():
        rows = group == g
        out[rows, bounds[g] : bounds[g + 1]] = hash_mask(ids[rows], bounds[g + 1] - bounds[g], p)
    return out


def sparse_mask(ids: torch.Tensor, n_sink: int, k: int) -> torch.Tensor:
    """Each id switches on exactly `k` units: those of the lowest scores, where unit j's score is the j-th 64-bit
    word (big-endian) of the SHAKE-128 stream of the id written in decimal (ties, never seen, to the lower index).
    A standard hash rather than the reference one, whose masks of nearby ids (1, 2, ...) are correlated; a unit's
    score does not depend on the pool's width. Two ids share k * k / n_sink units on average.
    ids: int64 [N] -> bool [N, n_sink]."""
    ids = check_ids(ids)
    if n_sink < k:
        raise MemauditError(f"a sparse sink pool of {n_sink} units cannot give each id k = {k} units; lower `k`")
    out = torch.zeros(len(ids), n_sink, dtype=torch.bool)
    for row, i in enumerate(ids.tolist()):
        scores = np.frombuffer(hashlib.shake_128(str(i).encode()).digest(8 * n_sink), dtype=">u8")
        out[row, np.argsort(scores, kind="stable")[:k]] = True
    return out.to(ids.device)
