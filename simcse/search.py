"""Exact cosine search over an embedding matrix, with one deterministic answer whatever the backend.

:func:`semantic_search` follows ``sentence_transformers.util.semantic_search`` (UKPLab/
sentence-transformers, ``sentence_transformers/util/retrieval.py``): queries and corpus as embeddings
(torch or numpy), results ``[[{"corpus_id": int, "score": float}, ...], ...]`` best first, at most
``top_k`` per query, the corpus scanned in chunks. It differs in three ways, all about getting the same
answer every time:

* **Ties**: one rule, score descending then corpus id ascending (:func:`rank`). ``torch.topk`` and faiss
  pick among equal scores arbitrarily, so a plain top-k over tied scores depends on the backend and on
  the chunking.
* **Scores**: candidates are found with float32 inner products (BLAS, or a ``faiss.IndexFlatIP``), then
  every candidate is re-scored by one float64 function (:func:`exact_scores`), row by row, so the same
  pair gets the same score bit for bit whichever backend proposed it. To make sure the float32 pass
  cannot drop a row that belongs in the exact top k, it keeps every row scoring within
  :data:`TIE_MARGIN` of the float32 k-th best score (with faiss: a range search below the k-th score),
  however many tie there.
* **Memory**: the corpus is never copied or converted as a whole; each chunk of ``corpus_chunk_size``
  rows is scored against ``query_chunk_size`` queries at a time, so the largest temporary is
  ``query_chunk_size x corpus_chunk_size`` scores, and cosine normalisation divides those scores by the
  rows' norms instead of normalising a copy of the corpus.

``threshold`` (None by default, as the peer has none) drops hits scoring below it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from simcse.errors import SimCSEError

# float32 cosines of unit vectors of a few thousand dimensions are within ~1e-6 of the exact value; a row
# scoring within this margin of the k-th best float32 score is re-scored exactly before the cut.
TIE_MARGIN = 1e-4
_TINY = 1e-12  # norms below this count as zero: a zero vector scores 0 against everything


def as_matrix(value: Any, what: str) -> np.ndarray:
    """(n, H) float32 numpy view of embeddings (torch on any device, numpy, or nested lists); a 1-D
    input is one row. CPU float32 input is not copied."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise SimCSEError(f"{what} must be numeric embeddings, got an array of dtype {array.dtype}")
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise SimCSEError(f"{what} must be shaped (H,) or (n, H) with n, H > 0, got {tuple(np.shape(value))}")
    for start in range(0, len(array), 16_384):  # in blocks: a whole-array mask would be index-sized
        block = array[start:start + 16_384]
        if not np.isfinite(np.einsum("ij->i", block)).all():  # a NaN or inf makes its row sum one (or overflow)
            bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
            if len(bad):
                raise SimCSEError(f"{what} row {start + int(bad[0])} holds NaN or infinite values; it cannot be ranked")
    return array


