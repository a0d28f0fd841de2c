"""Hard negatives for (anchor, positive) pairs: embed, retrieve, optionally rescore, select, write.

The order of work follows sentence-transformers' ``mine_hard_negatives`` (UKPLab/sentence-transformers,
``sentence_transformers/util/hard_negatives.py``), so that the same model, data and settings give the same
negatives (tests/test_mine.py checks it against the peer): anchors are deduplicated, the corpus is the
given corpus (or the positives) plus every positive, each text once; every anchor retrieves its
``range_max + max_positives + 1`` nearest corpus texts by cosine; a cross-encoder, when given, rescores
those candidates and the positives; :mod:`simcse.mine.select` keeps the negatives. Two documented
differences: retrieval is the project's exact search (:mod:`simcse.search`: float64 scores, ties broken
by corpus id, where the peer's float32 ``topk`` picks among ties arbitrarily), and every input row is
written in input order (the peer groups rows by anchor and writes a repeated (anchor, positive) pair once).

For large corpora the work is bounded and resumable: embeddings go to memory-mapped arrays
(:mod:`simcse.mine.embeddings`), retrieval runs ``query_chunk_size`` anchors at a time against corpus
chunks and saves each chunk's candidates, so a killed run redoes at most one chunk.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from simcse.errors import SimCSEError
from simcse.mine.embeddings import texts_digest
from simcse.mine.select import Counts, Selection, select
from simcse.search import exact_scores, faiss_candidates, scan_candidates, search_candidates

# embed(texts, name) -> (n, H) float32 array (a memmap for large corpora); name: "corpus" or "anchors"
Embedder = Callable[[Sequence[str], str], np.ndarray]
# score(pairs) -> (n,) scores of (anchor, text) pairs, higher = more related
PairScorer = Callable[[list[tuple[str, str]]], np.ndarray]


@dataclass
class Mined:
    """The result: one row per input pair that got ``num_negatives`` negatives, and what happened."""

    rows: list[tuple[str, str, list[str]]] = field(default_factory=list)
    positive_scores: list[float] = field(default_factory=list)
    negative_scores: list[list[float]] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def _candidates(queries: np.ndarray, corpus: np.ndarray, k: int, faiss_index, chunk_start: int,
                cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the k nearest corpus rows for each query, (q, k), padded with -1 / -inf; read from
    ``cache`` when a finished run left them there."""
    target = None if cache is None else cache / f"chunk-{chunk_start:09d}.npz"
    if target is not None and target.is_file():
        saved = np.load(target)
        return saved["ids"], saved["scores"]
    found = (faiss_candidates(faiss_index, queries, k, corpus.shape[0]) if faiss_index is not None
             else scan_candidates(queries, corpus, k, query_chunk_size=256))
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float64)
    for row, hits in enumerate(search_candidates(queries, corpus, found, k, None)):  # exact float64 ranks
        ids[row, :len(hits)] = [h["corpus_id"] for h in hits]
        scores[row, :len(hits)] = [h["score"] for h in hits]
    if target is not None:
        partial = target.with_suffix(".partial.npz")
        np.savez(partial, ids=ids, scores=scores)
        os.replace(partial, target)
    return ids, scores


