"""The metric definitions by hand, then RetrievalEvaluator against its peers on the same embeddings: every
metric equals sentence-transformers' InformationRetrievalEvaluator (binary qrels), nDCG@10 and MAP@100
equal trec_eval's ``ndcg_cut_10`` and ``map_cut_100`` through pytrec_eval (graded qrels); the same with
identical ids ignored (BEIR's ``ignore_identical_ids``); then the three places where the definitions
differ, each with its exact difference: graded gains, MAP's normaliser beyond 100 relevant documents, and
ties."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import require_module, write_beir_folder
from simcse.errors import SimCSEError
from simcse.evaluation.retrieval import RetrievalEvaluator, mean_metrics, query_metrics
from simcse.search import exact_scores

HAS_FAISS = importlib.util.find_spec("faiss") is not None

N_DOCS, N_QUERIES, DIM = 200, 30, 32
# our metric -> (sentence-transformers' result group, k)
PEER_KEYS = {"ndcg@10": ("ndcg@k", 10), "mrr@10": ("mrr@k", 10), "map@100": ("map@k", 100),
             "recall@1": ("recall@k", 1), "recall@10": ("recall@k", 10), "recall@100": ("recall@k", 100),
             "accuracy@1": ("accuracy@k", 1), "accuracy@10": ("accuracy@k", 10)}


def write_beir(root: Path, corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]],
               ignore_identical_ids: bool | None = None) -> Path:
    """A BEIR folder; with ``ignore_identical_ids`` not None, a dataset.json declaring it."""
    return write_beir_folder(root, corpus, queries, qrels, ignore_identical_ids=ignore_identical_ids)


class FixedEncoder:
    """Both ours and the peer's model: every text maps to a fixed vector."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def encode(self, texts, **_) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.table[text] for text in texts]).astype(np.float32))

    encode_query = encode_document = encode  # sentence-transformers' evaluator calls these


def peer_evaluator(queries, corpus, qrels, tmp_path: Path | None = None):
    """sentence-transformers' evaluator with our cutoffs, cosine, relevance >= 1 as its binary relevant set."""
    ir = require_module("sentence_transformers.sentence_transformer.evaluation")
    util = require_module("sentence_transformers.util")
    relevant = {q: {d for d, rel in judged.items() if rel >= 1} for q, judged in qrels.items()}
    return ir.InformationRetrievalEvaluator(
        queries, corpus, relevant, corpus_chunk_size=64, mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 10],
        precision_recall_at_k=[1, 10, 100], map_at_k=[100], score_functions={"cosine": util.cos_sim},
        write_csv=False, write_predictions=tmp_path is not None)


def peer_metrics(queries, corpus, qrels, table, tmp_path: Path) -> tuple[dict[str, float], dict[str, list[str]]]:
    """The peer's metrics under our names, and its rankings (from its predictions file)."""
    peer = peer_evaluator(queries, corpus, qrels, tmp_path)
    scores = peer.compute_all_metrics(FixedEncoder(table), output_path=str(tmp_path))["cosine"]
    lines = (tmp_path / "Information-Retrieval_evaluation_predictions_cosine.jsonl").read_text().splitlines()
    run = {row["query_id"]: [hit["corpus_id"] for hit in row["results"]] for row in map(json.loads, lines)}
    return {ours: float(scores[group][k]) for ours, (group, k) in PEER_KEYS.items()}, run


