"""simcse.evaluation.beir and simcse.evaluation.retrieval: every reader error (dataset.json's included) names
its file and line, the evaluator's metrics match hand-computed answers, with a query's own document dropped
when the folder declares ignore_identical_ids (or the constructor overrides it), ties keep corpus order,
exact and faiss rank alike, each distinct text is encoded once with its prompt, the memmap's directory goes
away, and memory does not grow with the corpus. Every folder is written into tmp_path; no model is loaded
except the tiny random BERT. The metric functions' hand-computed answers are in test_retrieval_parity.py."""

from __future__ import annotations

import json
import math
import sys
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import require_module, write_beir_folder
from simcse.errors import SimCSEError
from simcse.evaluation.beir import read_beir_folder
from simcse.evaluation.retrieval import (
    METRICS,
    RetrievalEvaluator,
    default_name,
    retrieval_table,
)

HEADER = "query-id\tcorpus-id\tscore"

CORPUS = [{"_id": "d1", "title": "Title one", "text": "alpha"}, {"_id": "d2", "text": "beta"},
          {"_id": "d3", "title": "", "text": "gamma"}, {"_id": "d4", "title": "only title", "text": ""}]
QUERIES = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}, {"_id": "q3", "text": "third"}]
QRELS = ["q1\td1\t1", "q1\td2\t0", "q2\td3\t2"]


def write_beir(root: Path, corpus=CORPUS, queries=QUERIES, qrels=QRELS, split: str = "test", header: str = HEADER):
    """A BEIR folder; a list of dicts is written as JSON lines, a list of strings as raw lines."""
    return write_beir_folder(root, corpus, queries, qrels, split=split, header=header)


def hash_vectors(texts, dim: int) -> np.ndarray:
    """Deterministic pseudo-random float32 vectors from each text's CRC32 (no model, no RNG state)."""
    seeds = np.array([zlib.crc32(text.encode("utf-8")) for text in texts], dtype=np.float64)
    return np.sin(np.outer(seeds, np.arange(1, dim + 1) * 0.6180339887)).astype(np.float32)


class FakeEncoder:
    """Records every text it encodes and every retain(); vectors from ``table`` or else :func:`hash_vectors`."""

    def __init__(self, table: dict[str, np.ndarray] | None = None, dim: int = 8, fail_on_call: int | None = None,
                 on_encode=None):
        self.table, self.dim, self.fail_on_call, self.on_encode = table, dim, fail_on_call, on_encode
        self.calls: list[list[str]] = []
        self.retains = 0

    def encode(self, texts):
        self.calls.append(texts := list(texts))
        if self.on_encode is not None:
            self.on_encode()
        if self.fail_on_call == len(self.calls):
            raise RuntimeError("encoder failed")
        if self.table is not None:
            return torch.from_numpy(np.stack([self.table[text] for text in texts]).astype(np.float32))
        return torch.from_numpy(hash_vectors(texts, self.dim))

    def retain(self, sentences):
        assert list(sentences) == []
        self.retains += 1

    encoded = property(lambda self: [text for call in self.calls for text in call])


# ------------------------------------------------------------------ the reader


def test_reader_reads_a_valid_folder_with_bom_crlf_and_trailing_blank_lines(tmp_path):
    root = write_beir(tmp_path / "ok")
    raw = (root / "corpus.jsonl").read_text(encoding="utf-8").replace("\n", "\r\n")
    (root / "corpus.jsonl").write_bytes(b"\xef\xbb\xbf" + raw.encode("utf-8") + b"\r\n\n  \n")
    data = read_beir_folder(root)
    assert data.corpus == {"d1": "Title one alpha", "d2": "beta", "d3": "gamma", "d4": "only title"}
    assert data.queries == {"q1": "first", "q2": "second", "q3": "third"}
    assert data.qrels == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    assert data.unjudged_queries == 1 and data.scored_queries() == ["q1", "q2"] and not data.ignore_identical_ids
    # a query whose only judgements are 0 is not scored either
    only_zero = read_beir_folder(write_beir(tmp_path / "zero", qrels=["q1\td1\t0", "q2\td3\t1"]))
    assert only_zero.scored_queries() == ["q2"] and only_zero.unjudged_queries == 2


