"""simcse.inference.tool.SimCSE: nearest neighbours on a real model, faiss = torch, shapes, errors, and the pooler
rule (config, sentence-transformers layout, default; never the model's name)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

import simcse_to_huggingface as convert_cli
from helpers import SHARED, require_module, require_shared, save_tiny_model
from simcse import SimCSE
from simcse.errors import SimCSEError
from simcse.modeling.backbones import model_class_for
from simcse.modeling.models import configure

MINILM = SHARED / "models" / "paraphrase-MiniLM-L3-v2"  # a plain BertModel, mean pooling, no pooling layer
CORPUS = [
    "A man is playing a guitar.",
    "A woman is slicing an onion in the kitchen.",
    "The stock market fell sharply on Monday.",
    "Two dogs are running through a grassy field.",
    "A child is reading a book in the library.",
    "Heavy rain flooded the streets of the city.",
    "The chef is cooking pasta for dinner.",
    "A plane is taking off from the airport.",
]
PARAPHRASES = {  # query -> index of its paraphrase in CORPUS
    "Someone is playing an acoustic guitar.": 0,
    "Share prices dropped steeply at the start of the week.": 2,
    "Puppies run across the grass.": 3,
    "A kid reads a novel at the library.": 4,
    "The streets were under water after the storm.": 5,
    "An airplane departs from the runway.": 7,
}
SENTENCES = ["a man is playing a guitar .", "the cat sat", "stocks fell sharply on monday after the report"]


def make_checkpoint(directory: Path, model_type: str, pooler: str, mlp_only_train: bool = False,
                    base: Path | None = None) -> Path:
    """A train.py-style checkpoint (wrapper class, SimCSE settings in config.json) with a non-trivial head."""
    base = base or save_tiny_model(directory.parent / f"{directory.name}-base", model_type)
    config = configure(AutoConfig.from_pretrained(base), pooler_type=pooler, mlp_only_train=mlp_only_train)
    torch.manual_seed(1)
    model = model_class_for(model_type).from_pretrained(base, config=config)
    if pooler == "cls":  # the MLP head exists for the cls pooler only
        with torch.no_grad():
            model.mlp.dense.weight.normal_(0, 0.5)
            model.mlp.dense.bias.normal_(0, 0.5)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(base).save_pretrained(directory)
    return directory


def reference_encode(checkpoint: Path, sentences: list[str]) -> torch.Tensor:
    """The wrapper's own inference path (models.encode), one sentence at a time (no padding)."""
    model = model_class_for(AutoConfig.from_pretrained(checkpoint).model_type).from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = []
    with torch.no_grad():
        for sentence in sentences:
            batch = tokenizer([sentence], return_tensors="pt")
            rows.append(model.encode(batch["input_ids"], batch["attention_mask"])[0])
    return torch.stack(rows)


@pytest.fixture(scope="module")
def minilm():
    require_shared(MINILM / "config.json", "the MiniLM model")
    return SimCSE(str(MINILM), device="cpu", pooler="avg")


def faiss_or_skip():
    return require_module("faiss")


# ---------------------------------------------------------------- search on a real model


def test_search_ranks_the_paraphrase_first(minilm):
    minilm.build_index(CORPUS, use_faiss=False)
    assert not minilm.uses_faiss and minilm.index_size == len(CORPUS)
    results = minilm.search(list(PARAPHRASES), threshold=0.0, top_k=3)
    assert len(results) == len(PARAPHRASES)
    for (query, expected), hits in zip(PARAPHRASES.items(), results):
        assert hits[0]["sentence"] == CORPUS[hits[0]["corpus_id"]] == CORPUS[expected], (query, hits)
        assert hits[0]["score"] > 0.4 and len(hits) <= 3
        scores = [hit["score"] for hit in hits]
        assert scores == sorted(scores, reverse=True)
        assert len({hit["sentence"] for hit in hits}) == len(hits)  # no sentence twice


