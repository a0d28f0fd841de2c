"""simcse.search: the tie rule, agreement with sentence-transformers' semantic_search, identical answers
from the chunked scan and faiss when many scores tie, and no copy of the index per query."""

from __future__ import annotations

import importlib.util
import tracemalloc

import numpy as np
import pytest
import torch

from helpers import require_module
from simcse.errors import SimCSEError
from simcse.search import (
    TIE_MARGIN,
    faiss_candidates,
    rank,
    scan_candidates,
    search_candidates,
    semantic_search,
)

HAS_FAISS = importlib.util.find_spec("faiss") is not None


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_rank_is_score_descending_then_id_ascending():
    ids = np.array([5, 2, 9, 1, 7])
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    assert [h["corpus_id"] for h in rank(ids, scores, top_k=10)] == [1, 2, 5, 9, 7]
    assert [h["corpus_id"] for h in rank(ids, scores, top_k=3)] == [1, 2, 5]
    assert [h["corpus_id"] for h in rank(ids, scores, top_k=10, threshold=0.5)] == [1, 2, 5, 9]
    assert rank(ids, scores, top_k=2) == [{"corpus_id": 1, "score": 0.9}, {"corpus_id": 2, "score": 0.9}]


def test_equals_sentence_transformers_semantic_search_without_ties():
    util = require_module("sentence_transformers.util")
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((300, 24)).astype(np.float32)  # not unit: cosine must normalise
    queries = rng.standard_normal((7, 24)).astype(np.float32)
    peer = util.semantic_search(torch.from_numpy(queries), torch.from_numpy(corpus), top_k=12)
    ours = semantic_search(queries, torch.from_numpy(corpus), top_k=12, corpus_chunk_size=50, query_chunk_size=3)
    assert [[h["corpus_id"] for h in hits] for hits in ours] == [[h["corpus_id"] for h in hits] for hits in peer]
    for mine, theirs in zip(ours, peer):
        np.testing.assert_allclose([h["score"] for h in mine], [h["score"] for h in theirs], atol=1e-6)
    one = semantic_search(queries[0], corpus, top_k=3)  # a 1-D query is one query, as in the peer
    assert len(one) == 1 and one[0] == ours[0][:3]
    assert semantic_search(queries, corpus, top_k=12, threshold=0.3) == [
        [h for h in hits if h["score"] >= 0.3] for hits in ours]


def tied_corpus(n_tied: int = 40, n_other: int = 60, dim: int = 32, seed: int = 1):
    """n_tied copies of the query's direction scattered among n_other random rows (all scoring lower)."""
    rng = np.random.default_rng(seed)
    query = unit(rng.standard_normal((1, dim)))[0]
    others = unit(rng.standard_normal((n_other, dim)))
    others = others[others @ query < 0.9]
    corpus = np.concatenate([np.repeat(query[None, :], n_tied, axis=0), others])
    order = rng.permutation(len(corpus))
    corpus = np.ascontiguousarray(corpus[order])
    tied = np.sort(np.flatnonzero(order < n_tied))  # where the copies ended up
    return query, corpus, tied


@pytest.mark.parametrize("top_k", [1, 5, 17, 40, 45])
def test_ties_beyond_any_candidate_slack_give_one_answer_on_every_backend(top_k):
    # 40 equal scores > the 16 extra candidates the old search fetched: it returned whichever copies the
    # backend happened to pick. Now: the smallest ids among the ties, whatever the chunking or backend.
    query, corpus, tied = tied_corpus()
    expected = [int(i) for i in tied[:top_k]]
    answers = []
    for chunk in (7, 16, 1000):
        hits = semantic_search(query, corpus, top_k=top_k, corpus_chunk_size=chunk)[0]
        answers.append(hits)
        assert [h["corpus_id"] for h in hits][:min(top_k, len(tied))] == expected
    assert all(a == answers[0] for a in answers)
    if top_k > len(tied):  # past the ties: the next best rows by score
        assert [h["score"] for h in answers[0]] == sorted((h["score"] for h in answers[0]), reverse=True)
    if HAS_FAISS:
        import faiss

        index = faiss.IndexFlatIP(corpus.shape[1])
        index.add(corpus)
        candidates = faiss_candidates(index, query[None, :], top_k, len(corpus))
        assert search_candidates(query[None, :], corpus, candidates, top_k, None)[0] == answers[0]


def test_candidates_hold_every_row_within_the_margin_of_the_kth_score():
    query, corpus, tied = tied_corpus(n_tied=25)
    (found,) = scan_candidates(query[None, :], corpus, k=3, corpus_chunk_size=9)
    assert set(tied) <= set(found.tolist())  # all 25 tied rows, though k = 3
    scores = corpus @ query
    assert set(found.tolist()) == set(np.flatnonzero(scores >= np.sort(scores)[-3] - TIE_MARGIN).tolist())


def test_a_200k_index_is_searched_without_an_index_sized_allocation():
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((200_000, 384), dtype=np.float32)  # 307 MB
    queries = corpus[[123_456, 7]] + 0.01 * rng.standard_normal((2, 384), dtype=np.float32)

    def peak_of(call) -> tuple[object, int]:
        tracemalloc.start()
        try:
            result = call()
            return result, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    hits, peak = peak_of(lambda: semantic_search(queries, corpus, top_k=5))
    assert [h[0]["corpus_id"] for h in hits] == [123_456, 7]
    assert peak < corpus.nbytes / 20, \
        f"peak {peak / 2**20:.1f} MiB while searching a {corpus.nbytes / 2**20:.0f} MiB index"
    # the measurement sees numpy temporaries: one unchunked 64 x 200k score block is 49 MiB, over the bound
    _, unchunked = peak_of(lambda: semantic_search(corpus[:64], corpus, top_k=5, corpus_chunk_size=len(corpus),
                                                   query_chunk_size=64))
    assert unchunked > corpus.nbytes / 20


def test_bad_inputs_are_errors_naming_the_value():
    corpus = np.eye(3, dtype=np.float32)
    with pytest.raises(SimCSEError, match=r"top_k must be a positive integer, got 0"):
        semantic_search(corpus[0], corpus, top_k=0)
    with pytest.raises(SimCSEError, match=r"query embeddings have 2 dimensions but the corpus has 3"):
        semantic_search(np.ones(2), corpus)
    with pytest.raises(SimCSEError, match=r"NaN or infinite"):
        semantic_search(np.array([np.nan, 0, 0]), corpus)
    with pytest.raises(SimCSEError, match=r"must be numeric embeddings, got an array of dtype <U"):
        semantic_search(np.array(["a"]), corpus)