C, Q, R = "corpus.jsonl", "queries.jsonl", "qrels/test.tsv"
BAD_LINES = [  # (file, its lines, the line named, a fragment of the message)
    (C, ['{"_id": "d1", "text": "a"}', '{"_id": "d2", "text": }'], 2, "not valid JSON (Expecting value at column 23)"),
    (C, ['[1, 2]'], 1, "expected a JSON object"),
    (C, ['{"text": "a"}'], 1, "no '_id' field"),
    (C, ['{"_id": "d1", "title": "t"}'], 1, "no 'text' field"),
    (Q, ['{"_id": "q1"}'], 1, "no 'text' field"),
    (C, ['{"_id": 7, "text": "a"}'], 1, "'_id' must be a JSON string"),
    (C, ['{"_id": "d1", "title": null, "text": "a"}'], 1, "'title' must be a JSON string"),
    (Q, ['{"_id": "q1", "text": ["a"]}'], 1, "'text' must be a JSON string"),
    (C, ['{"_id": "d1", "text": "a"}', '{"_id": "d2", "text": "b"}', '{"_id": "d1", "text": "c"}'], 3,
     "duplicate _id 'd1' (first on line 1)"),
    (Q, ['{"_id": "q1", "text": "a"}', '{"_id": "q1", "text": "b"}'], 2, "duplicate _id 'q1'"),
    (C, ['{"_id": "d1", "text": "a"}', '{"_id": "d2", "title": " ", "text": ""}'], 2, "empty title and text"),
    (Q, ['{"_id": "q1", "text": "  "}'], 1, "empty text"),
    (C, ['{"_id": "d1", "text": "a"}', "", '{"_id": "d2", "text": "b"}'], 2, "blank line before the record on line 3"),
    (R, ["query-id\tdoc-id\tscore", "q1\td1\t1"], 1, "expected the header"),
    (R, [HEADER, "q1\td1\t1", "q1\td2"], 3, "2 tab-separated column(s), expected 3"),
    (R, [HEADER, "q1\td1\t1\textra"], 2, "4 tab-separated column(s)"),
    (R, [HEADER, "q1\td1\t1.5"], 2, "score '1.5' is not an integer"),
    (R, [HEADER, "q1\r\td1\t1"], 2, "a lone carriage return (\\r) in the line"),
    (R, [HEADER, "q1\td1\t-1"], 2, "score -1 is negative"),
    (R, [HEADER, "q1\td1\t1", "q9\td1\t1"], 3, "query id 'q9' is not in queries.jsonl"),
    (R, [HEADER, "q1\td9\t1"], 2, "document id 'd9' is not in corpus.jsonl"),
    (R, [HEADER, "q1\td1\t1", "q2\td1\t1", "q1\td1\t2"], 4, "already judged on line 2"),
    (Q, ['{"_id": "q1", "text": "a"}', b'{"_id": "q2", "text": "caf\xe9"}'], 2, "not UTF-8: byte 27 is 0xe9"),
]


@pytest.mark.parametrize("name, lines, line, fragment", BAD_LINES, ids=[f"{f}:{m}" for f, _, _, m in BAD_LINES])
def test_reader_errors_name_the_file_and_line(tmp_path, name, lines, line, fragment):
    root = write_beir(tmp_path / "bad", corpus=[{"_id": "d1", "text": "a"}, {"_id": "d2", "text": "b"}],
                      queries=[{"_id": "q1", "text": "a"}, {"_id": "q2", "text": "b"}], qrels=["q1\td1\t1"])
    (root / name).write_bytes(b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines))
    with pytest.raises(SimCSEError) as err:
        read_beir_folder(root)
    message = str(err.value)
    assert "\n" not in message
    assert f"{root / name} line {line}:" in message
    assert fragment in message


def test_reader_file_level_errors(tmp_path):
    with pytest.raises(SimCSEError, match="does not exist"):
        read_beir_folder(tmp_path / "nowhere")
    root = write_beir(tmp_path / "f", split="dev")
    write_beir(tmp_path / "f", split="train")
    with pytest.raises(SimCSEError) as err:
        read_beir_folder(root, split="test")
    assert str(root / "qrels" / "test.tsv") in str(err.value) and "dev, train" in str(err.value)
    assert read_beir_folder(root, split="dev").scored_queries() == ["q1", "q2"]
    for name in ("queries.jsonl", "corpus.jsonl"):  # corpus.jsonl is looked for first
        (root / name).unlink()
        with pytest.raises(SimCSEError, match=f"{root / name} is missing"):
            read_beir_folder(root, split="dev")