def test_original_search_answers_as_the_2021_tool(minilm):
    """original_search=True: (sentence, score) tuples, best first, threshold 0.6 and top_k 5 unless given,
    the same hits as the default answer (princeton-nlp/SimCSE simcse/tool.py search())."""
    original = SimCSE(str(MINILM), device="cpu", pooler="avg", original_search=True)
    original.build_index(CORPUS, use_faiss=False)
    minilm.build_index(CORPUS, use_faiss=False)
    queries = list(PARAPHRASES)
    assert original.search(queries) == [[(h["sentence"], h["score"]) for h in hits]
                                        for hits in minilm.search(queries, threshold=0.6)]
    one = original.search(queries[0], threshold=0.0, top_k=2)
    assert isinstance(one, list) and len(one) == 2 and all(isinstance(hit, tuple) for hit in one)
    sentence, score = one[0]  # a migrating script's `for sentence, score in result:` works
    assert sentence == CORPUS[PARAPHRASES[queries[0]]] and score >= one[1][1]
    kept = [score for hits in original.search(queries) for _, score in hits]
    assert kept and min(kept) >= 0.6  # the 0.6 default applied, and not vacuously


def test_faiss_and_torch_return_identical_results(minilm):
    faiss_or_skip()
    queries = list(PARAPHRASES) + ["A person is cooking.", "Weather report for tomorrow."]
    settings = [(3, 0.0), (len(CORPUS), -1.0), (len(CORPUS) + 10, -1.0), (2, 0.3)]  # (top_k, threshold)
    minilm.build_index(CORPUS, use_faiss=False)
    exact = [minilm.search(queries, threshold=threshold, top_k=top_k) for top_k, threshold in settings]
    minilm.build_index(CORPUS, use_faiss=True)
    assert minilm.uses_faiss
    assert [minilm.search(queries, threshold=threshold, top_k=top_k) for top_k, threshold in settings] == exact
    assert all(len(hits) == len(CORPUS) for hits in exact[2])  # k > index size: every sentence once, no -1 ids
    assert all(sorted(h["sentence"] for h in hits) == sorted(CORPUS) for hits in exact[2])
    assert all(len(hits) <= 2 and all(h["score"] >= 0.3 for h in hits) for hits in exact[3])


def test_threshold_filters(minilm):
    minilm.build_index(CORPUS, use_faiss=False)
    query = "Someone is playing an acoustic guitar."
    everything = minilm.search(query, threshold=-1.0, top_k=len(CORPUS))
    assert len(everything) == len(CORPUS)
    cut = (everything[0]["score"] + everything[1]["score"]) / 2
    assert minilm.search(query, threshold=cut, top_k=5) == everything[:1]
    assert minilm.search(query, threshold=0.99, top_k=5) == []
    # the scores are the cosines the similarity() method reports
    assert everything[0]["score"] == pytest.approx(minilm.similarity(query, everything[0]["sentence"]), abs=1e-5)
    assert minilm.search(query) == everything[:5]  # threshold=None by default: nothing dropped


def test_add_to_index_grows_it_and_skips_duplicates(minilm, tmp_path):
    minilm.build_index(CORPUS[:4], use_faiss=False)
    assert minilm.search("An airplane departs from the runway.", threshold=0.6) == []
    size = minilm.add_to_index(CORPUS[4:] + CORPUS[:2])  # two already indexed
    assert size == minilm.index_size == len(CORPUS)
    assert minilm.search("An airplane departs from the runway.", threshold=0.6)[0]["sentence"] == CORPUS[7]
    text = tmp_path / "more.txt"
    text.write_text("A kid reads a novel at the library.\n\n  \nA new sentence about trains.\n", encoding="utf-8")
    assert minilm.add_to_index(str(text)) == len(CORPUS) + 2  # blank lines skipped
    hits = minilm.search("A kid reads a novel at the library.", threshold=-1.0, top_k=20)
    assert len({h["sentence"] for h in hits}) == len(hits) == len(CORPUS) + 2