def trec(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    pytrec_eval = require_module("pytrec_eval")
    return pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map_cut.100"}).evaluate(run)


# ------------------------------------------------------------------ metrics by hand


def test_metric_known_answers_with_graded_gains():
    # relevant: d1 (2), d2 (1), d4 (1, never retrieved); d3 judged 0; d5 unjudged
    ranked, judged = ["d3", "d1", "d5", "d2"], {"d1": 2, "d2": 1, "d4": 1, "d3": 0}
    got = query_metrics(ranked, judged)
    dcg = 0 / math.log2(2) + 2 / math.log2(3) + 0 / math.log2(4) + 1 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert got["ndcg@10"] == pytest.approx(dcg / ideal, abs=1e-12)
    assert got["ndcg@10"] == pytest.approx(0.5405858, abs=1e-6)  # (1.2618595 + 0.4306766) / 3.1309298
    assert got["mrr@10"] == 0.5
    assert got["map@100"] == pytest.approx((1 / 2 + 2 / 4) / 3, abs=1e-12)
    assert (got["recall@1"], got["recall@10"], got["recall@100"]) == (0.0, pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert (got["accuracy@1"], got["accuracy@10"]) == (0.0, 1.0)


def test_metric_known_answers_at_the_cutoffs():
    late = [f"x{i}" for i in range(10)] + ["r"]  # the only relevant document at rank 11
    got = query_metrics(late, {"r": 1})
    assert got == {"ndcg@10": 0.0, "mrr@10": 0.0, "map@100": pytest.approx(1 / 11), "recall@1": 0.0, "recall@10": 0.0,
                   "recall@100": 1.0, "accuracy@1": 0.0, "accuracy@10": 0.0}
    beyond = [f"x{i}" for i in range(100)] + ["r"]  # rank 101: outside every cutoff
    assert all(value == 0.0 for value in query_metrics(beyond, {"r": 3}).values())
    top = query_metrics(["a", "b"], {"a": 3, "b": 0})
    assert all(value == 1.0 for value in top.values())
    # MAP@100 divides by min(100, R): 150 relevant documents, all of the top 100 relevant -> 1.0
    many = [f"r{i}" for i in range(150)]
    assert query_metrics(many, dict.fromkeys(many, 1))["map@100"] == pytest.approx(1.0)
    assert query_metrics(many, dict.fromkeys(many, 1))["recall@100"] == pytest.approx(100 / 150)


def test_mean_is_over_scored_queries_only():
    run = {"a": ["d1"], "b": ["d9", "d2"], "z": ["d1"]}
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}, "z": {"d1": 0}}  # z has no relevant document: not scored
    got = mean_metrics(run, qrels)
    assert got["mrr@10"] == pytest.approx((1 + 1 / 2) / 2)
    assert got["accuracy@1"] == pytest.approx(0.5)
    assert mean_metrics({}, {"a": {"d1": 1}})["recall@100"] == 0.0  # a scored query without a ranking scores 0
    with pytest.raises(SimCSEError, match="no query has a relevant document"):
        mean_metrics(run, {"z": {"d1": 0}})


# ------------------------------------------------------------------ against the peers


@pytest.fixture(scope="module")
def collection():
    """200 documents and 30 judged queries with fixed random vectors (plus 3 unjudged queries and 2 with only
    judged non-relevant documents); 2-8 relevant documents a query, graded 1-3, and a few judged 0."""
    rng = np.random.default_rng(7)
    corpus = {f"doc{i:03d}": f"document {i}" for i in rng.permutation(N_DOCS)}  # file order != id order
    doc_ids = list(corpus)
    queries = {f"q{i}": f"query {i}" for i in range(N_QUERIES + 5)}
    qrels: dict[str, dict[str, int]] = {}
    for i in range(N_QUERIES + 2):
        chosen = rng.choice(N_DOCS, int(rng.integers(4, 12)), replace=False)
        n_relevant = int(rng.integers(2, 9)) if i < N_QUERIES else 0
        qrels[f"q{i}"] = {doc_ids[j]: (int(rng.integers(1, 4)) if n < n_relevant else 0) for n, j in enumerate(chosen)}
    table = {text: rng.standard_normal(DIM) for text in (*corpus.values(), *queries.values())}
    for i in range(N_QUERIES):  # make the relevant documents likelier to rank high, so metrics are not ~0
        for doc, rel in qrels[f"q{i}"].items():
            if rel and rng.random() < 0.7:
                table[corpus[doc]] = table[queries[f"q{i}"]] + rng.standard_normal(DIM) * rng.uniform(0.5, 3)
    return corpus, queries, qrels, table


