"""The mteb adapter (simcse/evaluation/mteb_tasks.py), offline: MTEB's STS-B and retrieval scores equal ours
(with a folder's ignore_identical_ids declaration too), mteb's result cache never hands one model's scores to
another, and prompts reach the encoder."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import SHARED, require_shared, write_beir_folder, write_sts_tree
from simcse.evaluation.report import EvaluationConfig, evaluate

pytestmark = pytest.mark.slow  # encodes STS-B test with a real model through mteb, several times

try:
    import mteb
    from mteb.cache import ResultCache
    from mteb.models.model_meta import ModelMeta
    from mteb.models.models_protocols import EncoderProtocol

    from simcse.evaluation.mteb_tasks import (
        LocalSTSBenchmark,
        MTEBEncoder,
        beir_task,
        model_meta,
        parse_retrieval,
        run_mteb,
    )
except ImportError as err:  # mteb is an optional package: fail in CI, skip elsewhere
    if os.environ.get("CI") or not (err.name or "").startswith("mteb"):
        raise
    pytest.skip(f"the mteb package is not installed ({err}); pip install 'mteb>=2.26,<3'", allow_module_level=True)

DOCS = {
    "d1": ("Cooking", "Boil the pasta in salted water for ten minutes."),
    "d2": ("", "The cat sat on the warm windowsill all afternoon."),
    "d3": ("Football", "The striker scored twice in the second half of the match."),
    "d4": ("", "Interest rates were raised by the central bank to fight inflation."),
    "d5": ("Astronomy", "A telescope shows the rings of Saturn on a clear night."),
    "d6": ("", "Water the tomato plants early in the morning during summer."),
    "d7": ("Travel", "The train from Paris to Lyon takes about two hours."),
    "d8": ("", "Regular exercise lowers the risk of heart disease."),
    "d9": ("Music", "She practised the violin concerto every evening."),
    "d10": ("", "The new phone has a larger battery and a better camera."),
    "d11": ("Cooking", "Knead the bread dough until it is smooth and elastic."),
    "d12": ("", "Dogs need a daily walk to stay healthy and calm."),
}
QUERIES = {"q1": "how long to cook spaghetti", "q2": "which team won the football game", "q3": "why did the bank "
           "raise interest rates", "q4": "looking at planets through a telescope", "q5": "how to bake bread at home",
           "q6": "a question nobody judged", "q7": "keeping pets healthy"}
QRELS = [("q1", "d1", 2), ("q1", "d11", 1), ("q2", "d3", 1), ("q3", "d4", 1), ("q4", "d5", 2), ("q5", "d11", 1),
         ("q5", "d1", 0), ("q7", "d12", 1), ("q7", "d2", 1), ("q7", "d8", 0)]


def write_beir(folder: Path) -> Path:
    return write_beir_folder(folder, DOCS, QUERIES, QRELS)


def ours_stsb(model: Path | str, pooler: str, data: Path) -> float:
    config = EvaluationConfig(model_name_or_path=str(model), pooler=pooler, task_set="na", tasks=["STSBenchmark"],
                              senteval_data=str(data))
    return evaluate(config, out=io.StringIO())["results"]["STSBenchmark"]["test"]["spearman"]


class Recorder:
    """A fake encoder: remembers every text and embeds it as a fixed pseudo-random vector of its hash."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        return torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(s)) for s in seeds])


@pytest.fixture(scope="module")
def minilm() -> Path:
    return require_shared(SHARED / "models" / "paraphrase-MiniLM-L3-v2", "paraphrase-MiniLM-L3-v2")


@pytest.fixture(scope="module")
def senteval_data() -> Path:
    require_shared(SHARED / "data" / "downstream" / "STS" / "STSBenchmark" / "sts-test.csv", "STS-B test")
    return SHARED / "data"


@pytest.fixture(scope="module")
def stsb(minilm, senteval_data) -> dict[str, float]:
    """MiniLM-L3 (mean pooling, as its sentence-transformers Pooling module) on STS-B test: MTEB and ours."""
    return {"mteb": run_mteb(str(minilm), "avg", senteval_data=senteval_data)["STSBenchmark"],
            "ours": ours_stsb(minilm, "avg", senteval_data)}


@pytest.fixture(scope="module")
def small_sts(tmp_path_factory, senteval_data) -> Path:
    """A data tree whose STS-B splits are the first 150 pairs of the real test split (fast real-model runs)."""
    root = tmp_path_factory.mktemp("small-sts")
    lines = (senteval_data / "downstream" / "STS" / "STSBenchmark" / "sts-test.csv").read_text("utf-8").split("\n")
    folder = root / "downstream" / "STS" / "STSBenchmark"
    folder.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (folder / f"sts-{split}.csv").write_text("\n".join(lines[:150]) + "\n", encoding="utf-8")
    return root


def test_stsb_test_spearman_equals_ours(stsb):
    assert stsb["mteb"] > 0.7, stsb  # a real model, not noise
    assert abs(stsb["mteb"] - stsb["ours"]) * 100 <= 0.01, stsb


