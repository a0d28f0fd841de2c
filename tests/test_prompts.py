"""Query and document prompts (instruction prefixes, as E5/BGE/GTE use): train.py puts them before the
anchors and before the positives / hard negatives, saves them with the checkpoint, and the tool, the
sentence-transformers export and evaluation.py's retrieval use the saved ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_export import load_st

import evaluation
import simcse_to_huggingface as convert_cli
import train
from helpers import REPO, save_tiny_model
from simcse import SimCSE
from simcse.data import column_roles, load_training_dataset, tokenize_dataset
from simcse.evaluation.retrieval import RetrievalEvaluator
from simcse.modeling.encoder import SentenceEncoder, build_encoder

PROMPTS = {"query": "query: ", "document": "passage: "}
PAIRS = [(f"sentence number {i} about topic {i % 3}", f"a paraphrase of sentence {i}") for i in range(8)]


def pair_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.csv"
    path.write_text("sent0,sent1\n" + "".join(f"{a},{b}\n" for a, b in PAIRS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two steps of supervised training on pairs with both prompts."""
    tmp = tmp_path_factory.mktemp("prompted")
    out = tmp / "out"
    train.main(["--model_name_or_path", str(save_tiny_model(tmp / "bert", "bert")), "--train_file",
                str(pair_file(tmp)), "--output_dir", str(out), "--pooler_type", "cls", "--query_prompt", "query: ",
                "--document_prompt", "passage: ", "--per_device_train_batch_size", "4", "--max_steps", "2",
                "--max_seq_length", "24", "--use_cpu", "--report_to", "none", "--eval_strategy", "no",
                "--save_strategy", "no"])
    return out


def test_each_column_is_tokenized_after_its_prompt(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(save_tiny_model(tmp_path / "bert", "bert"))
    raw = load_training_dataset(pair_file(tmp_path), cache_dir=tmp_path / "cache")
    roles = column_roles(raw)
    plain = tokenize_dataset(raw, tokenizer, max_seq_length=24, roles=roles)
    prompted = tokenize_dataset(raw, tokenizer, max_seq_length=24, roles=roles, prompts=["query: ", "passage: "])
    first = prompted[0]["input_ids"]
    expected = [tokenizer(f"query: {PAIRS[0][0]}")["input_ids"], tokenizer(f"passage: {PAIRS[0][1]}")["input_ids"]]
    assert [list(seq) for seq in first] == expected
    assert [list(seq) for seq in plain[0]["input_ids"]] == [tokenizer(t)["input_ids"] for t in PAIRS[0]]
    with pytest.raises(Exception, match="prompt\\(s\\) for 2 sentence column"):
        tokenize_dataset(raw, tokenizer, roles=roles, prompts=["query: "])


def test_the_prompts_are_saved_and_the_tool_applies_them(trained, monkeypatch):
    assert json.loads((trained / "config.json").read_text())["simcse_prompts"] == PROMPTS
    seen: list[str] = []
    original = SentenceEncoder.encode
    monkeypatch.setattr(SentenceEncoder, "encode", lambda self, texts: seen.extend(texts) or original(self, texts))
    tool = SimCSE(str(trained), device="cpu")
    assert tool.prompts == PROMPTS
    tool.build_index([b for _, b in PAIRS])
    assert seen == [f"passage: {b}" for _, b in PAIRS]
    seen.clear()
    tool.search(PAIRS[0][0], top_k=1)
    assert seen == [f"query: {PAIRS[0][0]}"]
    seen.clear()
    tool.similarity(PAIRS[0][0], PAIRS[1][0])  # symmetric: no prompt
    assert seen == [PAIRS[0][0], PAIRS[1][0]]
    with pytest.raises(Exception, match="prompt_name must be 'query' or 'document'"):
        tool.encode("x", prompt_name="passage")


def test_the_export_carries_the_prompts_to_sentence_transformers(trained, tmp_path):
    out = tmp_path / "st"
    convert_cli.main(["--path", str(trained), "--output_dir", str(out), "--sentence_transformers"])
    peer = load_st(out)
    assert peer.prompts == PROMPTS
    tool = SimCSE(str(trained), device="cpu")
    text = [PAIRS[2][0]]
    np.testing.assert_allclose(peer.encode_query(text), tool.encode(text, prompt_name="query",
                                                                    normalize_to_unit=False).numpy(), atol=1e-5)
    np.testing.assert_allclose(peer.encode_document(text), tool.encode(text, prompt_name="document",
                                                                       normalize_to_unit=False).numpy(), atol=1e-5)


def test_evaluation_uses_the_saved_prompts_unless_told_otherwise(trained, tmp_path, capsys):
    folder = REPO / "tests" / "fixtures" / "beir_tiny"
    out = tmp_path / "r.json"
    evaluation.main(["--model_name_or_path", str(trained), "--pooler", "cls", "--task_set", "custom",
                     "--custom_retrieval", f"{folder}:tiny", "--output_json", str(out)])
    assert "the checkpoint's prompts: query 'query: ', document 'passage: '" in capsys.readouterr().err
    saved = json.loads(out.read_text())["results"]["custom_retrieval"]["tiny"]["metrics"]
    encoder = build_encoder(str(trained), "cls")
    assert saved == RetrievalEvaluator(folder, name="tiny", query_prompt="query: ", document_prompt="passage: ")(
        encoder)
    evaluation.main(["--model_name_or_path", str(trained), "--pooler", "cls", "--task_set", "custom",
                     "--custom_retrieval", f"{folder}:tiny", "--query_prompt", "", "--document_prompt", "",
                     "--output_json", str(out)])
    plain = json.loads(out.read_text())["results"]["custom_retrieval"]["tiny"]["metrics"]
    assert plain == RetrievalEvaluator(folder, name="tiny")(build_encoder(str(trained), "cls"))