def run_ours(root: Path, table, **kwargs) -> RetrievalEvaluator:
    evaluator = RetrievalEvaluator(root, name="parity", **kwargs)
    evaluator.last_metrics = evaluator(FixedEncoder(table))
    return evaluator


def test_every_metric_equals_sentence_transformers_on_binary_qrels(collection, tmp_path):
    corpus, queries, graded, table = collection
    binary = {q: {d: int(rel >= 1) for d, rel in judged.items()} for q, judged in graded.items()}
    ours = run_ours(write_beir(tmp_path / "binary", corpus, queries, binary), table, corpus_chunk_size=50)
    peer, peer_run = peer_metrics(queries, corpus, binary, table, tmp_path)
    assert ours.last_run == {q: ranked[:100] for q, ranked in peer_run.items()}  # 30 queries, same rankings
    assert len(ours.last_run) == N_QUERIES and ours.data.unjudged_queries == 5
    for metric, value in peer.items():
        assert ours.last_metrics[f"parity_{metric}"] == pytest.approx(value, abs=1e-6), metric
    assert 0.2 < peer["ndcg@10"] < 0.9 and 0 < peer["recall@1"] < peer["recall@10"] < peer["recall@100"] < 1


def test_ndcg_and_map_equal_trec_eval_on_graded_qrels(collection, tmp_path):
    corpus, queries, graded, table = collection
    ours = run_ours(write_beir(tmp_path / "graded", corpus, queries, graded), table)
    scored = {q: graded[q] for q in ours.query_ids}
    run = {q: dict(zip(ours.last_run[q], ours.last_scores[q])) for q in ours.query_ids}
    assert all(len(set(scores)) == len(scores) for scores in ours.last_scores.values())  # no ties: one order
    theirs = trec(scored, run)
    assert set(theirs) == set(scored) and any(max(j.values()) > 1 for j in scored.values())
    for q in scored:
        mine = query_metrics(ours.last_run[q], scored[q])
        assert mine["ndcg@10"] == pytest.approx(theirs[q]["ndcg_cut_10"], abs=1e-9), q
        assert mine["map@100"] == pytest.approx(theirs[q]["map_cut_100"], abs=1e-9), q  # R <= 100: same normaliser
    for ours_key, trec_key in (("ndcg@10", "ndcg_cut_10"), ("map@100", "map_cut_100")):
        mean = sum(per_query[trec_key] for per_query in theirs.values()) / len(theirs)
        assert ours.last_metrics[f"parity_{ours_key}"] == pytest.approx(mean, abs=1e-6)


def brute_force(corpus: dict[str, str], table, query: str, exclude: str, k: int = 100) -> dict[str, float]:
    """The top ``k`` of every document but ``exclude``: exact float64 cosines, score descending then file order."""
    ids = [doc for doc in corpus if doc != exclude]
    scores = exact_scores(np.stack([table[corpus[d]] for d in ids]).astype(np.float32),
                          np.asarray(table[query], dtype=np.float32))
    return {ids[i]: float(scores[i]) for i in sorted(range(len(ids)), key=lambda i: (-scores[i], i))[:k]}