def exact_scores(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``rows`` (m, H) with ``query`` (H,), in float64, computed row by row so a
    row's score does not depend on which other rows are scored with it."""
    rows64 = rows.astype(np.float64)
    q64 = query.astype(np.float64)
    q64 = q64 / max(float(np.sqrt((q64 * q64).sum())), _TINY)
    # elementwise products and a reduction along each row: no BLAS, whose blocking could depend on m
    norms = np.maximum(np.sqrt((rows64 * rows64).sum(axis=1)), _TINY)  # (m,)
    return (rows64 * q64[None, :]).sum(axis=1) / norms


def rank(ids: np.ndarray, scores: np.ndarray, top_k: int, threshold: float | None = None) -> list[dict]:
    """The tie rule: ``[{"corpus_id", "score"}]`` sorted by score descending, then corpus id ascending;
    at most ``top_k``; scores below ``threshold`` dropped."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.lexsort((ids, -scores))[:top_k]  # last key is primary
    hits = [{"corpus_id": int(ids[i]), "score": float(scores[i])} for i in order]
    return hits if threshold is None else [h for h in hits if h["score"] >= threshold]


def _kth_largest(scores: np.ndarray, k: int) -> np.ndarray:
    """(q,) k-th largest value of each row of ``scores`` (q, c), k <= c."""
    c = scores.shape[1]
    return np.partition(scores, c - k, axis=1)[:, c - k]


def scan_candidates(queries: np.ndarray, corpus: np.ndarray, k: int, query_chunk_size: int = 100,
                    corpus_chunk_size: int = 50_000) -> list[np.ndarray]:
    """Per query, the corpus ids whose float32 cosine is within :data:`TIE_MARGIN` of the k-th best:
    a superset of the exact top k, ties included. Chunked; the corpus is read, never copied."""
    if query_chunk_size < 1 or corpus_chunk_size < 1:
        raise SimCSEError(f"chunk sizes must be positive, got {query_chunk_size} and {corpus_chunk_size}")
    n = corpus.shape[0]
    k = min(k, n)
    found: list[np.ndarray] = []
    for q0 in range(0, len(queries), query_chunk_size):
        q = queries[q0:q0 + query_chunk_size]  # (b, H) view
        q_norms = np.maximum(np.sqrt(np.einsum("ij,ij->i", q, q)), _TINY)
        ids = [np.empty(0, np.int64) for _ in range(len(q))]
        scores = [np.empty(0, np.float32) for _ in range(len(q))]
        kth = np.full(len(q), -np.inf, dtype=np.float32)  # running k-th best per query
        for c0 in range(0, n, corpus_chunk_size):
            chunk = corpus[c0:c0 + corpus_chunk_size]  # (c, H) view
            norms = np.maximum(np.sqrt(np.einsum("ij,ij->i", chunk, chunk)), _TINY)  # (c,)
            sims = q @ chunk.T  # (b, c): the only chunk-sized temporary
            sims /= norms[None, :]
            sims /= q_norms[:, None]
            floor = kth - TIE_MARGIN
            short = np.flatnonzero(~np.isfinite(kth))  # rows without k candidates yet: this chunk's k-th
            if len(short):
                floor[short] = _kth_largest(sims[short], min(k, chunk.shape[0])) - TIE_MARGIN
            # Once a row has k candidates, a later chunk adds only what beats its running k-th best: rows are
            # visited only where the chunk's best score reaches the floor (one cheap max over the block).
            for row in np.flatnonzero(sims.max(axis=1) >= floor):
                keep = np.flatnonzero(sims[row] >= floor[row])
                ids[row] = np.concatenate([ids[row], keep + c0])
                scores[row] = np.concatenate([scores[row], sims[row, keep]])
                if len(scores[row]) >= k:
                    kth[row] = np.partition(scores[row], len(scores[row]) - k)[len(scores[row]) - k]
                    close = scores[row] >= kth[row] - TIE_MARGIN
                    ids[row], scores[row] = ids[row][close], scores[row][close]
        found.extend(ids)
    return found


def faiss_candidates(index, queries: np.ndarray, k: int, size: int) -> list[np.ndarray]:
    """The same superset as :func:`scan_candidates` from a ``faiss.IndexFlatIP`` over unit rows: the
    top ``k`` by faiss, widened by a range search to every row within :data:`TIE_MARGIN` of the k-th
    score when the top k may cut through a tie."""
    k = min(k, size)
    unit = queries / np.maximum(np.sqrt(np.einsum("ij,ij->i", queries, queries)), _TINY)[:, None]
    unit = np.ascontiguousarray(unit, dtype=np.float32)
    scores, ids = index.search(unit, k)  # (n, k)
    found = []
    for row in range(len(unit)):
        valid = ids[row] >= 0
        row_ids, row_scores = ids[row][valid].astype(np.int64), scores[row][valid]
        if size > k:  # rows beyond the k returned may tie with the k-th: fetch all within the margin
            limits, _, wide = index.range_search(unit[row:row + 1], float(row_scores[-1]) - TIE_MARGIN)
            row_ids = np.union1d(row_ids, wide[limits[0]:limits[1]].astype(np.int64))
        found.append(row_ids)
    return found


def search_candidates(queries: np.ndarray, corpus: np.ndarray, candidates: list[np.ndarray], top_k: int,
                      threshold: float | None) -> list[list[dict]]:
    """Exact float64 re-scoring of each query's candidates, then :func:`rank`."""
    results = []
    for query, ids in zip(queries, candidates):
        ids = np.unique(ids)  # sorted: the same candidate set gives the same arrays
        results.append(rank(ids, exact_scores(corpus[ids], query), top_k, threshold))
    return results


def semantic_search(query_embeddings, corpus_embeddings, top_k: int = 10, threshold: float | None = None,
                    query_chunk_size: int = 100, corpus_chunk_size: int = 50_000) -> list[list[dict]]:
    """Cosine search, ``sentence_transformers.util.semantic_search``'s interface and output format
    (``[[{"corpus_id", "score"}, ...]]``, one list per query, best first) with the exact, tie-stable
    ranking of this module. A 1-D query is one query (still a list of lists, as the peer returns)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise SimCSEError(f"top_k must be a positive integer, got {top_k!r}")
    queries = as_matrix(query_embeddings, "query_embeddings")
    corpus = as_matrix(corpus_embeddings, "corpus_embeddings")
    if queries.shape[1] != corpus.shape[1]:
        raise SimCSEError(f"query embeddings have {queries.shape[1]} dimensions but the corpus has {corpus.shape[1]}")
    candidates = scan_candidates(queries, corpus, top_k, query_chunk_size, corpus_chunk_size)
    return search_candidates(queries, corpus, candidates, top_k, threshold)