def test_build_index_from_a_file(minilm, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    assert minilm.build_index(str(text), use_faiss=False) == len(CORPUS)
    assert minilm.search("Puppies run across the grass.", top_k=1)[0]["sentence"] == CORPUS[3]


def test_single_string_and_list_shapes(minilm):
    one = minilm.encode("A man is playing a guitar.")
    many = minilm.encode(CORPUS[:3], batch_size=2, return_numpy=True)
    assert isinstance(one, torch.Tensor) and one.shape == (384,)
    assert isinstance(many, np.ndarray) and many.shape == (3, 384) and many.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(many[0], one.numpy(), atol=1e-5)  # batch composition does not matter
    raw = minilm.encode(CORPUS[:3], normalize_to_unit=False)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(3))

    pair = minilm.similarity(CORPUS[0], CORPUS[1])
    grid = minilm.similarity(CORPUS[:2], CORPUS[:3])
    row = minilm.similarity(CORPUS[0], CORPUS[:3])
    column = minilm.similarity(CORPUS[:2], CORPUS[1])
    assert isinstance(pair, float) and grid.shape == (2, 3) and row.shape == (3,) and column.shape == (2,)
    expected = many[:2] @ many.T
    np.testing.assert_allclose(grid, expected, atol=1e-5)
    np.testing.assert_allclose(row, expected[0], atol=1e-5)
    np.testing.assert_allclose(column, expected[:, 1], atol=1e-5)
    assert pair == pytest.approx(expected[0, 1], abs=1e-5)
    np.testing.assert_allclose(minilm.similarity(CORPUS[:2], raw.numpy()), expected, atol=1e-5)  # vectors too


def test_errors_name_the_value_and_the_fix(minilm, tmp_path):
    fresh = SimCSE(str(save_tiny_model(tmp_path / "tiny", "bert")), device="cpu", pooler="avg")
    with pytest.raises(SimCSEError, match=r"the index is empty; call build_index"):
        fresh.search("anything")
    minilm.build_index(CORPUS[:2], use_faiss=False)
    with pytest.raises(SimCSEError, match=r"queries is empty"):
        minilm.search([])
    with pytest.raises(SimCSEError, match=r"sentences is empty"):
        minilm.encode([])
    with pytest.raises(SimCSEError, match=r"sentences\[1\] is int 3, not a string"):
        minilm.encode(["ok", 3])
    with pytest.raises(SimCSEError, match=r"top_k must be at least 1, got 0"):
        minilm.search("x", top_k=0)
    with pytest.raises(SimCSEError, match=r"'no such file.txt' is not a file; pass a list of sentences"):
        minilm.build_index("no such file.txt")
    assert minilm.index_size == 2  # bad input leaves the index as it was
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n")
    with pytest.raises(SimCSEError, match=r"holds no sentences"):
        minilm.add_to_index(str(blank))
    with pytest.raises(SimCSEError, match=r"`max_length` 1000 exceeds this model's limit of 512"):
        minilm.encode("x", max_length=1000)