def test_identical_ids_ignored_equal_trec_eval_and_sentence_transformers(collection, tmp_path):
    """A proxy-like folder: every query's text is also a document under the query's id (and q1's text a second
    time as 'twin', which must stay). With the rule on, ours equals pytrec_eval on a brute-force run that
    excludes each query's own id (graded qrels), and sentence-transformers' evaluator (binary qrels) run
    query by query on the corpus without that query's own document. sentence-transformers 6.3's
    InformationRetrievalEvaluator has no ignore_identical_ids option (its search loop notes that it does not
    skip ``corpus_id == query_id`` on purpose), hence one peer run per query."""
    base, queries, graded, table = collection
    corpus = base | {q: text for q, text in queries.items()} | {"twin": queries["q1"]}
    ours = run_ours(write_beir(tmp_path / "graded", corpus, queries, graded, True), table, corpus_chunk_size=50)
    assert ours.ignore_identical_ids and len(ours.last_run) == N_QUERIES
    expected = {q: brute_force(corpus, table, queries[q], exclude=q) for q in ours.query_ids}
    assert ours.last_run == {q: list(run) for q, run in expected.items()}  # 100 hits each, own id never among them
    assert ours.last_run["q1"][0] == "twin" and all(q not in ours.last_run[q] for q in ours.query_ids)
    if HAS_FAISS:
        assert run_ours(tmp_path / "graded", table, search="faiss").last_run == ours.last_run
    theirs = trec({q: graded[q] for q in ours.query_ids}, expected)
    for ours_key, trec_key in (("ndcg@10", "ndcg_cut_10"), ("map@100", "map_cut_100")):
        for q in ours.query_ids:
            assert query_metrics(ours.last_run[q], graded[q])[ours_key] == pytest.approx(theirs[q][trec_key], abs=1e-9)
        mean = sum(per_query[trec_key] for per_query in theirs.values()) / len(theirs)
        assert ours.last_metrics[f"parity_{ours_key}"] == pytest.approx(mean, abs=1e-6)
    off = run_ours(tmp_path / "graded", table, ignore_identical_ids=False)
    assert all(off.last_run[q][0] in (q, "twin") for q in off.query_ids)  # each query finds itself first
    assert off.last_metrics["parity_ndcg@10"] < ours.last_metrics["parity_ndcg@10"] - 0.05

    binary = {q: {d: int(rel >= 1) for d, rel in judged.items()} for q, judged in graded.items()}
    ours = run_ours(write_beir(tmp_path / "binary", corpus, queries, binary, True), table)
    totals = dict.fromkeys(PEER_KEYS, 0.0)
    for q in ours.query_ids:
        peer = peer_evaluator({q: queries[q]}, {d: t for d, t in corpus.items() if d != q}, {q: binary[q]})
        scores = peer.compute_all_metrics(FixedEncoder(table))["cosine"]
        for metric, (group, k) in PEER_KEYS.items():
            totals[metric] += float(scores[group][k]) / len(ours.query_ids)
    for metric, value in totals.items():
        assert ours.last_metrics[f"parity_{metric}"] == pytest.approx(value, abs=1e-6), metric


def test_identical_ids_refill_to_100_under_ties(tmp_path):
    """103 documents of one text (all tie), the query's own document 51st in the file: with the rule on the
    ranking is the first 100 others in file order (the search's tie rule), so d099, 102nd in the file and
    relevant, is rank 100; with it off, d099 is rank 101 and scores nothing."""
    ids = [f"d{i:03d}" for i in range(50)] + ["q"] + [f"d{i:03d}" for i in range(50, 102)]
    root = write_beir(tmp_path / "tie", dict.fromkeys(ids, "same"), {"q": "same"}, {"q": {"d099": 1}})
    for rule, chunk, search in ((True, 7, "exact"), (True, 50_000, "exact"), (False, 50_000, "exact"),
                                *([(True, 50_000, "faiss")] if HAS_FAISS else [])):
        ours = run_ours(root, {"same": np.ones(3)}, corpus_chunk_size=chunk, search=search, ignore_identical_ids=rule)
        assert ours.last_run["q"] == [i for i in ids if not (rule and i == "q")][:100]
        recall, average_precision = ours.last_metrics["parity_recall@100"], ours.last_metrics["parity_map@100"]
        assert (recall, average_precision) == ((1.0, pytest.approx(1 / 100)) if rule else (0.0, 0.0))


# ------------------------------------------------------------------ where the definitions differ


