"""The no-duplicates batch sampler: no repeat inside a batch, nothing lost or doubled per epoch."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from simcse.data.sampler import NoDuplicatesBatchSampler, hash_sentences, sentence_keys


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
        assert 2 <= len(batch) <= batch_size + 1  # a lone tail example joins an earlier batch
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


# ----- heavy repeats, tails, epochs, resuming ---------------------------------------------------------


def heavy_keys(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) integer keys, NLI-like and worse: anchors drawn from n // 8 values, positives from n // 2,
    and one sentence (key 0) as the hard negative of every 5th example: far more copies than batches
    fit, so the epoch ends with a tail of batches that cannot be filled."""
    rng = np.random.default_rng(seed)
    keys = np.stack([rng.integers(1, n // 8, n), rng.integers(n, n + n // 2, n), rng.integers(2 * n, 3 * n, n)], 1)
    keys[::5, 2] = 0
    return keys


def check_epoch(keys: np.ndarray, batches: list[list[int]], batch_size: int) -> None:
    for batch in batches:
        sentences = keys[batch].ravel().tolist()
        assert len(sentences) == len(set(sentences)), "a sentence repeats inside a batch"
        assert 2 <= len(batch) <= batch_size + 1  # a lone tail example joins an earlier batch
    counts = Counter(i for batch in batches for i in batch)
    assert set(counts.values()) == {1}, "doubled"
    # Left out only: an example of a would-be batch of one that collides with every one of the last 64
    # batches, so that no batch could take it without a repeat.
    for missing in sorted(set(range(len(keys))) - set(counts)):
        mine = set(keys[missing].tolist())
        assert all(not mine.isdisjoint(keys[batch].ravel().tolist()) for batch in batches[-64:]), missing


@pytest.mark.parametrize("batch_size", [8, 32])
def test_heavy_repeats_over_several_epochs(batch_size):
    keys = heavy_keys(2000)
    sampler = NoDuplicatesBatchSampler(keys, batch_size, seed=7)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        check_epoch(keys, batches, batch_size)
        assert len(sampler) == len(batches)
        sizes = [len(b) for b in batches]
        # 400 copies of key 0 would need 400 batches: the batches are full (one copy each) until the other
        # examples run out; the rest are copies of key 0 alone, which no batch can take, so they are left
        # out (a batch of one has no in-batch negative) and only they are
        copies = len(keys) // 5
        assert len(batches) < copies and len(keys) - sum(sizes) == copies - len(batches)
        assert sizes.count(batch_size) >= (len(keys) - copies) // (batch_size - 1) - 3
        assert min(sizes) >= 2
        epochs.append(batches)
    assert epochs[0] != epochs[1] != epochs[2]
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1] == list(_fresh(keys, batch_size, seed=7, epoch=1))


def _fresh(keys, batch_size, seed, epoch, **kwargs):
    sampler = NoDuplicatesBatchSampler(keys, batch_size, seed=seed, **kwargs)
    sampler.set_epoch(epoch)
    return sampler


def test_resume_mid_epoch_gets_exactly_the_remaining_batches():
    """A resumed run builds a new sampler and skips the batches already trained on (the Trainer's
    skip_first_batches); together with them they make the epoch, nothing lost or repeated."""
    from accelerate.data_loader import SkipBatchSampler

    keys = heavy_keys(1000, seed=3)
    full = list(_fresh(keys, 16, seed=11, epoch=2))
    done = full[:23]
    rest = list(SkipBatchSampler(_fresh(keys, 16, seed=11, epoch=2), skip_batches=23))
    assert done + rest == full
    check_epoch(keys, done + rest, 16)


def test_ddp_global_batches_with_repeats_and_a_tail():
    keys = heavy_keys(1200, seed=5)
    ranks = [list(_fresh(keys, 8, seed=2, epoch=1, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1
    seen = []
    for parts in zip(*ranks):
        assert all(len(p) == 8 for p in parts)  # equal shapes on every process
        global_batch = [i for p in parts for i in p]
        sentences = keys[global_batch].ravel().tolist()
        assert len(sentences) == len(set(sentences))
        seen += global_batch
    assert len(seen) == len(set(seen))
    lost = len(keys) - len(seen)
    # dropped: the copies of key 0 beyond one per global batch, and at most one global batch of others
    assert 0 < lost <= (1200 // 5 - len(seen) // 24) + 24


# ----- linear cost: count the steps, not the time ---------------------------------------------------


@pytest.mark.parametrize("make", [heavy_keys, lambda n: np.zeros((n, 1), dtype=np.int64)],
                         ids=["heavy-repeats", "one-sentence-repeated-n-times"])
def test_planning_cost_is_linear_in_the_dataset_size(make):
    steps = {}
    for n in (1000, 4000, 16000):
        sampler = NoDuplicatesBatchSampler(make(n), 32, seed=0)
        len(sampler)  # plans the epoch
        steps[n] = sampler.examinations
    # examinations per example stay at a constant instead of growing with n (the former sampler rescanned
    # its whole remaining list per batch: about n**2 / (2 * batch_size) steps)
    assert all(steps[n] <= 3 * n for n in steps), steps
    assert steps[16000] / 16000 <= 1.2 * steps[1000] / 1000, steps


def test_a_sentence_repeated_everywhere_gives_no_batch_of_one():
    """300 copies of one sentence: no duplicate-free batch of two exists, so nothing is yielded (one
    process); batches of one would crash every in-batch loss."""
    keys = np.zeros((300, 1), dtype=np.int64)
    sampler = NoDuplicatesBatchSampler(keys, 16, seed=0)
    assert list(sampler) == [] and len(sampler) == 0


def test_a_lone_tail_example_joins_an_earlier_batch():
    """9 distinct examples, batch 4: batches 4 + 4 + 1; the lone ninth joins a batch (of 5), none lost."""
    sampler = NoDuplicatesBatchSampler([(f"s{i}",) for i in range(9)], 4, seed=0)
    batches = list(sampler)
    assert sorted(len(b) for b in batches) == [4, 5] and sorted(i for b in batches for i in b) == list(range(9))
    assert len(sampler) == 2
    assert NoDuplicatesBatchSampler([(f"s{i}",) for i in range(9)], 4, seed=0, drop_last=True).__len__() == 2


# ----- sentence keys ----------------------------------------------------------------------------------


def test_hashes_are_equal_exactly_for_equal_sequences():
    seqs = [[101, 7, 8, 102], [101, 8, 7, 102], [101, 7, 8, 102], [101, 7, 8], [101, 7, 8, 102, 0], [5], [5], []]
    flat = np.array([t for s in seqs for t in s], dtype=np.int32)
    h = hash_sentences(flat, [len(s) for s in seqs])
    assert h.dtype == np.uint64
    same = {(i, j) for i in range(len(seqs)) for j in range(len(seqs)) if h[i] == h[j] and i < j}
    assert same == {(0, 2), (5, 6)}
    rng = np.random.default_rng(0)  # no collisions among 50k random short sequences
    lengths = rng.integers(1, 12, 50_000)
    tokens = rng.integers(0, 30, int(lengths.sum()))
    distinct = {tuple(s) for s in np.split(tokens, np.cumsum(lengths)[:-1])}
    assert len(np.unique(hash_sentences(tokens, lengths))) == len(distinct)


def test_sentence_keys_of_tokenized_examples(tmp_path):
    import datasets
    from transformers import AutoTokenizer

    from helpers import tokenizer_path
    from simcse.data import tokenize_dataset

    text = datasets.Dataset.from_dict({"a": ["x y", "z", "x y", "w"], "b": ["z", "x y", "q", "w"]})
    examples = tokenize_dataset(text, AutoTokenizer.from_pretrained(tokenizer_path("bert-base-uncased")))
    keys = sentence_keys(examples)
    assert keys.shape == (4, 2) and keys.dtype == np.uint64
    assert keys[0, 0] == keys[1, 1] == keys[2, 0] and keys[0, 1] == keys[1, 0] and keys[3, 0] == keys[3, 1]
    assert len(set(keys.ravel().tolist())) == 4  # "x y", "z", "q", "w"
    assert np.array_equal(keys, sentence_keys(examples.dataset))


# ----- end to end: a file with many repeats, checked on the token ids the model receives ---------------


def test_real_file_with_repeats_batches_never_repeat_a_token_sequence(tmp_path):
    """NLI-shaped file -> load -> tokenize -> hashed keys -> sampler -> collator, as train.py with
    --no_duplicates_in_batch. Premises repeat (a premise has several hypotheses), one hard negative is
    shared by every 4th example (more copies than fit: a tail of small batches), and some sentences
    differ only in case, which the uncased tokenizer makes identical: the guarantee holds for the token
    sequences the model sees. Several epochs, and a resumed epoch, are checked the same way."""
    import torch
    from accelerate.data_loader import SkipBatchSampler
    from transformers import AutoTokenizer

    from helpers import tokenizer_path
    from simcse.data import SimCSECollator, load_training_dataset, tokenize_dataset

    rng = random.Random(0)
    rows = []
    for i in range(600):
        premise = f"premise number {rng.randrange(60)}"
        premise = premise.upper() if rng.random() < 0.3 else premise
        negative = "The shared negative." if i % 4 == 0 else f"negative {i}"
        rows.append(f"{premise},hypothesis {i % 450},{negative}")
    path = tmp_path / "nli.csv"
    path.write_text("sent0,sent1,hard_neg\n" + "\n".join(rows) + "\n", encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path("bert-base-uncased"))
    examples = tokenize_dataset(load_training_dataset(path, cache_dir=tmp_path / "cache"), tokenizer)
    keys = sentence_keys(examples)
    assert keys.shape == (600, 3) and keys.nbytes == 600 * 3 * 8  # 8 bytes per sentence
    texts = {row.split(",")[0] for row in rows}
    assert len(set(keys[:, 0].tolist())) == len({t.lower() for t in texts}) < len(texts)  # case merged
    collator = SimCSECollator(tokenizer)

    def token_batches(sampler) -> list[tuple[list[int], list[tuple[int, ...]]]]:
        loader = torch.utils.data.DataLoader(examples, batch_sampler=sampler, collate_fn=collator)
        out = []
        for indices, batch in zip(sampler, loader):
            ids, mask = batch["input_ids"].flatten(0, 1), batch["attention_mask"].flatten(0, 1)
            out.append((indices, [tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask)]))
        return out

    copies = 600 // 4
    epochs = []
    for epoch in range(3):
        sampler = _fresh(keys, 32, seed=4, epoch=epoch)
        batches = token_batches(sampler)
        for indices, sequences in batches:
            assert len(sequences) == 3 * len(indices) and len(set(sequences)) == len(sequences)
        seen = sorted(i for indices, _ in batches for i in indices)
        assert len(seen) == len(set(seen))  # no example twice
        # One shared negative per batch: once the other examples run out, its remaining copies could only
        # form batches of one, which are left out (no loss is defined on them), and only they are.
        left_out = set(range(600)) - set(seen)
        assert left_out and all(i % 4 == 0 for i in left_out)
        assert len(batches) == copies - len(left_out) and min(len(b[0]) for b in batches) >= 2
        epochs.append([indices for indices, _ in batches])
    assert epochs[0] != epochs[1] != epochs[2]

    done = 57  # a run killed after 57 steps of epoch 2, resumed by skipping them
    rest = [list(b) for b in SkipBatchSampler(_fresh(keys, 32, seed=4, epoch=2), skip_batches=done)]
    assert epochs[2][:done] + rest == epochs[2]
