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
from helpers import save_tiny_model, write_sts_tree
from simcse.cli import run_cli
from simcse.modeling.backbones import model_class_for
from simcse.modeling.models import configure

SENTENCES = ["a man is playing a guitar .", "the cat sat", "stocks fell sharply on monday after the report"]


def make_checkpoint(root: Path, model_type: str, pooler: str, safe: bool = True) -> Path:
    base = save_tiny_model(root / f"base-{model_type}", model_type)
    config = configure(AutoConfig.from_pretrained(base), pooler_type=pooler, mlp_only_train=False)
    torch.manual_seed(1)
    model = model_class_for(model_type).from_pretrained(base, config=config)
    if pooler == "cls":  # the MLP head exists for the cls pooler only
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
    assert report["dropped"] == []  # no MLP head is built for the wavg pooler
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


def write_original_layout(ours: Path, target: Path, model_type: str) -> Path:
    """The same weights as ``ours``, laid out as the original code (transformers 4.2.1) wrote them:
    pytorch_model.bin with position_ids / attn.bias buffers, the original MLM head names and tied
    decoder copies, and a config without our SimCSE settings (GPT-2 keeps its pooler: cls is invalid)."""
    import json
    import shutil

    state = dict(load_file(ours / "model.safetensors"))
    original = {}
    for key, tensor in state.items():
        if model_type == "bert" and key.startswith("cls.predictions."):
            key = "lm_head." + key[len("cls.predictions."):]
        original[key] = tensor.clone()
    if model_type in ("bert", "roberta"):
        original[f"{model_type}.embeddings.position_ids"] = torch.arange(128)[None]
    if "lm_head.bias" in original:
        original["lm_head.decoder.weight"] = original[f"{model_type}.embeddings.word_embeddings.weight"]
        original["lm_head.decoder.bias"] = original["lm_head.bias"]
    if model_type == "gpt2":
        for layer in range(2):
            original[f"transformer.h.{layer}.attn.bias"] = torch.tril(torch.ones(128, 128))[None, None]
            original[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    target.mkdir(parents=True)
    torch.save(original, target / "pytorch_model.bin")
    config = json.loads((ours / "config.json").read_text())
    if model_type != "gpt2":
        for key in ("pooler_type", "mlp_only_train", "temp", "do_mlm"):
            config.pop(key, None)
    (target / "config.json").write_text(json.dumps(config))
    for path in ours.iterdir():
        if path.name not in ("config.json", "model.safetensors"):
            shutil.copy2(path, target / path.name)
    return target


@pytest.mark.parametrize("model_type", ["bert", "roberta", "gpt2"])
def test_original_checkpoint_converts_and_encodes_like_ours(tmp_path, model_type):
    base = save_tiny_model(tmp_path / "base", model_type)
    pooler = "avg" if model_type == "gpt2" else "cls"
    config = configure(AutoConfig.from_pretrained(base), pooler_type=pooler, do_mlm=model_type != "gpt2")
    torch.manual_seed(1)
    model = model_class_for(model_type).from_pretrained(base, config=config)
    with torch.no_grad():  # non-trivial heads, so a re-initialised or misplaced head would show
        for name, param in model.named_parameters():
            if not name.startswith(model.base_model_prefix + "."):
                param.normal_(0, 0.5)
    ours = tmp_path / "ours"
    model.save_pretrained(ours)
    AutoTokenizer.from_pretrained(base).save_pretrained(ours)
    original = write_original_layout(ours, tmp_path / "original", model_type)

    a, b = tmp_path / "ours-hf", tmp_path / "original-hf"
    report_a = convert_cli.main(["--path", str(ours), "--output_dir", str(a)])
    report_b = convert_cli.main(["--path", str(original), "--output_dir", str(b)])
    assert report_a["keys"] == report_b["keys"]
    sa, sb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    inputs = batch(ours)
    with torch.no_grad():
        ea = AutoModel.from_pretrained(a).eval()(**inputs).last_hidden_state
        eb = AutoModel.from_pretrained(b).eval()(**inputs).last_hidden_state
    assert torch.equal(ea, eb)

    # The training loader takes the original's MLM head instead of re-initialising it.
    reload_config = configure(AutoConfig.from_pretrained(original), pooler_type=pooler, do_mlm=model_type != "gpt2")
    loaded = model_class_for(model_type).from_pretrained(original, config=reload_config)
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[key]), key


def test_original_checkpoint_with_an_unknown_key_is_rejected(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path, "bert", "cls")
    original = write_original_layout(ckpt, tmp_path / "original", "bert")
    state = torch.load(original / "pytorch_model.bin", weights_only=True)
    state["classifier.weight"] = torch.zeros(2, 32)
    torch.save(state, original / "pytorch_model.bin")
    code = run_cli(convert_cli.main, ["--path", str(original)], prog="convert")
    assert code == 2 and "unexpected key 'classifier.weight'" in capsys.readouterr().err