def test_graded_gains_differ_from_sentence_transformers_binary_ndcg(tmp_path):
    """Relevances 1 then 2 at ranks 1 and 2: sentence-transformers sees two relevant documents in ideal
    order (nDCG 1); with linear graded gains the ideal order is 2 then 1."""
    corpus, queries = {"x": "x", "y": "y", "z": "z"}, {"q": "q"}
    qrels = {"q": {"x": 1, "y": 2}}
    table = {"q": np.array([1.0, 0.0]), "x": np.array([1.0, 0.1]), "y": np.array([1.0, 0.5]),
             "z": np.array([0.0, 1.0])}
    ours = run_ours(write_beir(tmp_path / "g", corpus, queries, qrels), table)
    assert ours.last_run == {"q": ["x", "y", "z"]}
    graded = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ours.last_metrics["parity_ndcg@10"] == pytest.approx(graded, abs=1e-12)
    peer, _ = peer_metrics(queries, corpus, qrels, table, tmp_path)
    assert peer["ndcg@10"] == pytest.approx(1.0, abs=1e-12)
    assert peer["ndcg@10"] - ours.last_metrics["parity_ndcg@10"] == pytest.approx(1 - graded, abs=1e-12)
    run = {"q": dict(zip(ours.last_run["q"], ours.last_scores["q"]))}
    assert trec(qrels, run)["q"]["ndcg_cut_10"] == pytest.approx(graded, abs=1e-9)  # we follow trec_eval here


def test_map_normaliser_differs_from_trec_eval_beyond_100_relevant(tmp_path):
    """150 relevant documents ranked 1-150: MAP@100 = 100 precisions of 1 / min(100, 150) = 1 here and in
    sentence-transformers; trec_eval's map_cut_100 divides by 150 and gives 2/3."""
    rng = np.random.default_rng(3)
    direction = np.eye(16)[0]
    corpus = {f"d{i:03d}": f"doc {i}" for i in range(160)}
    table = {f"doc {i}": direction * (3 if i < 150 else -3) + rng.standard_normal(16) * 0.1 for i in range(160)}
    table["q"] = direction
    qrels = {"q": {f"d{i:03d}": 1 for i in range(150)}}
    ours = run_ours(write_beir(tmp_path / "m", corpus, {"q": "q"}, qrels), table)
    assert set(ours.last_run["q"]) <= set(qrels["q"]) and len(ours.last_run["q"]) == 100
    assert ours.last_metrics["parity_map@100"] == pytest.approx(1.0, abs=1e-12)
    peer, _ = peer_metrics({"q": "q"}, corpus, qrels, table, tmp_path)
    assert peer["map@100"] == pytest.approx(1.0, abs=1e-12)
    run = {"q": dict(zip(ours.last_run["q"], ours.last_scores["q"]))}
    trec_map = trec(qrels, run)["q"]["map_cut_100"]
    assert trec_map == pytest.approx(100 / 150, abs=1e-9)
    assert ours.last_metrics["parity_map@100"] * min(100, 150) / 150 == pytest.approx(trec_map, abs=1e-9)


def test_tied_scores_are_ordered_differently_by_each_peer(tmp_path):
    """Three documents with the same embedding, in file order b, c, a; c is relevant. We keep file order
    (c at rank 2), sentence-transformers sorts ties by id ascending (a, b, c: rank 3), trec_eval by docno
    descending (c, b, a: rank 1)."""
    corpus, queries, qrels = {"b": "text b", "c": "text c", "a": "text a"}, {"q": "q"}, {"q": {"c": 1}}
    table = {"text b": np.ones(4), "text c": np.ones(4), "text a": np.ones(4), "q": np.array([1.0, 0, 0, 0])}
    ours = run_ours(write_beir(tmp_path / "t", corpus, queries, qrels), table)
    assert ours.last_run == {"q": ["b", "c", "a"]} and len(set(ours.last_scores["q"])) == 1
    assert ours.last_metrics["parity_ndcg@10"] == pytest.approx(1 / math.log2(3), abs=1e-12)
    assert ours.last_metrics["parity_mrr@10"] == pytest.approx(1 / 2, abs=1e-12)
    peer, peer_run = peer_metrics(queries, corpus, qrels, table, tmp_path)
    assert peer_run == {"q": ["a", "b", "c"]}
    assert peer["ndcg@10"] == pytest.approx(1 / math.log2(4), abs=1e-12) and peer["mrr@10"] == pytest.approx(1 / 3)
    run = {"q": dict(zip(ours.last_run["q"], ours.last_scores["q"]))}
    assert trec(qrels, run)["q"]["ndcg_cut_10"] == pytest.approx(1.0, abs=1e-12)