def test_two_models_in_one_process_keep_their_own_scores(stsb, minilm, tiny_bert_dir, senteval_data):
    tiny = run_mteb(str(tiny_bert_dir), "avg", senteval_data=senteval_data)["STSBenchmark"]
    cls = run_mteb(str(minilm), "cls_before_pooler", senteval_data=senteval_data)["STSBenchmark"]
    again = run_mteb(str(minilm), "avg", senteval_data=senteval_data)["STSBenchmark"]
    assert abs(tiny - stsb["mteb"]) > 0.05 and abs(cls - stsb["mteb"]) > 1e-3, (tiny, cls, stsb)
    assert tiny == pytest.approx(ours_stsb(tiny_bert_dir, "avg", senteval_data), abs=1e-6)
    assert cls == pytest.approx(ours_stsb(minilm, "cls_before_pooler", senteval_data), abs=1e-6)
    assert again == pytest.approx(stsb["mteb"], abs=1e-9)


def test_shared_result_cache_keeps_models_apart(tmp_path, minilm, tiny_bert_dir, small_sts):
    """Through ``mteb.evaluate`` with one ResultCache: our metadata keeps each model (and pooler) apart, where
    mteb's empty metadata (every bare encoder is ``no_model_name/available``) hands the first one's score on."""
    cache = ResultCache(tmp_path / "cache")

    def score(model) -> float:
        result = mteb.evaluate(model, LocalSTSBenchmark(senteval_data=small_sts), cache=cache, co2_tracker=False,
                               show_progress_bar=False)
        return result.task_results[0].scores["test"][0]["main_score"]

    first = score(MTEBEncoder(str(minilm), pooler="avg"))
    tiny = score(MTEBEncoder(str(tiny_bert_dir), pooler="avg"))
    cls = score(MTEBEncoder(str(minilm), pooler="cls_before_pooler"))
    assert abs(tiny - first) > 0.05 and abs(cls - first) > 1e-3, (first, tiny, cls)
    assert tiny == pytest.approx(run_mteb(str(tiny_bert_dir), "avg", senteval_data=small_sts)["STSBenchmark"])
    # the same model may reuse its own result (the cache stores it rounded to 6 decimals)
    assert score(MTEBEncoder(str(minilm), pooler="avg")) == pytest.approx(first, abs=1e-6)

    bare_minilm, bare_tiny = MTEBEncoder(str(minilm), pooler="avg"), MTEBEncoder(str(tiny_bert_dir), pooler="avg")
    for bare in (bare_minilm, bare_tiny):
        bare.mteb_model_meta = ModelMeta.create_empty()
    stale = ResultCache(tmp_path / "bare")
    scores = [mteb.evaluate(bare, LocalSTSBenchmark(senteval_data=small_sts), cache=stale, co2_tracker=False,
                            show_progress_bar=False).task_results[0].scores["test"][0]["main_score"]
              for bare in (bare_minilm, bare_tiny)]
    assert scores[0] == pytest.approx(first, abs=1e-9)
    assert scores[1] == pytest.approx(first, abs=1e-6) != tiny  # the trap our metadata avoids


def test_model_meta_names_the_checkpoint(tmp_path, tiny_bert_dir):
    a = model_meta(str(tiny_bert_dir), {"pooler": "avg"})
    assert a.name.startswith(f"local/{tiny_bert_dir.name}-") and "/" in a.name and a.revision
    assert model_meta(str(tiny_bert_dir) + "/", {"pooler": "avg"}).name == a.name  # the resolved path
    copy = tmp_path / tiny_bert_dir.name
    copy.mkdir()
    for f in tiny_bert_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert model_meta(str(copy), {"pooler": "avg"}).name != a.name  # same folder name, another path
    other = model_meta(str(tiny_bert_dir), {"pooler": "cls"})
    assert other.name == a.name and other.experiment_name != a.experiment_name
    before = model_meta(str(copy)).revision
    (copy / "extra.bin").write_bytes(b"weights")
    assert model_meta(str(copy)).revision != before  # a rewritten checkpoint gets another revision


def test_encoder_protocol_prompts_and_normalisation(tmp_path):
    fake = Recorder()
    model = MTEBEncoder("some/dir", pooler="avg", encoder=fake, query_prompt="query: ", document_prompt="passage: ",
                        normalize=True)
    assert isinstance(model, EncoderProtocol)
    batches = [{"text": ["a b", "c"]}, {"text": ["d"]}]
    out = model.encode(batches, task_metadata=None, hf_split="test", hf_subset="default", prompt_type="document")
    assert fake.calls[-1] == ["passage: a b", "passage: c", "passage: d"]
    assert out.shape == (3, 8) and out.dtype.name == "float32"
    assert torch.allclose(torch.from_numpy(out).norm(dim=1), torch.ones(3), atol=1e-6)
    model.encode(batches, task_metadata=None, hf_split="test", hf_subset="default", prompt_type=None)
    assert fake.calls[-1] == ["a b", "c", "d"]


