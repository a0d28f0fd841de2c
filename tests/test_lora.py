"""LoRA through peft (simcse.modeling.lora): only the adapters (and the MLP head) train, checkpoints hold
and restore them, gradient caching replays LoRA dropout exactly, and simcse_to_huggingface.py merges
them into a plain model that encodes like the adapter model."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_backbones import SENTENCES, tiny_wrapper, token_batch, train_args, write_sentences
from test_gradcache import assert_same, cached, reference

import simcse_to_huggingface as convert_cli
import train
from helpers import save_tiny_model
from simcse import SimCSE
from simcse.errors import SimCSEError
from simcse.losses import build_loss
from simcse.modeling.lora import apply_lora, lora_settings

CASES = [("bert", "cls"), ("qwen2", "last")]  # one encoder, one decoder


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    return {t: save_tiny_model(root / t, t) for t, _ in CASES}


@pytest.mark.parametrize("model_type, pooler", CASES, ids=[t for t, _ in CASES])
def test_only_adapters_and_head_train_and_the_merged_model_encodes_alike(bases, tmp_path, model_type, pooler, caplog):
    out = tmp_path / "ckpt"
    with caplog.at_level(logging.INFO, logger="simcse.training.run"):
        train.main(train_args(bases[model_type], write_sentences(tmp_path), out, pooler, "--max_steps", "2",
                              "--lora_r", "4", "--lora_dropout", "0.1"))
    counted = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trains ")]
    assert len(counted) == 1 and "LoRA r=4, alpha=8" in counted[0], counted
    saved = json.loads((out / "config.json").read_text())["simcse_lora"]
    target = ["query", "value"] if model_type == "bert" else ["q_proj", "v_proj"]
    assert saved == {"r": 4, "alpha": 8.0, "dropout": 0.1, "target_modules": target}
    start, after = load_file(bases[model_type] / "model.safetensors"), load_file(out / "model.safetensors")
    prefix = "bert." if model_type == "bert" else "model."
    frozen = {k.replace(".base_layer", ""): v for k, v in after.items() if "lora_" not in k and k.startswith(prefix)}
    assert all(torch.equal(start[k], frozen[prefix + k]) for k in start if prefix + k in frozen)
    assert any(after[k].abs().max() > 0 for k in after if "lora_B" in k)  # B starts at 0: the adapters moved
    trained = SimCSE(str(out), device="cpu").encode(SENTENCES, normalize_to_unit=False).numpy()
    plain = tmp_path / "plain"
    convert_cli.main(["--path", str(out), "--output_dir", str(plain)])
    assert not any("lora_" in k for k in load_file(plain / "model.safetensors"))
    assert "simcse_lora" not in json.loads((plain / "config.json").read_text())
    merged = SimCSE(str(plain), device="cpu", pooler=pooler).encode(SENTENCES, normalize_to_unit=False).numpy()
    np.testing.assert_allclose(merged, trained, rtol=1e-5, atol=1e-5)


def test_resume_restores_the_adapters(bases, tmp_path):
    data = write_sentences(tmp_path)
    # constant learning rate: the cut run's schedule (over 1 step) would otherwise differ from the whole one's
    flags = ["--lora_r", "4", "--save_strategy", "steps", "--save_steps", "1", "--lr_scheduler_type", "constant"]
    train.main(train_args(bases["qwen2"], data, tmp_path / "whole", "last", "--max_steps", "2", *flags))
    train.main(train_args(bases["qwen2"], data, tmp_path / "cut", "last", "--max_steps", "1", *flags))
    train.main(train_args(bases["qwen2"], data, tmp_path / "cut", "last", "--max_steps", "2", *flags,
                          "--resume_from_checkpoint", str(tmp_path / "cut" / "checkpoint-1")))
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    resumed = load_file(tmp_path / "cut" / "model.safetensors")
    assert whole.keys() == resumed.keys() and any("lora_A" in k for k in whole)
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize("model_type, pooler", CASES, ids=[t for t, _ in CASES])
def test_gradient_caching_replays_lora_dropout(bases, model_type, pooler):
    model = tiny_wrapper(bases[model_type], pooler, dropout=0.1).train()
    apply_lora(model, lora_settings(model_type, 4, dropout=0.3))
    loss_fn, inputs = build_loss("infonce"), token_batch(bases[model_type])
    with torch.no_grad():  # B starts at zero: make the adapters matter, so their dropout changes the loss
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    result = cached(model, inputs, loss_fn)
    assert any("lora_A" in name for name in result[1]) and not any("query.base_layer" in n for n in result[1])
    assert_same(result, reference(model, inputs, loss_fn))


def test_bad_lora_settings_are_refused(bases, tmp_path):
    data = write_sentences(tmp_path)
    with pytest.raises(SimCSEError, match="`lora_target_modules` nope matches no layer .*its Linear layers: .*query"):
        train.main(train_args(bases["bert"], data, tmp_path / "a", "cls", "--lora_r", "4",
                              "--lora_target_modules", "nope"))
    with pytest.raises(SimCSEError, match="`lora_alpha` / `lora_target_modules` need `lora_r`"):
        train.main(train_args(bases["bert"], data, tmp_path / "b", "cls", "--lora_alpha", "8"))
    with pytest.raises(SimCSEError, match="`lora_r` must be a positive rank, got 0"):
        train.main(train_args(bases["bert"], data, tmp_path / "c", "cls", "--lora_r", "0"))
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_gradient_checkpointing_trains_the_adapters_as_without_it(bases, tmp_path):
    """Frozen embeddings give checkpointed layers inputs without grad; the adapters must still get theirs."""
    data = write_sentences(tmp_path)
    for name, extra in (("plain", []), ("checkpointed", ["--gradient_checkpointing"])):
        train.main(train_args(bases["qwen2"], data, tmp_path / name, "last", "--max_steps", "2", "--lora_r", "4",
                              *extra))
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    checkpointed = load_file(tmp_path / "checkpointed" / "model.safetensors")
    assert any(plain[k].abs().max() > 0 for k in plain if "lora_B" in k)
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=0, atol=1e-6, msg=key)


def test_a_lora_checkpoint_goes_on_training_its_adapters_only(bases, tmp_path):
    data = write_sentences(tmp_path)
    train.main(train_args(bases["qwen2"], data, tmp_path / "first", "last", "--lora_r", "4"))
    train.main(train_args(tmp_path / "first", data, tmp_path / "second", "last"))  # no LoRA flags
    first = load_file(tmp_path / "first" / "model.safetensors")
    second = load_file(tmp_path / "second" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first if "lora_" not in k)  # the base stays frozen
    assert any(not torch.equal(first[k], second[k]) for k in first if "lora_" in k)
    assert json.loads((tmp_path / "second" / "config.json").read_text())["simcse_lora"]["r"] == 4


def test_lora_trains_under_bf16_autocast(bases, tmp_path):
    """bf16 mixed precision (CPU autocast here; CUDA takes the same path): the adapters train, the base stays."""
    out = tmp_path / "bf16"
    metrics = train.main(train_args(bases["qwen2"], write_sentences(tmp_path), out, "last", "--max_steps", "2",
                                    "--lora_r", "4", "--bf16"))
    assert np.isfinite(metrics["train_loss"])
    saved = load_file(out / "model.safetensors")
    assert any(saved[k].abs().max() > 0 for k in saved if "lora_B" in k)
    assert all(saved[k].dtype == torch.float32 for k in saved)  # master weights stay fp32
