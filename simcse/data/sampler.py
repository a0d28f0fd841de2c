"""A batch sampler that never puts the same sentence twice in one batch, in time linear in the data.

Every in-batch loss treats the other examples' sentences as negatives; a repeated sentence (common in
NLI data: one premise has several hypotheses; and in scraped corpora) is then a false negative: the
loss pushes a sentence away from itself. Batches are filled in a seeded random order; an example whose
sentences collide with one already in the batch waits ("is parked") and goes into a later batch.
Every example is yielded at most once per epoch; only when the remaining examples collide with each
other can a batch come out smaller than ``batch_size``, and a batch of one is never yielded (see
:meth:`NoDuplicatesBatchSampler._absorb_lone`).

Cost. A sentence is identified by a 64-bit hash of its token ids (:func:`hash_sentences`), held in one
numpy array (8 bytes per sentence), not by a tuple of its tokens. Planning an epoch examines each
example once when it comes up in the random order, plus at most ``4 * batch_size`` steps among the
parked examples per batch, so the cost is linear in the number of examples (the tests count these
examinations). A parked example waits in the bucket of the sentence it collided with: a bucket whose
sentence is already in the batch is passed over in one step, so a sentence repeated thousands of times
costs one step per batch, not one per copy. The epoch's plan is two integer arrays (the order and the batch boundaries);
nothing is copied per batch.

Hash collisions: two different sentences with equal hashes (probability about n²/2⁶⁵, 3e-8 for a
million sentences) only make the sampler keep them apart needlessly; identical sentences always have
equal hashes, so a repeat can never slip into a batch. The plan depends only on which keys are equal,
not on their values, so it is the same on every process and every run for a given seed and epoch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from simcse.data.hashing import GOLDEN, splitmix64

__all__ = ["EpochDataLoader", "NoDuplicatesBatchSampler", "hash_sentences", "sentence_keys"]

_TOKENS_PER_STEP = 1 << 20  # tokens hashed at a time
_CHUNK = 1 << 16  # examples whose keys are turned into Python ints at a time while planning


def _position_multipliers(length: int) -> np.ndarray:
    """Fixed odd 64-bit multipliers, one per token position (the same in every process and run)."""
    return np.random.default_rng(0x51CE5E).integers(0, 2**64, size=length, dtype=np.uint64) | np.uint64(1)


def hash_sentences(token_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """64-bit hashes of token sequences given concatenated: (S,) uint64 for S = len(lengths) sequences.

    ``token_ids`` holds the S sequences one after the other (sum(lengths) ids). Each token id is
    scrambled, multiplied by a fixed random odd number of its position and the products are summed per
    sequence (wrapping); the sum is mixed with the length by SplitMix64. Equal sequences get equal
    hashes; content, order and length all change the hash. Vectorized over about a million tokens at a
    time: no Python work per token and bounded scratch memory.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    ids = np.asarray(token_ids)
    if ids.size != int(lengths.sum()):
        raise ValueError(f"token_ids holds {ids.size} ids but the lengths add up to {int(lengths.sum())}")
    count = len(lengths)
    starts = np.zeros(count, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    multipliers = _position_multipliers(int(lengths.max()) if count else 0)
    sums = np.zeros(count, dtype=np.uint64)
    first = 0
    while first < count:  # sequences [first, last) hold about _TOKENS_PER_STEP tokens
        last = max(first + 1, int(np.searchsorted(starts, starts[first] + _TOKENS_PER_STEP, side="right")))
        last = min(last, count)
        begin, end = starts[first], starts[last - 1] + lengths[last - 1]
        local_starts, local_lengths = starts[first:last] - begin, lengths[first:last]
        position = np.arange(end - begin, dtype=np.int64) - np.repeat(local_starts, local_lengths)
        with np.errstate(over="ignore"):
            x = ids[begin:end].astype(np.uint64) * GOLDEN + np.uint64(1)
            x ^= x >> np.uint64(29)
            x *= multipliers[position]
            nonempty = local_lengths > 0
            if x.size:
                sums[first:last][nonempty] = np.add.reduceat(x, local_starts[nonempty])
        first = last
    with np.errstate(over="ignore"):
        return splitmix64(sums ^ splitmix64((lengths.astype(np.uint64) + np.uint64(1)) * GOLDEN))


def sentence_keys(dataset: Any) -> np.ndarray:
    """(n, num_sent) uint64 hashes of each tokenized example's sentences.

    ``dataset``: a :class:`simcse.data.TrainingExamples` (read chunk by chunk from its Arrow table), or
    anything whose ``dataset["input_ids"]`` lists num_sent token lists per example.
    """
    if hasattr(dataset, "token_chunks"):
        parts = [hash_sentences(ids, lengths).reshape(-1, num_sent)
                 for ids, lengths, num_sent in dataset.token_chunks()]
        return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.uint64)
    rows = dataset["input_ids"]
    num_sent = len(rows[0]) if len(rows) else 1
    sequences = [seq for row in rows for seq in row]
    lengths = np.array([len(seq) for seq in sequences], dtype=np.int64)
    flat = np.concatenate([np.asarray(seq, dtype=np.int64) for seq in sequences]) if sequences else np.zeros(0)
    return hash_sentences(flat, lengths).reshape(-1, num_sent)


