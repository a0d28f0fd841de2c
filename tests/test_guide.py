"""The guide encoder of GISTEmbed (simcse/modeling/guide.py) and guided training through train.py."""

from __future__ import annotations

import math

import pytest
import torch
from test_train import SENTENCES, base_args, write_train_file
from transformers import AutoTokenizer

import train
from helpers import save_tiny_model, slow_except_first
from simcse.data import SimCSECollator, load_training_dataset, tokenize_dataset
from simcse.errors import SimCSEError
from simcse.modeling.encoder import build_encoder
from simcse.modeling.guide import GuideEncoder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("guides")
    return {kind: save_tiny_model(root / kind, kind, seed=3) for kind in ("bert", "roberta")}


@pytest.fixture(scope="module")
def st_guide(models, tmp_path_factory):
    """A sentence-transformers model directory (modules.json): the tiny BERT with mean pooling, normalised."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    body = Transformer(str(models["bert"]), max_seq_length=64)
    model = SentenceTransformer(modules=[body, Pooling(body.get_word_embedding_dimension(), "mean"), Normalize()])
    path = tmp_path_factory.mktemp("st") / "guide"
    model.save(str(path))
    return path


def _batch(models, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(models["bert"])
    data = tokenize_dataset(load_training_dataset(write_train_file(tmp_path, 2), cache_dir=tmp_path / "c"), tokenizer)
    return tokenizer, SimCSECollator(tokenizer)(data.__getitems__(list(range(4))))


def test_a_guide_with_the_same_vocabulary_embeds_the_batch_ids(models, tmp_path):
    tokenizer, batch = _batch(models, tmp_path)
    guide = GuideEncoder(str(models["bert"]), tokenizer, pooler_type="avg")
    assert guide.same_vocabulary
    got = guide(batch)
    assert got.shape == (4, 2, 32) and not got.requires_grad
    expected = build_encoder(str(models["bert"]), "avg").encode(SENTENCES[:4] + [s.replace("number", "no.")
                                                                                for s in SENTENCES[:4]])
    torch.testing.assert_close(got.transpose(0, 1).reshape(8, 32), expected, rtol=1e-5, atol=1e-5)


def test_a_guide_with_another_tokenizer_re_tokenizes_the_decoded_text(models, tmp_path):
    tokenizer, batch = _batch(models, tmp_path)
    guide = GuideEncoder(str(models["roberta"]), tokenizer, pooler_type="avg")
    assert not guide.same_vocabulary
    got = guide(batch)
    # The text the guide sees is the training tokenizer's (uncased) view of each sentence.
    texts = tokenizer.batch_decode(batch["input_ids"].reshape(8, -1), skip_special_tokens=True)
    expected = build_encoder(str(models["roberta"]), "avg").encode(texts)
    torch.testing.assert_close(got.reshape(8, 32), expected, rtol=1e-5, atol=1e-5)


def test_a_sentence_transformers_guide_uses_its_own_pooling(models, st_guide, tmp_path):
    tokenizer, batch = _batch(models, tmp_path)
    got = GuideEncoder(str(st_guide), tokenizer)(batch)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(4, 2))  # its Normalize module ran
    plain = GuideEncoder(str(models["bert"]), tokenizer, pooler_type="avg")(batch)
    torch.testing.assert_close(got, torch.nn.functional.normalize(plain, dim=-1), rtol=1e-5, atol=1e-5)


GIST_CASES = [(c, e) for e in ([], ["--grad_cache_mini_batch", "3"]) for c in (1, 3)]


@pytest.mark.parametrize("columns, extra", slow_except_first(
    GIST_CASES, [f"{c}-{'gradcache' if e else 'plain'}" for c, e in GIST_CASES]))
def test_gist_trains_with_the_guide_run_once_per_batch(models, st_guide, tmp_path, monkeypatch, columns, extra):
    import simcse.losses.gist as gist

    calls, seen = [], []
    original_call, original_loss = GuideEncoder.__call__, gist.gist_loss

    def counting(self, inputs):
        calls.append(inputs["input_ids"].shape)
        return original_call(self, inputs)

    def recording(z1, z2, z3, guide, **kwargs):
        seen.append((z1.shape, guide.shape, guide.requires_grad))
        return original_loss(z1, z2, z3, guide, **kwargs)

    monkeypatch.setattr(GuideEncoder, "__call__", counting)
    monkeypatch.setattr(gist, "gist_loss", recording)
    args = base_args(models["bert"], write_train_file(tmp_path, columns), tmp_path / "out", "--loss_type", "gist",
                     "--guide_model", str(st_guide), *extra)
    args[args.index("--max_steps") + 1] = "2"
    args[args.index("--per_device_train_batch_size") + 1] = "6"
    assert math.isfinite(train.main(args)["train_loss"])
    num_sent = 2 if columns == 1 else 3
    assert calls == [torch.Size([6, num_sent, calls[0][-1]])] * 2  # once per batch, the whole batch
    assert [(tuple(z), tuple(g), grad) for z, g, grad in seen] == [((6, 32), (6, num_sent, 32), False)] * 2


def test_guide_flags_must_match_the_loss(models, tmp_path):
    data = write_train_file(tmp_path, 2)
    with pytest.raises(SimCSEError, match="`loss_type` gist needs a frozen guide encoder: add `guide_model`"):
        train.main(base_args(models["bert"], data, tmp_path / "a", "--loss_type", "gist"))
    with pytest.raises(SimCSEError, match="`guide_model` is used by guided losses only \\(gist\\)"):
        train.main(base_args(models["bert"], data, tmp_path / "b", "--guide_model", str(models["bert"])))
