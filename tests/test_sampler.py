"""The no-duplicates batch sampler: no repeat inside a batch, nothing lost or doubled per epoch."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from simcse.sampler import NoDuplicatesBatchSampler


def repeated_keys(n: int = 200, distinct: int = 30, seed: int = 0) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    # supervised-like examples: (anchor, positive); anchors repeat often, as NLI premises do
    return [(f"s{rng.randrange(distinct)}", f"p{i}") for i in range(n)]


@pytest.mark.parametrize("batch_size", [4, 16, 25])
def test_no_batch_repeats_a_sentence_and_every_example_appears_once(batch_size):
    keys = repeated_keys()
    sampler = NoDuplicatesBatchSampler(keys, batch_size, seed=3)
    batches = list(sampler)
    for batch in batches:
        sentences = [s for i in batch for s in keys[i]]
        assert len(sentences) == len(set(sentences)), batch
        assert 1 <= len(batch) <= batch_size
    counts = Counter(i for batch in batches for i in batch)
    assert sorted(counts) == list(range(len(keys))) and set(counts.values()) == {1}
    assert len(sampler) == len(batches)
    if batch_size <= 16:  # with 30 distinct anchors, small batches can nearly always be filled
        assert sum(len(b) == batch_size for b in batches) >= len(batches) - 3


def test_a_plain_sampler_would_repeat_on_this_data():
    """The test data above does put repeats into ordinary batches, so the property is not vacuous."""
    keys = repeated_keys()
    order = list(range(len(keys)))
    random.Random(3).shuffle(order)
    batches = [order[i:i + 16] for i in range(0, len(order), 16)]
    assert any(len({keys[i][0] for i in b}) < len(b) for b in batches)


def test_epochs_reshuffle_and_seeds_reproduce():
    keys = [(f"s{i}",) for i in range(50)]
    sampler = NoDuplicatesBatchSampler(keys, 8, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first == list(NoDuplicatesBatchSampler(keys, 8, seed=1))


def test_ddp_slices_partition_each_global_batch():
    keys = repeated_keys(n=96, distinct=20)
    whole = NoDuplicatesBatchSampler(keys, 4, seed=5, num_replicas=2, rank=0)._batches()  # global batches of 8
    rank0 = list(NoDuplicatesBatchSampler(keys, 4, seed=5, num_replicas=2, rank=0))
    rank1 = list(NoDuplicatesBatchSampler(keys, 4, seed=5, num_replicas=2, rank=1))
    assert len(rank0) == len(rank1) == len(whole)
    for global_batch, a, b in zip(whole, rank0, rank1):
        assert len(a) == len(b) == 4 and a + b == global_batch
        sentences = [s for i in a + b for s in keys[i]]
        assert len(sentences) == len(set(sentences))