def mine_hard_negatives(anchors: Sequence[str], positives: Sequence[str], embed: Embedder,
                        selection: Selection | None = None, corpus: Sequence[str] | None = None,
                        cross_encoder: PairScorer | None = None, use_faiss: bool = False,
                        query_chunk_size: int = 1024, cache_dir: str | os.PathLike | None = None,
                        cache_tag: str = "", log: Callable[[str], None] = print) -> Mined:
    """Mine ``selection.num_negatives`` hard negatives for every (anchor, positive) pair (see the module
    docstring). ``cache_dir`` keeps the retrieval chunks (resume), under a key made of ``cache_tag`` (what
    identifies the embedding model), the texts and the candidate count; ``embed`` decides where embeddings
    live."""
    selection = selection or Selection()
    if len(anchors) != len(positives) or not anchors:
        raise SimCSEError(f"mining needs as many positives as anchors, and some: got {len(anchors)} anchors and "
                          f"{len(positives)} positives")
    if query_chunk_size < 1:
        raise SimCSEError(f"`query_chunk_size` must be positive, got {query_chunk_size}")
    started = time.perf_counter()
    queries = list(dict.fromkeys(anchors))
    texts = list(dict.fromkeys([*(corpus if corpus is not None else positives), *positives]))
    text_id = {text: i for i, text in enumerate(texts)}
    query_id = {text: i for i, text in enumerate(queries)}
    positive_ids: list[list[int]] = [[] for _ in queries]
    for anchor, positive in zip(anchors, positives):
        ids = positive_ids[query_id[anchor]]
        if text_id[positive] not in ids:
            ids.append(text_id[positive])
    max_positives = max(map(len, positive_ids))
    selection.check(max_positives)
    range_max = selection.resolved_range_max(max_positives, rescoring=cross_encoder is not None)
    k = range_max + max_positives + 1
    log(f"mining {selection.num_negatives} negative(s) for {len(anchors):,} pairs ({len(queries):,} distinct "
        f"anchors) among {len(texts):,} corpus texts; ranks {selection.range_min}..{range_max}")
    times = {}
    t = time.perf_counter()
    corpus_vectors = embed(texts, "corpus")
    times["embed_corpus_s"] = time.perf_counter() - t
    t = time.perf_counter()
    query_vectors = embed(queries, "anchors")
    times["embed_anchors_s"] = time.perf_counter() - t

    t = time.perf_counter()
    faiss_index = None
    if use_faiss:
        try:
            import faiss
        except ImportError:
            raise SimCSEError("`use_faiss` needs faiss: pip install faiss-cpu, or drop the flag (exact search)") \
                from None
        faiss_index = faiss.IndexFlatIP(corpus_vectors.shape[1])
        for start in range(0, len(texts), 65_536):  # unit rows already: inner product = cosine
            faiss_index.add(np.ascontiguousarray(corpus_vectors[start:start + 65_536], dtype=np.float32))
    cache = None
    if cache_dir is not None:
        key = repr((cache_tag, k, use_faiss, query_chunk_size, texts_digest(texts), texts_digest(queries)))
        cache = Path(cache_dir) / f"candidates-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        cache.mkdir(parents=True, exist_ok=True)
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores = np.empty((len(queries), k), dtype=np.float64)
    for start in range(0, len(queries), query_chunk_size):
        stop = start + query_chunk_size
        ids[start:stop], scores[start:stop] = _candidates(np.asarray(query_vectors[start:stop]), corpus_vectors,
                                                          k, faiss_index, start, cache)
    positive_scores = [exact_scores(corpus_vectors[np.asarray(p)], query_vectors[q]) for q, p in
                       enumerate(positive_ids)]
    times["retrieve_s"] = time.perf_counter() - t

    if cross_encoder is not None:
        t = time.perf_counter()
        # one call per anchor's candidates, then one for every positive: the peer's batches, so its scores
        for q, query in enumerate(queries):
            valid = ids[q] >= 0
            scores[q, valid] = cross_encoder([(query, texts[i]) for i in ids[q][valid]])
        rescored = np.asarray(cross_encoder([(query, texts[i]) for query, p in zip(queries, positive_ids) for i in p]),
                              dtype=np.float64)
        bounds = np.cumsum([0, *map(len, positive_ids)])
        positive_scores = [rescored[bounds[q]:bounds[q + 1]] for q in range(len(queries))]
        times["cross_encoder_s"] = time.perf_counter() - t

    t = time.perf_counter()
    counts, rng = Counts(), np.random.default_rng(selection.seed)
    chosen = [select(ids[q], scores[q], text_id.get(query, -1), np.asarray(positive_ids[q]), positive_scores[q],
                     selection, range_max, counts, rng) for q, query in enumerate(queries)]
    mined, short = Mined(), 0
    for anchor, positive in zip(anchors, positives):
        q = query_id[anchor]
        negative_ids, negative_scores = chosen[q]
        if len(negative_ids) < selection.num_negatives:
            short += 1
            continue
        mined.rows.append((anchor, positive, [texts[i] for i in negative_ids]))
        where = positive_ids[q].index(text_id[positive])
        mined.positive_scores.append(float(positive_scores[q][where]))
        mined.negative_scores.append([float(s) for s in negative_scores])
    times["select_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - started
    mined.report = {
        "pairs": len(anchors), "distinct_anchors": len(queries), "corpus_texts": len(texts),
        "rows_written": len(mined.rows), "rows_dropped_too_few_negatives": short,
        "candidates_per_anchor": k, "range_max": range_max, "candidates": counts.candidates,
        "dropped": counts.dropped, "skipped_by_range_min": counts.skipped_by_range_min,
        "negatives_kept": counts.kept, "selection": asdict(selection),
        "cross_encoder": cross_encoder is not None, "faiss": use_faiss,
        "mean_positive_score": float(np.mean(mined.positive_scores)) if mined.rows else None,
        "mean_negative_score": float(np.mean(mined.negative_scores)) if mined.rows else None,
        "seconds": {name: round(value, 3) for name, value in times.items()},
    }
    return mined
