"""RetrievalEvaluator against its peers on the same embeddings: every metric equals sentence-transformers'
InformationRetrievalEvaluator (binary qrels), nDCG@10 and MAP@100 equal trec_eval's ``ndcg_cut_10`` and
``map_cut_100`` through pytrec_eval (graded qrels); then the three places where the definitions differ,
each with its exact difference: graded gains, MAP's normaliser beyond 100 relevant documents, and ties."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from simcse.evaluation.retrieval import RetrievalEvaluator, query_metrics

N_DOCS, N_QUERIES, DIM = 200, 30, 32
# our metric -> (sentence-transformers' result group, k)
PEER_KEYS = {"ndcg@10": ("ndcg@k", 10), "mrr@10": ("mrr@k", 10), "map@100": ("map@k", 100),
             "recall@1": ("recall@k", 1), "recall@10": ("recall@k", 10), "recall@100": ("recall@k", 100),
             "accuracy@1": ("accuracy@k", 1), "accuracy@10": ("accuracy@k", 10)}


def write_beir(root: Path, corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> Path:
    root.mkdir(parents=True)
    (root / "qrels").mkdir()
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in corpus.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()))
    rows = [f"{q}\t{d}\t{rel}\n" for q, judged in qrels.items() for d, rel in judged.items()]
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))
    return root


class FixedEncoder:
    """Both ours and the peer's model: every text maps to a fixed vector."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def encode(self, texts, **_) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.table[text] for text in texts]).astype(np.float32))

    encode_query = encode_document = encode  # sentence-transformers' evaluator calls these


def peer_evaluator(queries, corpus, qrels, tmp_path: Path | None = None):
    """sentence-transformers' evaluator with our cutoffs, cosine, relevance >= 1 as its binary relevant set."""
    ir = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    util = pytest.importorskip("sentence_transformers.util")
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
    pytrec_eval = pytest.importorskip("pytrec_eval")
    return pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map_cut.100"}).evaluate(run)


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