@pytest.mark.parametrize("name, content, fragment", [
    ("corpus.jsonl", "\n\n", "holds no documents"),
    ("queries.jsonl", "", "holds no queries"),
    ("qrels/test.tsv", "", "is empty"),
    ("qrels/test.tsv", f"{HEADER}\nq1\td1\t0\nq2\td2\t0\n", "no row has a score >= 1 (2 judgement(s), all 0)"),
    ("dataset.json", "", "invalid JSON (Expecting value at line 1 column 1)"),
    ("dataset.json", "{'ignore_identical_ids': true}", "invalid JSON"),
    ("dataset.json", "[true]", "expected a JSON object, got list"),
    ("dataset.json", "{}", "no 'ignore_identical_ids' key"),
    ("dataset.json", '{"ignore_identical_ids": true, "split": "test"}', "unknown key(s) 'split'"),
    ("dataset.json", '{"ignore_identical_ids": "true"}', 'must be a JSON bool (true or false, unquoted), got "true"'),
    ("dataset.json", '{"ignore_identical_ids": 1}', "must be a JSON bool"),
    ("dataset.json", '{"ignore_identical_ids": null}', "got null"),
    ("dataset.json", '{"ignore_identical_ids": true, "ignore_identical_ids": false}', "appears more than once"),
])
def test_reader_whole_file_errors_name_the_file(tmp_path, name, content, fragment):
    root = write_beir(tmp_path / "bad")
    (root / name).write_text(content, encoding="utf-8")
    with pytest.raises(SimCSEError) as err:
        read_beir_folder(root)
    assert str(root / name) in str(err.value) and fragment in str(err.value) and "\n" not in str(err.value)
    assert name != "dataset.json" or str(err.value).endswith('{"ignore_identical_ids": false}, or delete the file')


# ------------------------------------------------------------------ the evaluator