def test_prompts_reach_the_encoder_through_mteb(tmp_path):
    folder = write_beir(tmp_path / "toy")
    data = write_sts_tree(tmp_path / "data")
    fake = Recorder()
    scores = run_mteb("fake/model", "avg", tasks=["STSBenchmark"], senteval_data=data, retrieval=[f"{folder}:toy"],
                      query_prompt="query: ", document_prompt="passage: ", encoder=fake)
    assert set(scores) == {"STSBenchmark", "toy_ndcg@10"}
    sts_texts = [t for call in fake.calls[:2] for t in call]
    assert sts_texts and all(t.startswith(("a dog", "a cat")) for t in sts_texts)  # symmetric task: no prompt
    seen = {t for call in fake.calls[2:] for t in call}
    documents = {"passage: " + (f"{title} {text}" if title else text) for title, text in DOCS.values()}
    scored = {q for q, _, s in QRELS if s >= 1}
    queries = {"query: " + QUERIES[q] for q in scored}
    assert seen == documents | queries


def test_retrieval_ndcg_equals_ours(tmp_path, minilm):
    retrieval = pytest.importorskip("simcse.evaluation.retrieval")
    from simcse.modeling.encoder import build_encoder

    folder = write_beir(tmp_path / "toy")
    assert parse_retrieval(str(folder)) == (str(folder), "toy")
    prompts = {"query_prompt": "query: ", "document_prompt": "passage: "}
    theirs = run_mteb(str(minilm), "avg", tasks=[], retrieval=[f"{folder}:toy"], **prompts)["toy_ndcg@10"]
    ours = retrieval.RetrievalEvaluator(folder, name="toy", **prompts)(build_encoder(str(minilm), "avg"))
    assert 0.3 < theirs < 1.0, theirs
    assert abs(theirs - ours["toy_ndcg@10"]) <= 1e-4, (theirs, ours)


class Table(Recorder):
    """A fake encoder with a fixed vector per text (a query and the document of the same text share one)."""

    def __init__(self, table: dict[str, np.ndarray]):
        super().__init__()
        self.table = table

    def encode(self, texts):
        self.calls.append(list(texts))
        return torch.from_numpy(np.stack([self.table[t] for t in texts]).astype(np.float32))


def test_identical_ids_rule_reaches_mteb_and_matches_ours(tmp_path):
    """A proxy-like folder (a query's id is the id of the document with its text) declaring
    ignore_identical_ids: the mteb task takes the rule from dataset.json, and MTEB's nDCG@10 equals ours
    with it on, with it overridden off, and without the file (off); on and off differ."""
    retrieval = pytest.importorskip("simcse.evaluation.retrieval")
    rng = np.random.default_rng(5)
    texts = {f"s{i}": f"sentence number {i}" for i in range(1, 25)}
    qrels = [("s1", "s2"), ("s3", "s4"), ("s3", "s12"), ("s5", "s6"), ("s7", "s8"), ("s9", "s10"), ("s11", "s13"),
             ("s11", "s14"), ("s15", "s16"), ("s17", "s18")]
    table = {text: rng.standard_normal(16) for text in texts.values()}
    for n, (query, doc) in enumerate(qrels):  # relevant documents near their query, some nearer than others
        table[texts[doc]] = table[texts[query]] + rng.standard_normal(16) * (0.4, 0.8, 1.2, 1.6)[n % 4]
    folder = tmp_path / "proxy"
    write_beir_folder(folder, texts, {q: texts[q] for q in dict.fromkeys(q for q, _ in qrels)},
                      [(q, d, 1) for q, d in qrels], ignore_identical_ids=True)
    declared, overridden = beir_task(folder), beir_task(folder, ignore_identical_ids=False)
    assert declared.ignore_identical_ids is True and overridden.ignore_identical_ids is False
    revision = lambda task: task.metadata.dataset["revision"]  # noqa: E731
    assert revision(declared) != revision(overridden)  # a result cache never mixes the two

    def both(rule: bool | None) -> tuple[float, float]:
        theirs = run_mteb("fake/model", "avg", tasks=[], retrieval=[f"{folder}:proxy"], encoder=Table(table),
                          ignore_identical_ids=rule)["proxy_ndcg@10"]
        ours = retrieval.RetrievalEvaluator(folder, name="proxy", ignore_identical_ids=rule)(Table(table))
        return theirs, ours["proxy_ndcg@10"]

    on, off = both(None), both(False)
    (folder / "dataset.json").unlink()
    assert beir_task(folder).ignore_identical_ids is False
    absent = both(None)
    for theirs, ours in (on, off, absent):
        assert abs(theirs - ours) <= 1e-4, (on, off, absent)
    assert absent == pytest.approx(off, abs=1e-12)
    assert on[1] - off[1] > 0.1 and 0.3 < off[1] < on[1] < 1.0, (on, off)