def test_use_faiss_true_without_faiss_is_a_clear_error(minilm, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    with pytest.raises(SimCSEError, match=r"use_faiss=True but faiss is not installed; pip install faiss-cpu"):
        minilm.build_index(CORPUS, use_faiss=True)
    assert minilm.build_index(CORPUS) == len(CORPUS) and not minilm.uses_faiss  # None: falls back


# ---------------------------------------------------------------- which pooler


@pytest.mark.parametrize(
    "name, pooler, mlp_only_train, expected",
    [
        ("sup-simcse-bert", "cls", True, "cls_before_pooler"),  # name says sup, config says training-only MLP
        ("unsup-simcse-bert", "cls", False, "cls"),  # name says unsup, config says MLP at inference
        ("unsup-cls-model", "avg", False, "avg"),
        ("cls", "avg_first_last", True, "avg_first_last"),
    ],
)
def test_pooler_comes_from_the_checkpoint_config_never_the_name(tmp_path, name, pooler, mlp_only_train, expected):
    ckpt = make_checkpoint(tmp_path / name, "bert", pooler, mlp_only_train)
    tool = SimCSE(str(ckpt), device="cpu")
    assert (tool.pooler, tool.pooler_source) == (expected, "config")
    reference = reference_encode(ckpt, SENTENCES)  # the wrapper's encode(): the evaluation path
    torch.testing.assert_close(tool.encode(SENTENCES, normalize_to_unit=False), reference, rtol=1e-5, atol=1e-5)
    # the converted model records the same settings, so it is read the same way and gives the same vectors
    converted = tmp_path / f"{name}-hf"
    convert_cli.main(["--path", str(ckpt), "--output_dir", str(converted)])
    plain = SimCSE(str(converted), device="cpu")
    assert (plain.pooler, plain.pooler_source) == (expected, "config")
    torch.testing.assert_close(plain.encode(SENTENCES, normalize_to_unit=False), reference, rtol=1e-5, atol=1e-5)


def test_explicit_pooler_wins_and_is_checked(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt", "bert", "cls", mlp_only_train=True)
    tool = SimCSE(str(ckpt), device="cpu", pooler="avg")
    assert (tool.pooler, tool.pooler_source) == ("avg", "argument")
    with pytest.raises(SimCSEError, match=r"pooler 'wavg' does not fit model type 'bert'.*\(pooler from argument\)"):
        SimCSE(str(ckpt), device="cpu", pooler="wavg")


def test_default_is_cls_only_with_a_trained_pooling_layer(tmp_path):
    plain = save_tiny_model(tmp_path / "unsup-simcse-bert-base-uncased", "bert")  # BertModel with pooler weights
    with pytest.warns(UserWarning, match=r"records no pooler; using 'cls'.*pooler='cls_before_pooler'"):
        tool = SimCSE(str(plain), device="cpu")
    assert (tool.pooler, tool.pooler_source) == ("cls", "default")
    if (MINILM / "config.json").is_file():  # no pooling layer in its weights: refuse to guess
        with pytest.raises(SimCSEError, match=r"records no pooler and has no trained pooling layer.*pass pooler="):
            SimCSE(str(MINILM), device="cpu")


def _copy_with_st_layout(source: Path, target: Path, modules: list[tuple[str, str]], pooling: dict) -> Path:
    target.mkdir()
    for item in source.iterdir():
        if item.is_file():
            (target / item.name).symlink_to(item)
    (target / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
         for i, (kind, path) in enumerate(modules)]))
    (target / "1_Pooling").mkdir()
    (target / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return target


def test_sentence_transformers_pooling_config_is_read(tmp_path):
    """A plain model with an ST layout: its Pooling config decides; the tool then equals ST itself."""
    require_shared(MINILM / "config.json", "the MiniLM model")
    legacy_mean = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True,
                   "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False}
    model_dir = _copy_with_st_layout(MINILM, tmp_path / "minilm-st", [("Transformer", ""), ("Pooling", "1_Pooling")],
                                     legacy_mean)
    tool = SimCSE(str(model_dir), device="cpu")
    assert (tool.pooler, tool.pooler_source) == ("avg", "sentence-transformers")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    peer = sentence_transformers.SentenceTransformer(str(model_dir), device="cpu")
    np.testing.assert_allclose(peer.encode(CORPUS), tool.encode(CORPUS, normalize_to_unit=False).numpy(), atol=1e-5)

    dense = _copy_with_st_layout(MINILM, tmp_path / "minilm-dense",
                                 [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense")],
                                 {"embedding_dimension": 384, "pooling_mode": "mean"})
    with pytest.raises(SimCSEError, match=r"reproduces only Transformer \+ Pooling.*Pass pooler="):
        SimCSE(str(dense), device="cpu")
    shutil.rmtree(dense)
    maxed = _copy_with_st_layout(MINILM, tmp_path / "minilm-max", [("Transformer", ""), ("Pooling", "1_Pooling")],
                                 {"embedding_dimension": 384, "pooling_mode": "max"})
    with pytest.raises(SimCSEError, match=r"mode\(s\) \['max'\], which the tool does not implement"):
        SimCSE(str(maxed), device="cpu")


def test_package_reexports_the_tool():
    import simcse
    from simcse.inference.tool import SimCSE as direct

    assert simcse.SimCSE is direct and "SimCSE" in simcse.__all__


# ---------------------------------------------------------------- search like sentence-transformers


def test_search_takes_precomputed_vectors_numpy_and_pandas(minilm):
    pd = pytest.importorskip("pandas")
    minilm.build_index(CORPUS, use_faiss=False)
    queries = list(PARAPHRASES)
    by_list = minilm.search(queries, top_k=3)
    assert minilm.search(np.array(queries), top_k=3) == by_list == minilm.search(pd.Series(queries), top_k=3)
    by_vectors = minilm.search(minilm.encode(queries, return_numpy=True), top_k=3)  # (n, H) embeddings
    ids = [[h["corpus_id"] for h in hits] for hits in by_list]
    assert [[h["corpus_id"] for h in hits] for hits in by_vectors] == ids
    np.testing.assert_allclose([h["score"] for hits in by_vectors for h in hits],
                               [h["score"] for hits in by_list for h in hits], atol=1e-6)
    single = minilm.search(minilm.encode(queries[0]), top_k=2)  # (H,) -> one list of hits
    assert [h["corpus_id"] for h in single] == [h["corpus_id"] for h in by_list[0][:2]]
    assert minilm.build_index(pd.Series(CORPUS[:3]), use_faiss=False) == 3
    with pytest.raises(SimCSEError, match=r"queries is a table \(DataFrame\); pass one column"):
        minilm.search(pd.DataFrame({"text": queries}))


def test_ties_give_the_same_hits_on_both_backends(minilm):
    """40 sentences share one vector (more ties than any fixed candidate slack): both backends return the
    smallest corpus ids among them, in order."""
    rng = np.random.default_rng(3)
    shared = rng.standard_normal(384).astype(np.float32)
    vectors = rng.standard_normal((100, 384)).astype(np.float32)
    tied_rows = np.sort(rng.choice(100, size=40, replace=False))
    vectors[tied_rows] = shared
    sentences = [f"sentence number {i}" for i in range(100)]
    answers = {}
    for use_faiss in ([False, True] if importlib.util.find_spec("faiss") else [False]):
        minilm.build_index(sentences, use_faiss=use_faiss, embeddings=vectors)
        assert minilm.uses_faiss == use_faiss
        answers[use_faiss] = minilm.search(shared, top_k=20)
    for hits in answers.values():
        assert [h["corpus_id"] for h in hits] == tied_rows[:20].tolist()
        assert [h["sentence"] for h in hits] == [sentences[i] for i in tied_rows[:20]]
    assert len({json.dumps(a) for a in answers.values()}) == 1


def test_build_index_validates_before_replacing_the_index(minilm, monkeypatch):
    minilm.build_index(CORPUS, use_faiss=False)
    before = minilm.search(CORPUS[0], top_k=3)
    with pytest.raises(SimCSEError, match=r"sentences\[1\] is int 3"):
        minilm.build_index(["fine", 3])
    with pytest.raises(SimCSEError, match=r"embeddings has 2 rows for 3 sentences"):
        minilm.build_index(["a", "b", "c"], embeddings=np.ones((2, 384)))

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory halfway")

    monkeypatch.setattr(minilm, "encode", broken)
    with pytest.raises(RuntimeError, match="halfway"):
        minilm.build_index(["x", "y"])
    monkeypatch.undo()
    assert minilm.index_size == len(CORPUS) and minilm.search(CORPUS[0], top_k=3) == before


def test_a_byte_order_mark_is_not_part_of_the_first_sentence(minilm, tmp_path):
    text = tmp_path / "bom.txt"
    text.write_bytes("\ufeff".encode() + "\n".join(CORPUS).encode() + b"\n")
    minilm.build_index(str(text), use_faiss=False)
    hit = minilm.search(CORPUS[0], top_k=1)[0]
    assert hit["sentence"] == CORPUS[0] and hit["score"] == pytest.approx(1.0, abs=1e-6)


def test_save_and_load_index_round_trip(minilm, tmp_path):
    minilm.build_index(CORPUS, use_faiss=False)
    minilm.add_to_index(["One more line about trains.", "Зелёный чай с лимоном."])
    queries = list(PARAPHRASES)
    expected = minilm.search(queries, top_k=4)
    path = minilm.save_index(tmp_path / "index.npz")
    other = SimCSE(str(MINILM), device="cpu", pooler="avg")
    for use_faiss in ([False, True] if importlib.util.find_spec("faiss") else [False]):
        assert other.load_index(path, use_faiss=use_faiss) == len(CORPUS) + 2
        assert other.uses_faiss == use_faiss and other.search(queries, top_k=4) == expected
    assert other._index_sentences == minilm._index_sentences
    np.testing.assert_array_equal(other._index_vectors, minilm._index_vectors)
    cls_tool = SimCSE(str(MINILM), device="cpu", pooler="cls_before_pooler")
    with pytest.raises(SimCSEError, match=r"was built with pooler 'avg'.*this tool uses 'cls_before_pooler'"):
        cls_tool.load_index(path)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(SimCSEError, match=r"is not an index written by save_index"):
        other.load_index(junk)
    assert other.search(queries, top_k=4) == expected  # the failed loads left the index alone


# ---------------------------------------------------------------- lengths and empty sentences


def test_position_limit_counts_only_usable_positions(tmp_path):
    from transformers import BertConfig, GPT2Config, RobertaConfig

    from simcse.inference.export import check_max_seq_length
    from simcse.modeling.encoder import position_limit

    roberta = RobertaConfig(max_position_embeddings=514, pad_token_id=1)
    assert position_limit(roberta) == 512 == position_limit(roberta.to_dict())
    assert position_limit(BertConfig(max_position_embeddings=512)) == 512
    assert position_limit(GPT2Config(n_positions=1024)) == 1024
    check_max_seq_length(512, roberta, "roberta-base")
    with pytest.raises(SimCSEError, match=r"`max_seq_length` 513 exceeds this model's limit of 512 positions"):
        check_max_seq_length(513, roberta, "roberta-base")
    # a tiny RoBERTa with 130 rows: 128 usable; the default length is that limit, so a long text encodes
    tool = SimCSE(str(save_tiny_model(tmp_path / "roberta", "roberta")), device="cpu", pooler="avg")
    long_text = " ".join(["word"] * 400)
    assert tool.encode(long_text).shape == (32,)
    torch.testing.assert_close(tool.encode(long_text), tool.encode(long_text, max_length=128))
    with pytest.raises(SimCSEError, match=r"`max_length` 129 exceeds this model's limit of 128 positions"):
        tool.encode("x", max_length=129)


def test_empty_sentences_are_defined_or_a_clear_error(tmp_path, tiny_gpt2_dir):
    bert = SimCSE(str(save_tiny_model(tmp_path / "bert", "bert")), device="cpu", pooler="avg")
    alone = bert.encode("")  # [CLS] [SEP]: a defined vector, the same in any batch
    assert torch.isfinite(alone).all()
    torch.testing.assert_close(bert.encode(["a longer sentence here", ""])[1], alone)
    gpt2 = SimCSE(str(tiny_gpt2_dir), device="cpu", pooler="last")
    for batch in ([""], ["", ""], ["some text", ""]):  # all-empty and mixed batches
        with pytest.raises(SimCSEError, match=r"sentence\(s\) give no tokens \(the first: ''\).*Drop or fill"):
            gpt2.encode(batch)
    assert gpt2.encode(["some text"]).shape == (1, 32)


def test_truncate_dim_keeps_the_first_coordinates(tmp_path):
    path = str(save_tiny_model(tmp_path / "tiny", "bert"))
    full = SimCSE(path, device="cpu", pooler="avg")
    short = SimCSE(path, device="cpu", pooler="avg", truncate_dim=8)
    sentences = ["a cat sits", "a dog runs far", "stocks fell"]
    raw = full.encode(sentences, normalize_to_unit=False)
    assert short.encode(sentences, normalize_to_unit=False).shape == (3, 8)
    torch.testing.assert_close(short.encode(sentences), torch.nn.functional.normalize(raw[:, :8], dim=-1))
    torch.testing.assert_close(torch.as_tensor(short.similarity(sentences[0], sentences[1:])).reshape(-1),
                               torch.nn.functional.cosine_similarity(raw[:1, :8], raw[1:, :8]), rtol=1e-5, atol=1e-6)
    short.build_index(sentences[1:])
    assert short.search(sentences[0], top_k=1)[0]["sentence"] in sentences[1:]
    assert "truncate_dim=8" in repr(short)
    with pytest.raises(SimCSEError, match=r"`truncate_dim` must be an integer in \[1, 32\], got 64"):
        SimCSE(path, device="cpu", pooler="avg", truncate_dim=64)


def test_encode_output_type_and_device_like_sentence_transformers(tmp_path):
    from senteval.errors import SentEvalError

    tool = SimCSE(str(save_tiny_model(tmp_path / "bert", "bert")), device="cpu", pooler="avg")
    tensor = tool.encode(["a b", "c"])
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, 32)
    array = tool.encode(["a b", "c"], convert_to_numpy=True)
    assert isinstance(array, np.ndarray) and np.array_equal(array, tensor.numpy())
    assert isinstance(tool.encode("a b", convert_to_tensor=True), torch.Tensor)
    with pytest.raises(SimCSEError, match=r"ask for two output types"):
        tool.encode("a b", convert_to_numpy=True, convert_to_tensor=True)
    torch.testing.assert_close(tool.encode(["a b", "c"], device="cpu"), tensor)
    assert str(tool.device) == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(SentEvalError, match=r"asks for CUDA but no GPU is visible"):
            tool.encode("a b", device="cuda:0")
        assert str(tool.device) == "cpu"  # a refused device leaves the model where it was
    assert tool.encode("a b", show_progress_bar=True).shape == (32,)
