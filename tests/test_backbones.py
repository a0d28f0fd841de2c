"""Any Hugging Face backbone: every family of helpers.FAMILIES (tiny random configs, the real tokenizers)
trains with every fitting pooler, converts and exports to identical encodings, and caches gradients
exactly; decoders pool correctly under left and right padding, end sentences with eos, and attend both
ways with --bidirectional. The first family of each table runs in the fast tier, the rest in the slow one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_export import load_st
from test_gradcache import assert_same, cached, reference
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

import simcse_to_huggingface as convert_cli
import train
from helpers import FAMILIES, REPO, save_tiny_model, slow_except_first
from simcse import SimCSE
from simcse.cli import run_cli
from simcse.errors import SimCSEError
from simcse.losses import build_loss
from simcse.modeling.backbones import make_bidirectional, model_class_for
from simcse.modeling.encoder import prepare_tokenizer
from simcse.modeling.models import configure
from simcse.modeling.poolers import is_decoder, valid_poolers

SENTENCES = ["a man is playing a guitar .", "the cat sat", "stocks fell sharply on monday after the report",
             "hello", "two dogs run through a grassy field while a child watches from the porch"]
DECODERS = ("gpt2", "qwen2", "llama", "mistral")
NEW_FAMILIES = [t for t in FAMILIES if t not in ("bert", "roberta", "gpt2")]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {t: save_tiny_model(root / t, t) for t in FAMILIES}


def write_sentences(tmp_path: Path) -> Path:
    path = tmp_path / "wiki.txt"
    path.write_text("\n".join(f"{s} number {i}" for i, s in enumerate(SENTENCES * 4)) + "\n", encoding="utf-8")
    return path


def train_args(base: Path, data: Path, out: Path, pooler: str, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(base), "--train_file", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--max_steps", "1", "--report_to", "none", "--use_cpu",
            "--save_strategy", "no", "--eval_strategy", "no", "--max_seq_length", "24", "--pooler_type", pooler,
            "--learning_rate", "1e-2", *extra]


def test_encoder_or_decoder_is_read_from_transformers_mappings():
    assert [t for t in FAMILIES if is_decoder(t)] == list(DECODERS)
    assert valid_poolers("qwen2") == ("avg", "wavg", "last") and "cls" in valid_poolers("mpnet")
    assert model_class_for("bert").__name__ == "BertForCL"  # the originals keep their key names
    assert model_class_for("qwen2").__name__ == "Qwen2ForCL" and model_class_for("qwen2").base_model_prefix == "model"


STEP_CASES = [(t, p) for t in [*NEW_FAMILIES, *("bert", "roberta", "gpt2")] for p in valid_poolers(t)]


@pytest.mark.parametrize("model_type, pooler", slow_except_first(STEP_CASES, [f"{t}-{p}" for t, p in STEP_CASES]))
def test_every_family_trains_a_step_with_every_fitting_pooler(bases, tmp_path, model_type, pooler):
    out = tmp_path / "out"
    metrics = train.main(train_args(bases[model_type], write_sentences(tmp_path), out, pooler))
    assert np.isfinite(metrics["train_loss"])
    before, after = load_file(bases[model_type] / "model.safetensors"), load_file(out / "model.safetensors")
    prefix = model_class_for(model_type).base_model_prefix + "."
    moved = [k for k, v in before.items() if prefix + k in after and not torch.equal(v, after[prefix + k])]
    assert moved, "no backbone weight moved"
    saved = AutoConfig.from_pretrained(out)
    assert saved.architectures == [model_class_for(model_type).__name__] and saved.pooler_type == pooler


EXPORT_CASES = [(t, "last" if is_decoder(t) else "avg") for t in FAMILIES] + [("mpnet", "cls"), ("qwen2", "wavg")]


@pytest.mark.parametrize("model_type, pooler", slow_except_first(EXPORT_CASES, [f"{t}-{p}" for t, p in EXPORT_CASES]))
def test_conversion_and_export_encode_like_the_checkpoint(bases, tmp_path, model_type, pooler):
    ckpt = tmp_path / "ckpt"
    train.main(train_args(bases[model_type], write_sentences(tmp_path), ckpt, pooler))
    expected = SimCSE(str(ckpt), device="cpu").encode(SENTENCES, normalize_to_unit=False).numpy()
    plain = tmp_path / "plain"
    convert_cli.main(["--path", str(ckpt), "--output_dir", str(plain)])
    converted = SimCSE(str(plain), device="cpu", pooler=pooler).encode(SENTENCES, normalize_to_unit=False).numpy()
    np.testing.assert_allclose(converted, expected, rtol=1e-5, atol=1e-5)
    st = tmp_path / "st"
    convert_cli.main(["--path", str(ckpt), "--output_dir", str(st), "--sentence_transformers"])
    np.testing.assert_allclose(load_st(st).encode(SENTENCES, batch_size=2), expected, rtol=1e-5, atol=1e-5)


def test_a_cls_head_without_a_pooling_layer_to_hold_it_is_refused_on_conversion(bases, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    train.main(train_args(bases["distilbert"], write_sentences(tmp_path), ckpt, "cls"))
    code = run_cli(convert_cli.main, ["--path", str(ckpt), "--output_dir", str(tmp_path / "p")],
                               prog="simcse_to_huggingface.py")
    assert code == 2 and "has no layer for; train with --mlp_only_train" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def tiny_wrapper(base: Path, pooler: str, dropout: float = 0.0):
    config = configure(AutoConfig.from_pretrained(base), pooler_type=pooler)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "dropout",
                "resid_pdrop", "embd_pdrop", "attn_pdrop", "embedding_dropout", "mlp_dropout"):
        if hasattr(config, key):
            setattr(config, key, dropout)
    torch.manual_seed(0)
    return model_class_for(config.model_type).from_pretrained(base, config=config)


def token_batch(base: Path, num_sent: int = 2) -> dict:
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(base), AutoConfig.from_pretrained(base).model_type)
    rows = tokenizer(SENTENCES[:4] * 2, padding=True, return_tensors="pt")
    ids, mask = rows["input_ids"], rows["attention_mask"]  # (8, L): 8 examples of num_sent sentences
    return {"input_ids": ids.unsqueeze(1).repeat(1, num_sent, 1),
            "attention_mask": mask.unsqueeze(1).repeat(1, num_sent, 1)}


GRADCACHE_CASES = [(t, "last" if is_decoder(t) else "cls") for t in [*NEW_FAMILIES, *("bert", "roberta", "gpt2")]]


@pytest.mark.parametrize("model_type, pooler",
                         slow_except_first(GRADCACHE_CASES, [f"{t}-{p}" for t, p in GRADCACHE_CASES]))
def test_gradient_caching_equals_one_backward_with_dropout_on(bases, model_type, pooler):
    model = tiny_wrapper(bases[model_type], pooler, dropout=0.1).train()
    loss_fn, inputs = build_loss("infonce"), token_batch(bases[model_type])
    assert_same(cached(model, inputs, loss_fn), reference(model, inputs, loss_fn))


@pytest.mark.parametrize("model_type", slow_except_first(list(DECODERS), list(DECODERS)))
@pytest.mark.parametrize("pooler", ["last", "avg", "wavg"])
def test_decoders_embed_left_padding_as_right_padding(bases, model_type, pooler):
    model = tiny_wrapper(bases[model_type], pooler).eval()
    right = token_batch(bases[model_type], num_sent=1)
    ids, mask = right["input_ids"][:, 0], right["attention_mask"][:, 0]
    left_ids, left_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for row in range(ids.shape[0]):  # the same tokens moved to the end of the row
        n = int(mask[row].sum())
        left_ids[row, ids.shape[1] - n:], left_mask[row, ids.shape[1] - n:] = ids[row, :n], 1
        left_ids[row, :ids.shape[1] - n] = ids[row, n:]  # padding ids, never attended
    with torch.no_grad():
        torch.testing.assert_close(model.encode(left_ids, left_mask), model.encode(ids, mask), rtol=1e-5, atol=1e-5)


def test_decoders_end_each_sentence_with_eos_except_gpt2(bases, tmp_path):
    for model_type in ("qwen2", "llama", "mistral"):
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(bases[model_type]), model_type)
        eos = tokenizer.eos_token_id
        assert tokenizer("a man")["input_ids"][-1] == eos
        assert tokenizer(["word " * 50], truncation=True, max_length=8)["input_ids"][0][-1] == eos  # kept
        assert prepare_tokenizer(tokenizer, model_type)("a man")["input_ids"].count(eos) == 1  # idempotent
        tokenizer.save_pretrained(tmp_path / model_type)  # what a checkpoint carries
        assert AutoTokenizer.from_pretrained(tmp_path / model_type)("a man")["input_ids"][-1] == eos
    gpt2 = prepare_tokenizer(AutoTokenizer.from_pretrained(bases["gpt2"]), "gpt2")
    assert gpt2("a man")["input_ids"][-1] != gpt2.eos_token_id  # SimCSE's GPT-2 setting: the bare sentence
    assert gpt2.pad_token == gpt2.eos_token


@pytest.mark.parametrize("model_type", slow_except_first(list(DECODERS), list(DECODERS)))
def test_bidirectional_lets_an_early_token_see_a_later_one(bases, model_type):
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 9]])
    mask = torch.ones_like(ids)
    causal = tiny_wrapper(bases[model_type], "avg").eval()
    with torch.no_grad():
        first = causal._run_backbone(ids, mask).last_hidden_state[:, 0]
    assert torch.allclose(first[0], first[1])
    config = configure(AutoConfig.from_pretrained(bases[model_type]), pooler_type="avg")
    make_bidirectional(config)
    both = model_class_for(model_type).from_pretrained(bases[model_type], config=config).eval()
    with torch.no_grad():
        first = both._run_backbone(ids, mask).last_hidden_state[:, 0]
    assert not torch.allclose(first[0], first[1])


def test_bidirectional_is_saved_and_refused_for_encoders(bases, tmp_path, capsys):
    out = tmp_path / "out"
    train.main(train_args(bases["qwen2"], write_sentences(tmp_path), out, "last", "--bidirectional"))
    assert json.loads((out / "config.json").read_text())["is_causal"] is False
    with pytest.raises(SimCSEError, match="`bidirectional` applies to decoders; 'bert' is an encoder"):
        train.main(train_args(bases["bert"], write_sentences(tmp_path), tmp_path / "b", "avg", "--bidirectional"))


MLM_CASES = [t for t in NEW_FAMILIES if not is_decoder(t)]


@pytest.mark.parametrize("model_type", slow_except_first(MLM_CASES))
def test_the_mlm_head_is_the_family_masked_lm_head(bases, tmp_path, model_type):
    """--do_mlm on any encoder: the MLM head of the family's masked-LM checkpoint loads under its own names
    (nothing missing), its decoder stays tied to the input embeddings, our MLM term equals the masked-LM
    class's own loss on the same inputs, and train.py trains with it and converts it away."""
    torch.manual_seed(0)
    masked_lm = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(bases[model_type])).eval()
    with torch.no_grad():  # the head's biases start at zero: make them count
        for name, param in masked_lm.named_parameters():
            if name.endswith("bias") and not name.startswith(masked_lm.base_model_prefix + "."):
                param.normal_()
    masked_lm.save_pretrained(tmp_path / "mlm")
    AutoTokenizer.from_pretrained(bases[model_type]).save_pretrained(tmp_path / "mlm")
    config = configure(AutoConfig.from_pretrained(tmp_path / "mlm"), pooler_type="avg", do_mlm=True)
    ours, info = model_class_for(model_type).from_pretrained(tmp_path / "mlm", config=config,
                                                             output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    words = ours.backbone.get_input_embeddings().weight
    assert sum(p is words for _, p in ours.named_parameters(remove_duplicate=False)) == 2  # the tied decoder
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (4, 2, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :, 7:] = 0
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, -100).masked_fill(mask == 0, -100)
    mlm_ids = torch.where(labels != -100, 103, ids)
    with torch.no_grad():
        term = ours.eval()(input_ids=ids, attention_mask=mask, mlm_input_ids=mlm_ids, mlm_labels=labels).mlm_loss
        expected = masked_lm(input_ids=mlm_ids.flatten(0, 1), attention_mask=mask.flatten(0, 1),
                             labels=labels.flatten(0, 1)).loss
    assert term.item() > 1.0
    torch.testing.assert_close(term, expected, rtol=1e-5, atol=1e-5)

    out = tmp_path / "out"
    metrics = train.main(train_args(tmp_path / "mlm", write_sentences(tmp_path), out, "avg", "--do_mlm"))
    assert np.isfinite(metrics["train_loss"])
    head = {k: v for k, v in load_file(out / "model.safetensors").items() if k in dict(masked_lm.state_dict())
            and not k.startswith(masked_lm.base_model_prefix + ".")}
    assert head, "the MLM head was not saved"
    reloaded = model_class_for(model_type).from_pretrained(out)
    assert sum(p is reloaded.backbone.get_input_embeddings().weight
               for _, p in reloaded.named_parameters(remove_duplicate=False)) == 2
    report = convert_cli.main(["--path", str(out), "--output_dir", str(tmp_path / "plain")])
    assert set(report["dropped"]) >= set(head)