def _as_key_array(keys: np.ndarray | Sequence[Sequence[Hashable]]) -> np.ndarray:
    """(n, k) integer keys; arbitrary hashables (e.g. strings) get exact integer ids in order of first use."""
    if isinstance(keys, np.ndarray):
        if keys.dtype.kind not in "iu":
            raise ValueError(f"key arrays must hold integers, got dtype {keys.dtype}")
        return keys.reshape(len(keys), -1)
    ids: dict[Hashable, int] = {}
    rows = [[ids.setdefault(key, len(ids)) for key in example] for example in keys]
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise ValueError(f"every example needs the same number of sentences, got {sorted(widths)}")
    return np.array(rows, dtype=np.int64).reshape(len(rows), -1)


def plan_epoch(keys: np.ndarray, batch_size: int, order: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Cut ``order`` (a permutation of the examples) into duplicate-free batches.

    keys: (n, k) integer keys of each example's sentences. Returns ``(sequence, bounds, examinations)``:
    batch b is ``sequence[bounds[b]:bounds[b + 1]]``; ``examinations`` counts the steps taken (an
    example looked at, or a bucket passed over): the cost measure the tests bound. Examples come from
    ``order`` one at a time; one that collides with the batch is parked in the bucket of the first
    sentence it collided with. Each batch
    first visits the parked buckets, oldest first (at most one example from each, at most
    ``4 * batch_size`` visits), then continues along ``order``.
    """
    n = len(order)
    sequence = np.empty(n, dtype=np.int64)
    bounds = [0]
    filled = examinations = 0
    parked: dict[int, deque[tuple[int, list[int]]]] = {}  # sentence key -> examples waiting behind it
    active: deque[int] = deque()  # keys with a non-empty bucket, oldest first; each key at most once
    seen: set[int] = set()  # sentence keys in the batch being filled
    visit_budget = 4 * batch_size

    def park(item: tuple[int, list[int]], key: int) -> None:
        bucket = parked.get(key)
        if bucket is None:
            parked[key] = bucket = deque()
            active.append(key)
        bucket.append(item)

    def place(item: tuple[int, list[int]], slot: int) -> int:
        """Put the example in the batch at ``slot`` (1) or park it behind its first collision (0)."""
        index, sentences = item
        blocker = next((s for s in sentences if s in seen), None)
        if blocker is not None:
            park(item, blocker)
            return 0
        sequence[slot] = index
        seen.update(sentences)
        return 1

    def stream() -> Iterator[tuple[int, list[int]]]:
        for start in range(0, n, _CHUNK):
            chunk = order[start:start + _CHUNK]
            yield from zip(chunk.tolist(), keys[chunk].tolist())

    upcoming = stream()
    while filled < n:
        seen.clear()
        size = 0
        for _ in range(min(len(active), visit_budget)):
            if size == batch_size:
                break
            key = active.popleft()
            bucket = parked[key]
            examinations += 1
            if key not in seen:  # otherwise every example in this bucket collides: pass it over
                size += place(bucket.popleft(), filled + size)
            if bucket:
                active.append(key)
            else:
                del parked[key]
        while size < batch_size:
            item = next(upcoming, None)
            if item is None:
                break
            examinations += 1
            size += place(item, filled + size)
        filled += size
        bounds.append(filled)
    return sequence, np.array(bounds, dtype=np.int64), examinations


class NoDuplicatesBatchSampler(Sampler[list[int]]):
    """Duplicate-free batches; keys: (n, num_sent) integer sentence keys from :func:`sentence_keys`
    (or, for small data and tests, any sequences of hashables, e.g. the sentences themselves).

    Deterministic for a (seed, epoch) pair, so a run resumed mid-epoch (the Trainer skips the batches
    already seen) gets exactly the remaining batches. Under DDP (``num_replicas`` > 1) the duplicate-free
    batches are GLOBAL batches of ``batch_size * num_replicas`` examples, and process ``rank`` receives
    its slice of each, so no two processes hold the same sentence in one step either; global batches
    that could not be filled (at the end of the epoch, when the remaining examples all collide) are
    dropped, as with ``drop_last``: the gathered embeddings need equal shapes. In one process no batch
    of a single example is yielded (no in-batch loss is defined on it): such an example joins an
    earlier batch of the epoch that it does not collide with (:meth:`_absorb_lone`).
    """

    def __init__(self, keys: np.ndarray | Sequence[Sequence[Hashable]], batch_size: int, seed: int = 0,
                 drop_last: bool = False, num_replicas: int = 1, rank: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.keys = _as_key_array(keys)
        self.num_replicas = num_replicas
        self.rank = rank
        self.local_batch_size = batch_size
        self.batch_size = batch_size * num_replicas
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.examinations = 0  # of the last planned epoch
        self._plan: tuple[int, np.ndarray, np.ndarray, dict[int, list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.keys))

    def _planned(self) -> tuple[np.ndarray, np.ndarray, dict[int, list[int]]]:
        """The epoch's (sequence, spans, extras) after the tail rule, computed once per epoch: batch b is
        ``sequence[spans[b, 0]:spans[b, 1]]`` plus ``extras.get(b, [])``."""
        if self._plan is None or self._plan[0] != self.epoch:
            sequence, bounds, self.examinations = plan_epoch(self.keys, self.batch_size, self._order())
            starts, ends = bounds[:-1], bounds[1:]
            keep = self._keep(ends - starts)
            spans = np.stack([starts, ends], axis=1)
            extras = self._absorb_lone(sequence, spans, ~keep)
            self._plan = (self.epoch, sequence, spans[keep], extras)
        return self._plan[1], self._plan[2], self._plan[3]

    def _keep(self, sizes: np.ndarray) -> np.ndarray:
        """The tail rule: which batches (by size) are yielded as they are."""
        if self.drop_last or self.num_replicas > 1:
            return sizes == self.batch_size
        return sizes >= min(2, self.batch_size)  # a batch of one has no in-batch negative: no loss uses it

    def _absorb_lone(self, sequence: np.ndarray, spans: np.ndarray, dropped: np.ndarray) -> dict[int, list[int]]:
        """One process without drop_last: the example of a batch of one (the end of an epoch whose last
        examples all repeat one sentence) joins the latest kept batch it does not collide with, which
        then holds one more example, so nothing is lost. Returns {index among kept batches: examples}.
        Only when no kept batch among the last 64 can take it (data that is nearly one sentence) is it
        left out of this epoch."""
        if self.drop_last or self.num_replicas > 1 or not dropped.any():
            return {}
        kept = np.flatnonzero(~dropped)
        extras: dict[int, list[int]] = {}
        for lone in np.flatnonzero(dropped).tolist():
            example = int(sequence[spans[lone, 0]])
            mine = set(self.keys[example].tolist())
            for position in range(len(kept) - 1, max(-1, len(kept) - 65), -1):
                a, b = spans[kept[position]]
                members = sequence[a:b].tolist() + extras.get(position, [])
                if mine.isdisjoint(self.keys[members].ravel().tolist()):
                    extras.setdefault(position, []).append(example)
                    break
        return extras

    def _batches(self) -> list[list[int]]:
        """All (global) batches of the epoch, as lists."""
        return list(self._iter_global())

    def _iter_global(self) -> Iterator[list[int]]:
        sequence, spans, extras = self._planned()
        for position, (start, end) in enumerate(spans.tolist()):
            yield sequence[start:end].tolist() + extras.get(position, [])

    def __iter__(self) -> Iterator[list[int]]:
        if self.num_replicas == 1:
            yield from self._iter_global()
            return
        sequence, spans, _ = self._planned()
        b = self.local_batch_size
        for start, _end in spans.tolist():
            yield sequence[start + self.rank * b:start + (self.rank + 1) * b].tolist()

    def __len__(self) -> int:
        return len(self._planned()[1])


class EpochDataLoader(torch.utils.data.DataLoader):
    """A DataLoader whose ``set_epoch`` (called by the Trainer each epoch) reaches its batch sampler."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)
