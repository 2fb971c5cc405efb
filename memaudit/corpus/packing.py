"""Packing documents into fixed-length training sequences, with a document id beside every
token (MemSinks keys its sink masks on it). Documents are laid end to end as
`text <eos> text <eos> ...`, repeated documents expanded by their `repeats`, shuffled anew
each epoch from (seed, epoch), so the block at any global index is a pure function of the
settings: that is what makes `--resume` continue exactly where a run stopped."""

from __future__ import annotations

import numpy as np

# The id noise draws from its own stream of the seed: numpy pads entropy with zeros, so [seed, 0, 1] is no epoch's
# [seed, epoch] (while [seed, 1] would be epoch 1's).
_NOISE_STREAM = (0, 1)


class PackedStream:
    """One id per occurrence of a document: its own, or with probability `id_noise`, for an occurrence of an id
    that occurs more than once in an epoch (a repeated document, a near-duplicate cluster, an owner), a fresh random
    one, drawn once from the seed and kept in every epoch. The MemSinks paper's robustness test: copies of a repeat
    that land on other sinks."""

    def __init__(
        self,
        token_ids: list[list[int]],
        doc_ids: list[int],
        repeats: list[int],
        eos_id: int,
        seq_len: int,
        seed: int,
        id_noise: float = 0.0,
    ):
        self.docs = [np.asarray([*ids, eos_id], dtype=np.int64) for ids in token_ids]
        self.doc_ids = np.asarray(doc_ids, dtype=np.int64)
        self.occurrences = np.repeat(np.arange(len(self.docs)), repeats)
        self.seq_len, self.seed = seq_len, seed
        self.occurrence_ids = self._occurrence_ids(id_noise)
        unique, counts = np.unique(self.occurrence_ids, return_counts=True)
        self.repeated_ids = unique[counts > 1]  # ids that occur more than once an epoch (after the id noise)
        self.tokens_per_epoch = int(sum(len(self.docs[i]) for i in self.occurrences))
        self.blocks_per_epoch = self.tokens_per_epoch // seq_len
        if self.blocks_per_epoch == 0:
            raise ValueError(
                f"the training documents hold {self.tokens_per_epoch} tokens, fewer than one sequence of {seq_len}"
            )
        self._epoch: int | None = None
        self._blocks: tuple[np.ndarray, np.ndarray] | None = None

    def _occurrence_ids(self, id_noise: float) -> np.ndarray:
        """The id of each occurrence. A fresh id is odd, so never 0 nor a multiple of 2**48 (which the sink hash
        refuses), and below 2**63; it meets a real id with a chance of about 2**-62."""
        ids = self.doc_ids[self.occurrences]
        if not id_noise:
            return ids
        _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
        rng = np.random.default_rng([self.seed, *_NOISE_STREAM])
        noisy = (counts[inverse] > 1) & (rng.random(len(ids)) < id_noise)
        return np.where(noisy, rng.integers(0, 2**62, len(ids)) * 2 + 1, ids)

    def epoch_blocks(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, doc_ids), each [blocks_per_epoch, seq_len]."""
        return self._epoch_arrays(epoch)[:2]

    def _epoch_arrays(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """epoch_blocks, and per token whether its occurrence is a later copy: not its id's first in this epoch."""
        if self._epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.occurrences))
            docs, occurrence_ids = self.occurrences[order], self.occurrence_ids[order]
            lengths = [len(self.docs[i]) for i in docs]
            first = np.zeros(len(order), dtype=bool)
            first[np.unique(occurrence_ids, return_index=True)[1]] = True
            n = self.blocks_per_epoch * self.seq_len
            shape = (self.blocks_per_epoch, self.seq_len)
            arrays = (
                np.concatenate([self.docs[i] for i in docs]),
                np.repeat(occurrence_ids, lengths),
                np.repeat(~first, lengths),
            )
            self._epoch, self._blocks = epoch, tuple(a[:n].reshape(shape) for a in arrays)
        return self._blocks

    def is_repeated(self, ids: np.ndarray) -> np.ndarray:
        """bool, per id: whether it occurs more than once an epoch (what `SinkConfig.route` routes)."""
        return np.isin(ids, self.repeated_ids)

    def batch(self, start: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Blocks start..start+size-1 of the endless stream of epochs: (tokens, doc_ids)."""
        return self._rows(start, size, 2)

    def batch_with_copies(self, start: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`batch`, and per token whether its occurrence is a later copy: not its id's first in its epoch."""
        return self._rows(start, size, 3)

    def _rows(self, start: int, size: int, arrays: int) -> tuple[np.ndarray, ...]:
        """The first `arrays` of each epoch's arrays (tokens, ids, later copies), rows start..start+size-1."""
        out: list[list[np.ndarray]] = [[] for _ in range(arrays)]
        for g in range(start, start + size):
            epoch, index = divmod(g, self.blocks_per_epoch)
            for rows, array in zip(out, self._epoch_arrays(epoch)):
                rows.append(array[index])
        return tuple(np.stack(rows) for rows in out)
