"""A batch sampler that never puts the same sentence twice in one batch.

Every in-batch loss treats the other examples' sentences as negatives; a repeated sentence (common in
NLI data: one premise has several hypotheses; and in scraped corpora) is then a false negative: the
loss pushes a sentence away from itself. Batches are filled in a seeded random order, deferring an
example whose sentences collide with one already in the batch to a later batch. Every example is
yielded exactly once per epoch; only when all remaining examples collide with each other can a batch
come out smaller than ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import torch
from torch.utils.data import Sampler


class NoDuplicatesBatchSampler(Sampler[list[int]]):
    """keys[i]: the identities (e.g. token-id tuples) of example i's sentences.

    Under DDP (``num_replicas`` > 1) the duplicate-free batches are GLOBAL batches of
    ``batch_size * num_replicas`` examples, and process ``rank`` receives its slice of each, so no two
    processes hold the same sentence in one step either; global batches that could not be filled (at the
    end of the epoch, when the remaining examples all collide) are dropped, as with ``drop_last``: the
    gathered embeddings need equal shapes.
    """

    def __init__(self, keys: Sequence[Sequence[Hashable]], batch_size: int, seed: int = 0, drop_last: bool = False,
                 num_replicas: int = 1, rank: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.keys = [frozenset(k) for k in keys]
        self.num_replicas = num_replicas
        self.rank = rank
        self.local_batch_size = batch_size
        self.batch_size = batch_size * num_replicas
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        remaining = torch.randperm(len(self.keys), generator=generator).tolist()
        batches = []
        while remaining:
            batch, seen, deferred = [], set(), []
            for position, index in enumerate(remaining):
                if len(batch) == self.batch_size:
                    deferred.extend(remaining[position:])
                    break
                if self.keys[index] & seen:
                    deferred.append(index)
                else:
                    batch.append(index)
                    seen |= self.keys[index]
            batches.append(batch)
            remaining = deferred
        if self.drop_last or self.num_replicas > 1:
            batches = [b for b in batches if len(b) == self.batch_size]
        self._cache = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        b = self.local_batch_size
        for batch in self._batches():
            yield batch if self.num_replicas == 1 else batch[self.rank * b:(self.rank + 1) * b]

    def __len__(self) -> int:
        return len(self._batches())


def sentence_keys(dataset) -> list[tuple[tuple[int, ...], ...]]:
    """Identities of each tokenized example's sentences: their token-id tuples (num_sent per example)."""
    return [tuple(tuple(ids) for ids in example) for example in dataset["input_ids"]]


class EpochDataLoader(torch.utils.data.DataLoader):
    """A DataLoader whose ``set_epoch`` (called by the Trainer each epoch) reaches its batch sampler."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)