def test_evaluator_end_to_end_known_answer(tmp_path):
    """Hand-placed 2-D vectors give a known ranking; the keys, the mean and the unjudged query follow."""
    root = write_beir(tmp_path / "NF-Proxy v2")
    angle = {"Title one alpha": 0.0, "beta": 0.3, "gamma": 0.6, "only title": 0.9,
             "first": 0.25, "second": 0.0, "third": 2.0}
    table = {text: np.array([math.cos(a), math.sin(a)]) for text, a in angle.items()}
    evaluator = RetrievalEvaluator(root)
    assert evaluator.name == "nf_proxy_v2" and evaluator.primary_metric == "nf_proxy_v2_ndcg@10"
    encoder = FakeEncoder(table)
    metrics = evaluator(encoder)
    assert list(metrics) == evaluator.metric_names() == [f"nf_proxy_v2_{m}" for m in METRICS]
    assert evaluator.last_run == {"q1": ["d2", "d1", "d3", "d4"], "q2": ["d1", "d2", "d3", "d4"]}
    # q1: d1 (rel 1) at rank 2; q2: d3 (rel 2) at rank 3
    assert metrics["nf_proxy_v2_mrr@10"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert metrics["nf_proxy_v2_ndcg@10"] == pytest.approx((1 / math.log2(3) + 2 / math.log2(4) / 2) / 2)
    assert metrics["nf_proxy_v2_recall@1"] == 0.0 and metrics["nf_proxy_v2_accuracy@10"] == 1.0
    assert "third" not in encoder.encoded  # the unjudged query is not encoded
    assert evaluator.last_summary["queries"] == 2 and evaluator.last_summary["unjudged_queries"] == 1
    # rows from the bare metrics of last_summary, or from the prefixed keys a call returns
    text = retrieval_table({"summary": evaluator.last_summary, evaluator.name: metrics | {"documents": 4}})
    assert "nDCG@10" in text and text.count(f" {metrics['nf_proxy_v2_ndcg@10'] * 100:.2f} ") == 2
    rows = {cells[0]: cells[1:] for line in text.splitlines() if line.startswith("| ")
            for cells in [[cell.strip() for cell in line.strip("|").split("|")]]}
    assert rows["summary"][:4] == ["2", "4", "56.55", "41.67"]  # (1/log2(3) + 1/2) / 2, (1/2 + 1/3) / 2
    assert rows["nf_proxy_v2"] == ["-", "4"] + rows["summary"][2:]  # documents given, queries not


def test_identical_ids_known_answer_and_override(tmp_path):
    """Query s1's text is also document s1: with the rule off s1 ranks first and the relevant d2 third; on
    (declared in dataset.json, or the override) s1 is gone and d2 is second. q2 is no document id."""
    corpus = [{"_id": i, "text": t} for i, t in (("s1", "first"), ("d1", "alpha"), ("d2", "beta"), ("d3", "gamma"))]
    root = write_beir(tmp_path / "own", corpus, [{"_id": "s1", "text": "first"}, {"_id": "q2", "text": "second"}],
                      ["s1\td2\t1", "q2\td3\t1"])
    angle = {"first": 0.0, "alpha": 0.2, "beta": 0.4, "gamma": 1.5, "second": 1.6}
    table = {text: np.array([math.cos(a), math.sin(a)]) for text, a in angle.items()}
    rank_of_d2 = {False: 3, True: 2}  # q2 finds its d3 first either way; nDCG@10 off 0.75, on 0.8155
    for declared, override, rule in ((None, None, False), (None, True, True), (True, None, True), (True, False, False),
                                     (False, None, False), (False, True, True)):
        if declared is not None:  # a BOM and spaces are fine
            (root / "dataset.json").write_text(f'\ufeff {{ "ignore_identical_ids" : {json.dumps(declared)} }}\n')
        evaluator = RetrievalEvaluator(root, name="own", ignore_identical_ids=override)
        metrics = evaluator(FakeEncoder(table))
        assert evaluator.ignore_identical_ids is rule and evaluator.data.ignore_identical_ids is bool(declared)
        assert evaluator.last_run == {"s1": ["d1", "d2", "d3"] if rule else ["s1", "d1", "d2", "d3"],
                                      "q2": ["d3", "d2", "d1", "s1"]}
        r = rank_of_d2[rule]
        assert metrics["own_ndcg@10"] == pytest.approx((1 / math.log2(r + 1) + 1) / 2, abs=1e-12)
        assert metrics["own_mrr@10"] == metrics["own_map@100"] == pytest.approx((1 / r + 1) / 2, abs=1e-12)
        assert metrics["own_recall@10"] == 1.0 and metrics["own_accuracy@1"] == 0.5  # d1 beats d2 for s1
    with pytest.raises(SimCSEError, match="ignore_identical_ids must be None"):
        RetrievalEvaluator(root, ignore_identical_ids="yes")


def test_default_name_and_bad_arguments(tmp_path):
    assert default_name("/data/BEIR/Sci-Fact.v1/") == "sci_fact_v1"
    root = write_beir(tmp_path / "ok")
    with pytest.raises(SimCSEError, match="search must be one of exact, faiss"):
        RetrievalEvaluator(root, search="annoy")
    with pytest.raises(SimCSEError, match="corpus_chunk_size"):
        RetrievalEvaluator(root, corpus_chunk_size=0)
    with pytest.raises(SimCSEError, match="split 'dev'"):
        RetrievalEvaluator(root, split="dev")  # the folder is read in the constructor
    evaluator = RetrievalEvaluator(root)
    with pytest.raises(SimCSEError, match=r"shape \(3, 8\) for 4 texts"):
        evaluator(type("Short", (), {"encode": lambda self, texts: torch.zeros(len(texts) - 1, 8)})())


# ------------------------------------------------------------------ ranking


def test_ties_keep_corpus_order(tmp_path):
    ids = ["z", "a", "m", "b", "y"]  # file order differs from id order either way
    root = write_beir(tmp_path / "ties", corpus=[{"_id": i, "text": f"doc {i}"} for i in ids],
                      queries=[{"_id": "q", "text": "q"}], qrels=["q\tm\t1"])
    table = {f"doc {i}": np.ones(4) for i in ids} | {"q": np.array([1.0, 0, 0, 0])}
    for chunk in (1, 2, 50_000):
        evaluator = RetrievalEvaluator(root, corpus_chunk_size=chunk)
        evaluator(FakeEncoder(table))
        assert evaluator.last_run == {"q": ids}
        assert len(set(evaluator.last_scores["q"])) == 1


def random_folder(root: Path, n_docs: int = 300, n_queries: int = 20, dim: int = 12, seed: int = 0):
    """Random vectors with duplicated documents (exact ties) and a few duplicated queries."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_docs // 2, dim))
    doc_vectors = np.concatenate([base, base[rng.integers(0, len(base), n_docs - len(base))]])
    corpus = [{"_id": f"d{i}", "text": f"doc {i}"} for i in range(n_docs)]
    queries = [{"_id": f"q{i}", "text": f"query {i % (n_queries - 3)}"} for i in range(n_queries)]
    pairs = {(i, int(j)): int(rng.integers(0, 3))
             for i in range(n_queries) for j in rng.choice(n_docs, 5, replace=False)}
    pairs |= {(i, i): 1 for i in range(n_queries)}  # every query has a relevant document
    write_beir(root, corpus, queries, [f"q{i}\td{j}\t{score}" for (i, j), score in pairs.items()])
    table = {f"doc {i}": doc_vectors[i] for i in range(n_docs)}
    table |= {f"query {i}": rng.standard_normal(dim) for i in range(n_queries)}
    return table


def test_exact_and_faiss_give_the_same_rankings(tmp_path):
    require_module("faiss")
    table = random_folder(tmp_path / "r")
    runs = {}
    for search in ("exact", "faiss"):
        evaluator = RetrievalEvaluator(tmp_path / "r", search=search, corpus_chunk_size=64)
        metrics = evaluator(FakeEncoder(table))
        runs[search] = (evaluator.last_run, evaluator.last_scores, metrics)
    assert runs["exact"] == runs["faiss"]
    assert all(len(ranked) == 100 for ranked in runs["exact"][0].values())


def test_faiss_missing_is_an_error_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(SimCSEError, match="pip install faiss-cpu, or use search='exact'"):
        RetrievalEvaluator(write_beir(tmp_path / "ok"), search="faiss")


def test_each_distinct_text_is_encoded_once_and_chunking_changes_nothing(tmp_path):
    table = random_folder(tmp_path / "r")
    results = []
    for chunk in (7, 50_000):
        evaluator = RetrievalEvaluator(tmp_path / "r", corpus_chunk_size=chunk)
        encoder = FakeEncoder(table)
        results.append((evaluator(encoder), evaluator.last_run))
        assert sorted(encoder.encoded) == sorted(set(encoder.encoded))  # once each
        assert set(encoder.encoded) == {f"doc {i}" for i in range(300) if f"doc {i}" in table} | {
            f"query {i % 17}" for i in range(20)}
        assert max(len(call) for call in encoder.calls) <= chunk
        assert encoder.retains == len(encoder.calls)  # the cache is dropped after every chunk
    assert results[0] == results[1]


def test_a_query_that_is_also_a_document_is_encoded_once_unless_the_prompts_differ(tmp_path):
    """Proxy sets hold each query's text as a document too: with the same prompt on both sides the query
    takes the document's embedding (same text, same vector) instead of a second encoding."""
    corpus = {"s1": "a cat sat", "s2": "a cat sits", "s3": "dogs bark", "s4": "a dog barks"}
    root = write_beir_folder(tmp_path / "shared", corpus, {"s1": "a cat sat", "s3": "dogs bark"},
                             {"s1": {"s2": 1}, "s3": {"s4": 1}}, ignore_identical_ids=True)
    encoder = FakeEncoder()
    metrics = RetrievalEvaluator(root, name="p")(encoder)
    assert sorted(t for call in encoder.calls for t in call) == sorted(corpus.values())  # queries not re-encoded
    encoded_again = FakeEncoder()
    again = RetrievalEvaluator(root, name="p", query_prompt="q: ", document_prompt="q: ")(encoded_again)
    assert RetrievalEvaluator(root, name="p")(FakeEncoder()) == metrics  # the copy is the vector encoding gives
    assert sorted(t for call in encoded_again.calls for t in call) == sorted("q: " + t for t in corpus.values())
    other = FakeEncoder()
    RetrievalEvaluator(root, name="p", query_prompt="query: ")(other)
    assert sorted(t for call in other.calls for t in call) == sorted([*corpus.values(), "query: a cat sat",
                                                                      "query: dogs bark"])
    assert set(metrics) == set(again) == {f"p_{m}" for m in METRICS}


def test_duplicate_document_texts_share_one_embedding(tmp_path):
    root = write_beir(tmp_path / "dup", corpus=[{"_id": "a", "text": "same"}, {"_id": "b", "text": "other"},
                                                 {"_id": "c", "text": "same"}],
                      queries=[{"_id": "q", "text": "q"}], qrels=["q\tc\t1"])
    table = {"same": np.array([1.0, 0.0]), "other": np.array([0.0, 1.0]), "q": np.array([1.0, 0.1])}
    evaluator = RetrievalEvaluator(root, corpus_chunk_size=1)
    encoder = FakeEncoder(table)
    evaluator(encoder)
    assert encoder.encoded == ["same", "other", "q"]
    assert evaluator.last_run == {"q": ["a", "c", "b"]}


def test_prompts_are_prepended(tmp_path):
    root = write_beir(tmp_path / "p")
    encoder = FakeEncoder()
    RetrievalEvaluator(root, query_prompt="query: ", document_prompt="passage: ")(encoder)
    assert encoder.calls == [["passage: Title one alpha", "passage: beta", "passage: gamma", "passage: only title"],
                             ["query: first", "query: second"]]


def test_memmap_directory_is_removed_after_a_call_and_after_an_error(tmp_path, monkeypatch):
    (scratch := tmp_path / "scratch").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen: list[list[str]] = []
    look = lambda: seen.append(sorted(p.name for p in scratch.rglob("*")))  # noqa: E731
    evaluator = RetrievalEvaluator(write_beir(tmp_path / "m"), corpus_chunk_size=2)
    evaluator(FakeEncoder(on_encode=look))
    assert any("corpus.f32" in names for names in seen)  # the memmap was there during the call
    assert list(scratch.iterdir()) == []
    seen.clear()
    with pytest.raises(RuntimeError, match="encoder failed"):
        evaluator(FakeEncoder(on_encode=look, fail_on_call=3))  # after the corpus, encoding the queries
    assert any("corpus.f32" in names for names in seen) and list(scratch.iterdir()) == []
    with pytest.raises(RuntimeError, match="encoder failed"):
        evaluator(FakeEncoder(fail_on_call=1))  # before the memmap exists
    assert list(scratch.iterdir()) == []


def peak_bytes(root: Path, dim: int, chunk: int) -> int:
    evaluator, encoder = RetrievalEvaluator(root, corpus_chunk_size=chunk), FakeEncoder(dim=dim)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        evaluator(encoder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(evaluator.last_run) == 20
    return peak - start


def test_memory_does_not_grow_with_the_corpus(tmp_path):
    """tracemalloc sees Python objects and numpy buffers (the fake encoder returns numpy-backed tensors):
    with the embeddings in a memmap and the search scanning it in chunks, 4x the documents must not give
    ~4x the peak; holding the embeddings in memory would add 4 bytes x 256 x 60k = 61 MB."""
    dim, chunk, peaks = 256, 8192, {}
    for n in (20_000, 80_000):
        corpus = [{"_id": f"d{i}", "text": f"document number {i}"} for i in range(n)]
        queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(20)]
        root = write_beir(tmp_path / str(n), corpus, queries, [f"q{i}\td{i * 7}\t1" for i in range(20)])
        peaks[n] = peak_bytes(root, dim, chunk)
    embeddings_growth = 4 * dim * (80_000 - 20_000)
    assert peaks[80_000] < 1.5 * peaks[20_000], peaks
    assert peaks[80_000] - peaks[20_000] < 0.25 * embeddings_growth, peaks


def test_with_a_real_sentence_encoder(tiny_bert_dir, tmp_path):
    from simcse.modeling.encoder import build_encoder

    encoder = build_encoder(str(tiny_bert_dir), "avg", device="cpu", batch_size=2)
    evaluator = RetrievalEvaluator(write_beir(tmp_path / "real"), corpus_chunk_size=3)
    metrics = evaluator(encoder)
    assert set(metrics) == set(evaluator.metric_names()) and all(0.0 <= v <= 1.0 for v in metrics.values())
    assert encoder.cached_embeddings == 0 and encoder.sentences_encoded == 6
    assert evaluator(encoder) == metrics  # a second call ranks the same way
