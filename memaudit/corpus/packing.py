"""Packing documents into fixed-length training sequences, with a document id beside every
token (MemSinks keys its sink masks on it). Documents are laid end to end as
`text <eos> text <eos> ...`, repeated documents expanded by their `repeats`, shuffled anew
each epoch from (seed, epoch), so the block at any global index is a pure function of the
settings: that is what makes `--resume` continue exactly where a run stopped."""

from __future__ import annotations

import numpy as np


class PackedStream:
    def __init__(
        self, token_ids: list[list[int]], doc_ids: list[int], repeats: list[int], eos_id: int, seq_len: int, seed: int
    ):
        self.docs = [np.asarray([*ids, eos_id], dtype=np.int64) for ids in token_ids]
        self.doc_ids = np.asarray(doc_ids, dtype=np.int64)
        self.occurrences = np.repeat(np.arange(len(self.docs)), repeats)
        self.seq_len, self.seed = seq_len, seed
        self.tokens_per_epoch = int(sum(len(self.docs[i]) for i in self.occurrences))
        self.blocks_per_epoch = self.tokens_per_epoch // seq_len
        if self.blocks_per_epoch == 0:
            raise ValueError(
                f"the training documents hold {self.tokens_per_epoch} tokens, fewer than one sequence of {seq_len}"
            )
        self._epoch: int | None = None
        self._blocks: tuple[np.ndarray, np.ndarray] | None = None

    def epoch_blocks(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, doc_ids), each [blocks_per_epoch, seq_len]."""
        if self._epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.occurrences)
            tokens = np.concatenate([self.docs[i] for i in order])
            ids = np.repeat(self.doc_ids[order], [len(self.docs[i]) for i in order])
            n = self.blocks_per_epoch * self.seq_len
            shape = (self.blocks_per_epoch, self.seq_len)
            self._epoch, self._blocks = epoch, (tokens[:n].reshape(shape), ids[:n].reshape(shape))
        return self._blocks

    def batch(self, start: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Blocks start..start+size-1 of the endless stream of epochs."""
        rows = [divmod(g, self.blocks_per_epoch) for g in range(start, start + size)]
        tokens, ids = [], []
        for epoch, index in rows:
            t, d = self.epoch_blocks(epoch)
            tokens.append(t[index])
            ids.append(d[index])
        return np.stack(tokens), np.stack(ids)
