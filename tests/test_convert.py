"""simcse_to_huggingface.py: parity of the converted model, GPT-2 safety, input never touched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

import evaluation
import simcse_to_huggingface as convert_cli
from conftest import save_tiny_model, write_sts_tree
from simcse.cli import run_cli
from simcse.models import configure, model_class_for

SENTENCES = ["a man is playing a guitar .", "the cat sat", "stocks fell sharply on monday after the report"]


def make_checkpoint(root: Path, model_type: str, pooler: str, safe: bool = True) -> Path:
    base = save_tiny_model(root / f"base-{model_type}", model_type)
    config = configure(AutoConfig.from_pretrained(base), pooler_type=pooler, mlp_only_train=False)
    torch.manual_seed(1)
    model = model_class_for(model_type).from_pretrained(base, config=config)
    with torch.no_grad():  # a non-trivial head, so a dropped or misplaced head would show
        model.mlp.dense.weight.normal_(0, 0.5)
        model.mlp.dense.bias.normal_(0, 0.5)
    ckpt = root / f"ckpt-{model_type}"
    model.save_pretrained(ckpt, safe_serialization=safe)
    AutoTokenizer.from_pretrained(base).save_pretrained(ckpt)
    return ckpt


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def batch(path: Path):
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok(SENTENCES, padding=True, return_tensors="pt")


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_bert_parity_pooler_output_is_cls_and_cls_before_pooler(tmp_path, safe):
    ckpt = make_checkpoint(tmp_path, "bert", "cls", safe=safe)
    before = digest(ckpt)
    out = tmp_path / "converted"
    convert_cli.main(["--path", str(ckpt), "--output_dir", str(out)])
    assert digest(ckpt) == before  # the input is never modified

    ours = model_class_for("bert").from_pretrained(ckpt).eval()
    plain = AutoModel.from_pretrained(out).eval()
    assert type(plain).__name__ == "BertModel" and (out / "model.safetensors").is_file()
    inputs = batch(ckpt)
    with torch.no_grad():
        hf = plain(**inputs)
        cls = ours.encode(inputs["input_ids"], inputs["attention_mask"])  # cls pooler with the MLP head
        ours.config.pooler_type = "cls_before_pooler"
        before_pooler = ours.encode(inputs["input_ids"], inputs["attention_mask"])
    torch.testing.assert_close(hf.pooler_output, cls, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hf.last_hidden_state[:, 0], before_pooler, rtol=1e-5, atol=1e-6)


def test_gpt2_keys_are_untouched(tmp_path):
    ckpt = make_checkpoint(tmp_path, "gpt2", "wavg")
    out = tmp_path / "gpt2-hf"
    report = convert_cli.main(["--path", str(ckpt), "--output_dir", str(out)])
    source = load_file(ckpt / "model.safetensors")
    converted = load_file(out / "model.safetensors")
    expected = {k[len("transformer."):] for k in source if k.startswith("transformer.")}
    assert set(converted) == expected and "h.0.mlp.c_fc.weight" in converted  # '.mlp.' inside blocks survives
    assert sorted(report["dropped"]) == ["mlp.dense.bias", "mlp.dense.weight"]
    for key in expected:
        assert torch.equal(converted[key], source["transformer." + key])


def test_evaluation_reads_training_checkpoints_directly(tmp_path):
    """evaluation.py on the training checkpoint and on its conversion gives the same numbers."""
    ckpt = make_checkpoint(tmp_path, "bert", "cls")
    out = tmp_path / "converted"
    convert_cli.main(["--path", str(ckpt), "--output_dir", str(out)])
    data = write_sts_tree(tmp_path / "data")
    common = ["--senteval_data", str(data), "--task_set", "na", "--tasks", "STSBenchmark", "SICKRelatedness"]
    for pooler in ("cls", "cls_before_pooler"):
        a = evaluation.main(["--model_name_or_path", str(ckpt), "--pooler", pooler, *common])
        b = evaluation.main(["--model_name_or_path", str(out), "--pooler", pooler, *common])
        assert a["tables"] == b["tables"]


def test_refuses_to_overwrite_input_or_a_non_empty_output(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path, "bert", "cls")
    before = digest(ckpt)
    code = run_cli(convert_cli.main, ["--path", str(ckpt), "--output_dir", str(ckpt)], prog="convert")
    assert code == 2 and "input would be overwritten" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    code = run_cli(convert_cli.main, ["--path", str(ckpt), "--output_dir", str(busy)], prog="convert")
    assert code == 2 and "not empty" in capsys.readouterr().err and (busy / "x").read_text() == "x"
    assert digest(ckpt) == before


def test_plain_model_is_not_a_training_checkpoint(tmp_path, capsys):
    plain = save_tiny_model(tmp_path / "plain", "bert")
    code = run_cli(convert_cli.main, ["--path", str(plain)], prog="convert")
    assert code == 2 and "is not a SimCSE training checkpoint" in capsys.readouterr().err
