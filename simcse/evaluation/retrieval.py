"""Retrieval on a BEIR-layout folder (:mod:`simcse.evaluation.beir`): rank the corpus for each query by
cosine similarity and report nDCG@10, MRR@10, MAP@100, Recall@{1,10,100} and Accuracy@{1,10}.

Ranking: exact cosine search with :mod:`simcse.search` (``search="exact"``: a chunked scan; ``"faiss"``:
candidates from a ``faiss.IndexFlatIP``; both re-score candidates in float64 and order them by score
descending, then corpus position ascending, so they give the same ranking), top 100 per query (the
largest cutoff). Documents with the same text share one embedding, so they tie and keep file order.

Identical ids: when the rule is on (the folder's ``dataset.json`` declares ``ignore_identical_ids``, see
:mod:`simcse.evaluation.beir`, or the constructor overrides it), a document whose id equals the query's id
never appears in that query's ranking. This follows BEIR's ``ignore_identical_ids=True``
(``beir/retrieval/evaluation.py``) and mteb's ``AbsTaskRetrieval.ignore_identical_ids`` class attribute
(set on QuoraRetrieval, ArguAna...), which drop that document from the retrieved results before scoring.
The search is asked for 101 hits and the query's own document, if among them, is dropped, the rest cut at
100: since the ranking is a total order (score descending, then corpus position), the exact top 101 less
one document is the exact top 100 of the corpus without it, ties included, so every query still gets up to
100 hits (BEIR and mteb drop the document from their own top k, 1000 by default, without refilling,
which leaves every cutoff up to 100 the same). sentence-transformers' evaluator has no such option; with
the rule off (the default without ``dataset.json``, as mteb's; BEIR's ``evaluate`` defaults to on) a
query's own id stays in its ranking, as there.

Metrics, per scored query (at least one judgement >= 1), then the mean over scored queries; a document is
relevant when its graded relevance is >= 1, unjudged documents count as 0; rank r starts at 1:

* nDCG@10 = DCG@10 / IDCG@10 with DCG@10 = sum_{r<=10} rel(d_r) / log2(r + 1): the gain is the graded
  relevance itself (linear), and IDCG@10 is the DCG of all the query's judged relevances sorted
  descending: trec_eval's ``ndcg_cut_10`` (usnistgov/trec_eval, ``m_ndcg_cut.c``; Jarvelin and Kekalainen,
  2002). With binary qrels it equals sentence-transformers' ``ndcg@10``, which sees relevance as binary.
* MRR@10 = 1 / rank of the first relevant document within the top 10, else 0.
* MAP@100 = (sum of precision@r over the ranks r <= 100 holding a relevant document) / min(100, R), R =
  the number of relevant documents: sentence-transformers' normaliser (UKPLab/sentence-transformers,
  ``sentence_transformers/evaluation/InformationRetrievalEvaluator.py``, since v6
  ``sentence_transformers/sentence_transformer/evaluation/information_retrieval.py``), so that every metric
  here equals that evaluator's. trec_eval's ``map_cut_100`` (``m_map_cut.c``) divides by R instead; the two
  differ only for queries with more than 100 relevant documents (ours is then larger by the factor R / 100).
* Recall@k = relevant documents in the top k / R; Accuracy@k = 1 if any relevant document is in the top k.

The rankings match the peers' except on exact score ties, where the orders differ: ours puts the earlier
document of corpus.jsonl first; sentence-transformers the smaller document id (as a string); trec_eval
the larger document id (it sorts tied scores by docno descending).

Memory: the distinct document texts are encoded in chunks of ``corpus_chunk_size`` into a float32
``numpy.memmap`` in a temporary directory (removed after the call, also on error), the encoder's cache is
emptied (``retain(())``) after each chunk, and the search scans the memmap chunk by chunk; so memory holds
one chunk of embeddings, the query embeddings and the id lists, not the corpus's embeddings (with
``search="faiss"`` the faiss index holds a copy of them).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from prettytable import PrettyTable

from simcse.errors import SimCSEError
from simcse.evaluation.base import Evaluator
from simcse.evaluation.beir import BeirData, read_beir_folder
from simcse.search import as_matrix, faiss_candidates, search_candidates, semantic_search

TOP_K = 100  # the largest cutoff: every ranking is cut here
METRICS = ("ndcg@10", "mrr@10", "map@100", "recall@1", "recall@10", "recall@100", "accuracy@1", "accuracy@10")
SEARCHES = ("exact", "faiss")
_TITLES = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "map@100": "MAP@100", "recall@1": "R@1", "recall@10": "R@10",
           "recall@100": "R@100", "accuracy@1": "Acc@1", "accuracy@10": "Acc@10"}


def dcg(gains: Iterable[float]) -> float:
    """sum_r gain_r / log2(r + 1), ranks from 1."""
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, 1))


def ndcg_at_k(ranked: Sequence[str], judgements: Mapping[str, int], k: int) -> float:
    """trec_eval's ``ndcg_cut_k``: linear graded gains, ideal from all judged relevances (0 if none >= 1)."""
    ideal = dcg(sorted(judgements.values(), reverse=True)[:k])
    return dcg(judgements.get(doc, 0) for doc in ranked[:k]) / ideal if ideal > 0 else 0.0


