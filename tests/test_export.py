"""simcse_to_huggingface.py --sentence_transformers: SentenceTransformer(exported).encode(x) equals
SimCSE(checkpoint).encode(x, normalize_to_unit=False) for every pooler, in the files ST itself reads."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_tool import make_checkpoint

import simcse_to_huggingface as convert_cli
from helpers import require_module, save_tiny_model, slow_except_first
from simcse import SimCSE
from simcse.cli import run_cli

sentence_transformers = require_module("sentence_transformers")

# different lengths, so every batch carries padding
SENTENCES = ["a man is playing a guitar .", "the cat sat", "stocks fell sharply on monday after the report",
             "hello", "two dogs run through a grassy field while a child watches from the porch"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {t: save_tiny_model(root / t, t) for t in ("bert", "roberta", "gpt2")}


def export(tmp_path: Path, bases: dict, model_type: str, pooler: str, mlp_only_train: bool = False):
    ckpt = make_checkpoint(tmp_path / "ckpt", model_type, pooler, mlp_only_train, base=bases[model_type])
    out = tmp_path / "st"
    report = convert_cli.main(["--path", str(ckpt), "--output_dir", str(out), "--sentence_transformers"])
    return ckpt, out, report


def load_st(path: Path):
    """SentenceTransformer(path), failing on any warning it emits while reading our files."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("sentence_transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model = sentence_transformers.SentenceTransformer(str(path), device="cpu")
    finally:
        logger.removeHandler(handler)
    assert not records, [r.getMessage() for r in records]
    return model


CASES = [  # (model type, trained pooler, mlp_only_train, inference pooler, ST modules after the Transformer)
    ("bert", "cls", False, "cls", ["Pooling", "Dense"]),
    ("bert", "cls", True, "cls_before_pooler", ["Pooling"]),
    ("bert", "cls_before_pooler", False, "cls_before_pooler", ["Pooling"]),
    ("bert", "avg", False, "avg", ["Pooling"]),
    ("bert", "avg_top2", True, "avg_top2", ["WeightedLayerPooling", "Pooling"]),
    ("bert", "avg_first_last", False, "avg_first_last", ["WeightedLayerPooling", "Pooling"]),
    ("roberta", "cls", False, "cls", ["Pooling", "Dense"]),
    ("gpt2", "wavg", True, "wavg", ["Pooling"]),
    ("gpt2", "last", False, "last", ["Pooling"]),
]


@pytest.mark.parametrize("model_type, trained, mlp_only_train, pooler, modules", slow_except_first(
    CASES, [f"{c[0]}-{c[1]}{'-mlp_only_train' if c[2] else ''}" for c in CASES]))
def test_sentence_transformers_parity(tmp_path, bases, model_type, trained, mlp_only_train, pooler, modules):
    ckpt, out, report = export(tmp_path, bases, model_type, trained, mlp_only_train)
    assert report["sentence_transformers"]["pooler"] == pooler
    assert report["sentence_transformers"]["modules"] == ["Transformer", *modules]
    ours = SimCSE(str(ckpt), device="cpu")
    assert ours.pooler == pooler
    expected = ours.encode(SENTENCES, normalize_to_unit=False).numpy()
    peer = load_st(out)
    assert [type(m).__name__ for m in peer] == ["Transformer", *modules]  # no Normalize
    np.testing.assert_allclose(peer.encode(SENTENCES, batch_size=2), expected, rtol=1e-5, atol=1e-5)
    # the exported directory is also a valid input for the tool, with the same pooler and vectors
    again = SimCSE(str(out), device="cpu")
    assert (again.pooler, again.pooler_source) == (pooler, "config")
    np.testing.assert_allclose(again.encode(SENTENCES, normalize_to_unit=False).numpy(), expected, rtol=1e-5,
                               atol=1e-5)


def test_files_hold_the_pooling_mode_and_the_mlp_head(tmp_path, bases):
    ckpt, out, _ = export(tmp_path, bases, "bert", "cls")
    modules = json.loads((out / "modules.json").read_text())
    assert [(m["path"], m["type"]) for m in modules] == [
        ("", "sentence_transformers.models.Transformer"),
        ("1_Pooling", "sentence_transformers.models.Pooling"),
        ("2_Dense", "sentence_transformers.models.Dense"),
    ]
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == 32 and pooling["pooling_mode_cls_token"] is True
    assert not any(v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_cls_token")
    dense = json.loads((out / "2_Dense" / "config.json").read_text())
    assert dense == {"in_features": 32, "out_features": 32, "bias": True,
                     "activation_function": "torch.nn.modules.activation.Tanh"}
    head = load_file(out / "2_Dense" / "model.safetensors")
    trained = load_file(ckpt / "model.safetensors")
    assert torch.equal(head["linear.weight"], trained["mlp.dense.weight"])
    assert torch.equal(head["linear.bias"], trained["mlp.dense.bias"])
    assert json.loads((out / "sentence_bert_config.json").read_text()) == {"max_seq_length": 128,
                                                                          "do_lower_case": False}
    peer = load_st(out)
    assert peer.max_seq_length == 128 and peer.similarity_fn_name == "cosine"
    assert peer[1].pooling_mode == "cls" and isinstance(peer[2].activation_function, torch.nn.Tanh)


def test_layer_mix_weights_and_hidden_states_flag(tmp_path, bases):
    _, out, _ = export(tmp_path, bases, "bert", "avg_first_last")
    layer = json.loads((out / "1_WeightedLayerPooling" / "config.json").read_text())
    assert layer == {"word_embedding_dimension": 32, "layer_start": 1, "num_hidden_layers": 2}
    weights = load_file(out / "1_WeightedLayerPooling" / "model.safetensors")["layer_weights"]
    assert weights.tolist() == [1.0, 1.0]  # 2 layers: (h[1] + h[2]) / 2
    assert json.loads((out / "config.json").read_text())["output_hidden_states"] is True
    assert json.loads((out / "2_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True


def test_truncation_length_is_written_and_used(tmp_path, bases):
    ckpt = make_checkpoint(tmp_path / "ckpt", "bert", "avg", base=bases["bert"])
    out = tmp_path / "st"
    convert_cli.main(["--path", str(ckpt), "--output_dir", str(out), "--sentence_transformers",
                      "--max_seq_length", "6"])
    long = [SENTENCES[-1]]
    expected = SimCSE(str(ckpt), device="cpu").encode(long, max_length=6, normalize_to_unit=False).numpy()
    np.testing.assert_allclose(load_st(out).encode(long), expected, rtol=1e-5, atol=1e-5)


def test_errors_come_before_anything_is_written(tmp_path, bases, capsys):
    ckpt = make_checkpoint(tmp_path / "ckpt", "bert", "cls", base=bases["bert"])
    out = tmp_path / "st"
    code = run_cli(convert_cli.main, ["--path", str(ckpt), "--output_dir", str(out), "--sentence_transformers",
                                      "--max_seq_length", "1000"], prog="convert")
    assert code == 2 and "--max_seq_length 1000 exceeds this model's limit of 128 positions" in capsys.readouterr().err
    assert not out.exists()
    plain = save_tiny_model(tmp_path / "plain", "bert")
    code = run_cli(convert_cli.main, ["--path", str(plain), "--output_dir", str(out), "--sentence_transformers"],
                   prog="convert")
    assert code == 2 and "records no pooler_type" in capsys.readouterr().err
    assert not out.exists()