def test_do_mlm_is_refused_for_a_decoder(bases, tmp_path):
    with pytest.raises(SimCSEError, match="`do_mlm` needs a masked-LM head, which qwen2 \\(a decoder\\) has none"):
        train.main(train_args(bases["qwen2"], write_sentences(tmp_path), tmp_path / "o", "last", "--do_mlm"))



def backbone_table() -> str:
    """The README's supported-backbone table, from the case lists of these tests, tests/test_torchrun.py and
    tests/test_lora.py (a family appears with what is proven for it, nothing typed by hand)."""
    from test_lora import CASES as LORA_CASES
    from test_models import HAND_WRITTEN_MLM
    from test_torchrun import CASES as TORCHRUN_CASES

    def mark(flag: bool) -> str:
        return "yes" if flag else "-"

    rows = ["| model type | kind | test tokenizer | poolers, each trained a step | 2 processes = 1 | gradient "
            "caching exact | conversion + ST export | LoRA | MLM head |", "|---|---|---|---|---|---|---|---|---|"]
    for model_type, (tokenizer, _) in FAMILIES.items():
        poolers = [p for t, p in STEP_CASES if t == model_type]
        cached_in = {t for t, _ in GRADCACHE_CASES} | {t for t, _, extra in TORCHRUN_CASES
                                                       if "--grad_cache_mini_batch" in extra}
        rows.append(f"| {model_type} | {'decoder' if is_decoder(model_type) else 'encoder'} | {tokenizer} | "
                    f"{', '.join(poolers)} | {mark(any(t == model_type for t, _, _ in TORCHRUN_CASES))} | "
                    f"{mark(model_type in cached_in)} | {mark(any(t == model_type for t, _ in EXPORT_CASES))} | "
                    f"{mark(any(t == model_type for t, _ in LORA_CASES))} | "
                    f"{mark(model_type in (*MLM_CASES, *HAND_WRITTEN_MLM))} |")
    return "\n".join(rows)


def test_the_readme_backbone_table_is_what_the_tests_cover():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- backbones: python tests/test_backbones.py -->\n", "\n<!-- /backbones -->"
    assert start in readme and end in readme, "README.md lacks the backbone table markers"
    assert readme[readme.index(start) + len(start):readme.index(end)] == backbone_table(), \
        "the README's backbone table is stale: regenerate it with python tests/test_backbones.py"


if __name__ == "__main__":
    print(backbone_table())