def average_precision_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Sum of precision@r at the relevant ranks r <= k, divided by min(k, |relevant|) (sentence-transformers'
    MAP@k; trec_eval's ``map_cut_k`` divides by |relevant|)."""
    hits, total = 0, 0.0
    for rank, doc in enumerate(ranked[:k], 1):
        if doc in relevant:
            hits += 1
            total += hits / rank
    return total / min(k, len(relevant)) if relevant else 0.0


def query_metrics(ranked: Sequence[str], judgements: Mapping[str, int]) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one query: ``ranked`` its document ids best first, ``judgements``
    its qrels (document id -> graded relevance; relevant when >= 1)."""
    relevant = {doc for doc, rel in judgements.items() if rel >= 1}
    first = next((rank for rank, doc in enumerate(ranked[:10], 1) if doc in relevant), None)

    def found(k: int) -> int:
        return sum(doc in relevant for doc in ranked[:k])

    n = max(len(relevant), 1)
    return {
        "ndcg@10": ndcg_at_k(ranked, judgements, 10),
        "mrr@10": 1.0 / first if first is not None else 0.0,
        "map@100": average_precision_at_k(ranked, relevant, 100),
        "recall@1": found(1) / n,
        "recall@10": found(10) / n,
        "recall@100": found(100) / n,
        "accuracy@1": float(found(1) > 0),
        "accuracy@10": float(found(10) > 0),
    }


def mean_metrics(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """The mean of :func:`query_metrics` over the scored queries of ``qrels`` (a judgement >= 1); a scored
    query missing from ``run`` counts with an empty ranking."""
    scored = [qid for qid, judged in qrels.items() if any(rel >= 1 for rel in judged.values())]
    if not scored:
        raise SimCSEError("no query has a relevant document (a judgement >= 1), so nothing can be scored")
    totals = dict.fromkeys(METRICS, 0.0)
    for qid in scored:
        for key, value in query_metrics(run.get(qid, ()), qrels[qid]).items():
            totals[key] += value
    return {key: total / len(scored) for key, total in totals.items()}


def default_name(folder: str | os.PathLike) -> str:
    """The folder's name in lower case with every run of characters outside [a-z0-9_] made one ``_``."""
    base = os.path.basename(os.path.abspath(os.fspath(folder)))
    return re.sub(r"[^a-z0-9_]+", "_", base.lower()).strip("_") or "retrieval"


def _distinct(texts: Iterable[str]) -> tuple[list[str], np.ndarray]:
    """The distinct texts in order of first appearance, and for each input the row of its text."""
    row_of: dict[str, int] = {}
    rows = [row_of.setdefault(text, len(row_of)) for text in texts]
    return list(row_of), np.asarray(rows, dtype=np.int64)


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise SimCSEError("search='faiss' needs faiss, which is not installed; pip install faiss-cpu, or use "
                          "search='exact' (the same rankings)") from None
    return faiss


def _release(encoder) -> None:
    retain = getattr(encoder, "retain", None)
    if callable(retain):
        retain(())


class RetrievalEvaluator(Evaluator):
    """Cosine retrieval on a BEIR folder; metrics as in the module docstring, keys ``<name>_<metric>``.

    folder, split: read at once with :func:`simcse.evaluation.beir.read_beir_folder` (a bad folder fails
    here, before any model loads). name: the key prefix (default: :func:`default_name` of the folder).
    query_prompt, document_prompt: prepended to every query / document text before encoding.
    corpus_chunk_size: texts encoded, and corpus rows scanned, at a time. search: "exact" or "faiss".
    ignore_identical_ids: None (default) follows the folder's ``dataset.json`` (off without it); True or
    False overrides it. When on, a document whose id equals the query id is left out of that query's
    ranking, as BEIR's ``ignore_identical_ids=True`` and mteb's task attribute ``ignore_identical_ids``
    (see the module docstring); the value in force is ``self.ignore_identical_ids``.

    After a call, ``last_run`` holds each scored query's ranked document ids (best first, at most 100),
    ``last_scores`` their cosine scores and ``last_summary`` the counts and the bare metrics (for
    :func:`retrieval_table`).
    """

    def __init__(self, folder: str | os.PathLike, name: str | None = None, split: str = "test",
                 query_prompt: str = "", document_prompt: str = "", corpus_chunk_size: int = 50_000,
                 search: str = "exact", ignore_identical_ids: bool | None = None):
        if ignore_identical_ids is not None and not isinstance(ignore_identical_ids, bool):
            raise SimCSEError(f"ignore_identical_ids must be None (the folder's dataset.json), True or False, got "
                              f"{ignore_identical_ids!r}")
        if search not in SEARCHES:
            raise SimCSEError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
        if isinstance(corpus_chunk_size, bool) or not isinstance(corpus_chunk_size, int) or corpus_chunk_size < 1:
            raise SimCSEError(f"corpus_chunk_size must be a positive integer, got {corpus_chunk_size!r}")
        if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name)):
            raise SimCSEError(f"retrieval name {name!r} must be letters, digits, '_', '.' or '-'")
        for what, prompt in (("query_prompt", query_prompt), ("document_prompt", document_prompt)):
            if not isinstance(prompt, str):
                raise SimCSEError(f"{what} must be a string, got {type(prompt).__name__}")
        self._faiss = _import_faiss() if search == "faiss" else None
        self.data: BeirData = read_beir_folder(folder, split)
        self.folder, self.split, self.search = os.fspath(folder), split, search
        self.name = name if name is not None else default_name(folder)
        self.ignore_identical_ids = self.data.ignore_identical_ids if ignore_identical_ids is None \
            else ignore_identical_ids
        self.primary_metric = f"{self.name}_ndcg@10"
        self.query_prompt, self.document_prompt = query_prompt, document_prompt
        self.corpus_chunk_size = corpus_chunk_size
        self.doc_ids = list(self.data.corpus)
        self._doc_texts, doc_rows = _distinct(self.data.corpus.values())
        self._doc_order = np.argsort(doc_rows, kind="stable")  # documents grouped by their distinct text
        self._doc_order_rows = doc_rows[self._doc_order]
        # the corpus row of each distinct document text (its first document): a query whose text is a
        # document's, under the same prompt, takes that row instead of being encoded again
        self._doc_row_of_text = {text: int(row) for text, row in
                                 zip(self._doc_texts, self._doc_order[np.searchsorted(self._doc_order_rows,
                                                                                      np.arange(len(self._doc_texts)))])}
        self.query_ids = self.data.scored_queries()
        self._query_texts, self._query_rows = _distinct(self.data.queries[qid] for qid in self.query_ids)
        self.last_run: dict[str, list[str]] | None = None
        self.last_scores: dict[str, list[float]] | None = None
        self.last_summary: dict[str, float] | None = None

    def metric_names(self) -> list[str]:
        return [f"{self.name}_{metric}" for metric in METRICS]

    def _vectors(self, encoder, texts: list[str], width: int | None) -> np.ndarray:
        """``encoder.encode(texts)`` as a float32 (len(texts), width) array, then the encoder's cache dropped."""
        out = encoder.encode(texts)
        _release(encoder)
        if isinstance(out, torch.Tensor):
            out = out.detach().to("cpu", torch.float32).numpy()
        out = np.asarray(out, dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts) or (width is not None and out.shape[1] != width):
            want = f"({len(texts)}, {width if width is not None else 'H'})"
            raise SimCSEError(f"the encoder returned embeddings of shape {tuple(out.shape)} for {len(texts)} texts; "
                              f"expected {want}, one row per text of one width")
        return out

    def _encode_corpus(self, encoder, directory: str) -> np.memmap:
        """Every document's embedding in a memmap under ``directory``; each distinct text encoded once."""
        corpus = None
        size = self.corpus_chunk_size
        for start in range(0, len(self._doc_texts), size):
            texts = [self.document_prompt + text for text in self._doc_texts[start:start + size]]
            vectors = self._vectors(encoder, texts, None if corpus is None else corpus.shape[1])
            if corpus is None:
                corpus = np.memmap(os.path.join(directory, "corpus.f32"), dtype=np.float32, mode="w+",
                                   shape=(len(self.doc_ids), vectors.shape[1]))
            lo, hi = np.searchsorted(self._doc_order_rows, [start, start + len(texts)])
            corpus[self._doc_order[lo:hi]] = vectors[self._doc_order_rows[lo:hi] - start]
        assert corpus is not None  # the reader guarantees a document
        corpus.flush()
        return corpus

    def _encode_queries(self, encoder, corpus: np.ndarray) -> np.ndarray:
        """Each distinct query text's embedding; a query text that is also a document text (same prompt)
        reuses the document's row, so no text is encoded twice."""
        size = self.corpus_chunk_size
        out = np.empty((len(self._query_texts), corpus.shape[1]), dtype=np.float32)
        shared = {} if self.query_prompt != self.document_prompt else {
            i: self._doc_row_of_text[text] for i, text in enumerate(self._query_texts) if text in self._doc_row_of_text}
        if shared:
            rows = np.fromiter(shared, dtype=np.int64, count=len(shared))
            out[rows] = corpus[np.fromiter(shared.values(), dtype=np.int64, count=len(shared))]
        todo = [i for i in range(len(self._query_texts)) if i not in shared]
        for start in range(0, len(todo), size):
            rows = todo[start:start + size]
            texts = [self.query_prompt + self._query_texts[i] for i in rows]
            out[rows] = self._vectors(encoder, texts, corpus.shape[1])
        return out

    def _rank(self, queries: np.ndarray, corpus: np.ndarray, top_k: int) -> list[list[dict]]:
        """The exact top ``top_k`` hits of every distinct query text (:mod:`simcse.search`'s tie rule)."""
        if self._faiss is None:
            return semantic_search(queries, corpus, top_k=top_k, corpus_chunk_size=self.corpus_chunk_size)
        queries, corpus = as_matrix(queries, "query embeddings"), as_matrix(corpus, "corpus embeddings")
        index = self._faiss.IndexFlatIP(corpus.shape[1])
        for start in range(0, len(corpus), self.corpus_chunk_size):
            chunk = np.array(corpus[start:start + self.corpus_chunk_size], dtype=np.float32)
            chunk /= np.maximum(np.sqrt(np.einsum("ij,ij->i", chunk, chunk)), 1e-12)[:, None]
            index.add(chunk)
        candidates = faiss_candidates(index, queries, top_k, len(corpus))
        return search_candidates(queries, corpus, candidates, top_k, None)

    def __call__(self, encoder) -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="simcse-retrieval-") as directory:
            corpus = self._encode_corpus(encoder, directory)
            try:
                queries = self._encode_queries(encoder, corpus)
                # one hit more when a query's own document may have to go (module docstring)
                hits = self._rank(queries, corpus, TOP_K + 1 if self.ignore_identical_ids else TOP_K)
            finally:
                del corpus  # unmap before the directory goes
        run, scores = {}, {}
        for qid, row in zip(self.query_ids, self._query_rows):
            kept = [hit for hit in hits[row]
                    if not (self.ignore_identical_ids and self.doc_ids[hit["corpus_id"]] == qid)]
            run[qid] = [self.doc_ids[hit["corpus_id"]] for hit in kept[:TOP_K]]
            scores[qid] = [hit["score"] for hit in kept[:TOP_K]]
        metrics = mean_metrics(run, {qid: self.data.qrels[qid] for qid in self.query_ids})
        self.last_run, self.last_scores = run, scores
        self.last_summary = {"queries": len(self.query_ids), "documents": len(self.doc_ids),
                             "unjudged_queries": self.data.unjudged_queries, **metrics}
        return {f"{self.name}_{metric}": value for metric, value in metrics.items()}


def retrieval_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A table with one row per evaluator name: queries, documents and every metric x100 (2 decimals).
    ``results[name]`` holds bare metrics (``ndcg@10``, as ``RetrievalEvaluator.last_summary``) or keys
    ``<name>_<metric>`` (as returned by a call), and optionally ``queries`` and ``documents``."""
    table = PrettyTable()
    table.field_names = ["retrieval", "queries", "documents"] + [_TITLES[metric] for metric in METRICS]
    table.align["retrieval"] = "l"
    for name, values in results.items():
        row: list = [name] + [int(values[key]) if key in values else "-" for key in ("queries", "documents")]
        for metric in METRICS:
            value = values.get(metric, values.get(f"{name}_{metric}"))
            if value is None:
                raise SimCSEError(f"retrieval results for {name!r} have no {metric!r} (nor {name}_{metric})")
            row.append(f"{value * 100:.2f}")
        table.add_row(row)
    return table.get_string()
