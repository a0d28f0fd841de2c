"""``--mask_duplicate_texts`` from the data to the loss: the collator's text keys (the sampler's hash of the
token ids), the arguments that refuse it, and train.py, where the keys reach the loss (with and without
gradient caching). The loss side is tests/losses/test_duplicate_masking.py; 2 processes equal 1 process
is tests/test_torchrun.py (slow tier)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

import train
from helpers import save_tiny_model, tokenizer_path
from simcse.data import SentenceBatch, SimCSECollator
from simcse.data.collating import batch_text_keys
from simcse.data.sampler import sentence_keys
from simcse.errors import SimCSEError
from simcse.training.trainers import SimCSETrainer

# Token ids of three sentences (anchor, positive, hard negative) per example; equal lists, equal texts.
FEATURES = [{"input_ids": [[101, 7, 8, 102], [101, 9, 102], [101, 7, 8, 102]]},
            {"input_ids": [[101, 9, 102], [101, 7, 8, 102], [101, 5, 102]]},
            {"input_ids": [[101, 7, 8, 9, 102], [101, 8, 7, 102], [101, 5, 5, 102]]}]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tokenizer_path("bert-base-uncased"))


def test_the_collator_gives_each_sentence_the_samplers_hash_of_its_token_ids(tokenizer):
    batch = SimCSECollator(tokenizer, text_keys=True)(FEATURES)
    keys = batch["text_keys"]
    assert keys.dtype == torch.int64 and keys.shape == (3, 3)
    # The sampler's keys of the same examples, uint64 read as int64: one hash on the data path.
    expected = sentence_keys({"input_ids": [f["input_ids"] for f in FEATURES]}).view(np.int64)
    assert np.array_equal(keys.numpy(), expected)
    assert keys[0, 0] == keys[0, 2] == keys[1, 1] and keys[0, 1] == keys[1, 0]
    # A different order, an extra token, another token: another key.
    assert len({int(k) for k in keys.flatten()}) == 6
    assert "text_keys" not in SimCSECollator(tokenizer)(FEATURES)


def test_fetched_batches_get_the_keys_of_example_dicts(tokenizer):
    """The DataLoader path hands the collator a SentenceBatch of int32 ids read from Arrow."""
    sequences = [seq for feature in FEATURES for seq in feature["input_ids"]]
    fetched = SentenceBatch(token_ids=np.concatenate(sequences).astype(np.int32),
                            lengths=np.array([len(s) for s in sequences]), num_sent=3)
    assert torch.equal(batch_text_keys(fetched), batch_text_keys(FEATURES))


def test_both_views_of_an_unsupervised_sentence_share_its_key(tokenizer):
    features = [{"input_ids": [[101, 7, 102]]}, {"input_ids": [[101, 7, 102]]}, {"input_ids": [[101, 8, 102]]}]
    keys = SimCSECollator(tokenizer, text_keys=True)(features)["text_keys"]
    assert keys.shape == (3, 2) and torch.equal(keys[:, 0], keys[:, 1])
    assert keys[0, 0] == keys[1, 0] != keys[2, 0]


def test_the_trainer_needs_the_collators_keys():
    trainer = SimpleNamespace(args=SimpleNamespace(mask_duplicate_texts=True), guide=None)
    with pytest.raises(SimCSEError, match=r"`mask_duplicate_texts` needs the batch's text keys"):
        SimCSETrainer._loss_extras(trainer, {"input_ids": torch.zeros(2, 2, 3, dtype=torch.long)})
    keys = torch.arange(4).view(2, 2)
    assert SimCSETrainer._loss_extras(trainer, {"text_keys": keys})["keys"] is keys  # one process: as is


SENTENCES = [f"sentence number {i} about a topic {i % 3}" for i in range(4)]
# Batches of 4 in file order: each holds a sentence twice (rows 0 and 3, then 4 and 6).
LINES = [SENTENCES[0], SENTENCES[1], SENTENCES[2], SENTENCES[0], SENTENCES[3], SENTENCES[1], SENTENCES[3],
         SENTENCES[2]]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny BERT without dropout, so a gradient-cached step computes the very loss of a plain one."""
    path = save_tiny_model(tmp_path_factory.mktemp("dup-bert"), "bert")
    config = AutoConfig.from_pretrained(path)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(path)
    return path


def _args(model, data, out, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(model), "--train_file", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--max_steps", "1", "--report_to", "none", "--use_cpu",
            "--save_strategy", "no", "--eval_strategy", "no", "--max_seq_length", "16", "--seed", "1",
            "--train_sampling_strategy", "sequential", "--pooler_type", "cls", *extra]


def test_train_py_masks_the_duplicates_of_a_batch(tiny_bert, tmp_path, monkeypatch):
    data = tmp_path / "dup.txt"
    data.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    seen = []
    original = SimCSETrainer._loss_of_embeddings

    def recording(self, z, extras=None):
        seen.append(dict(extras or {}))
        return original(self, z, extras)

    monkeypatch.setattr(SimCSETrainer, "_loss_of_embeddings", recording)
    masked = train.main(_args(tiny_bert, data, tmp_path / "masked", "--mask_duplicate_texts"))["train_loss"]
    keys = seen[-1]["keys"]
    assert keys.shape == (4, 2) and torch.equal(keys[:, 0], keys[:, 1])  # unsupervised: one text per row
    assert keys[0, 0] == keys[3, 0] and len(set(keys[:, 0].tolist())) == 3
    cached = train.main(_args(tiny_bert, data, tmp_path / "cached", "--mask_duplicate_texts",
                              "--grad_cache_mini_batch", "2"))["train_loss"]
    assert torch.equal(seen[-1]["keys"], keys)  # gradient caching hands the loss the whole batch's keys
    plain = train.main(_args(tiny_bert, data, tmp_path / "plain"))["train_loss"]
    assert "keys" not in seen[-1]
    # Same embeddings (same seed, no dropout): the masked InfoNCE drops the duplicate from two rows'
    # denominators, so it is below the plain one; the cached step computes the same masked loss.
    assert masked < plain
    assert masked == pytest.approx(cached, rel=1e-5)


def test_mask_duplicate_texts_refuses_the_sampler_and_losses_without_negatives(tiny_bert, tmp_path):
    data = tmp_path / "dup.txt"
    data.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    with pytest.raises(SimCSEError, match=r"`mask_duplicate_texts` and `no_duplicates_in_batch` .* drop one"):
        train.main(_args(tiny_bert, data, tmp_path / "a", "--mask_duplicate_texts", "--no_duplicates_in_batch"))
    with pytest.raises(SimCSEError, match=r"loss 'vicreg' cannot mask duplicate texts .*no in-batch negatives"):
        train.main(_args(tiny_bert, data, tmp_path / "b", "--mask_duplicate_texts", "--loss_type", "vicreg"))
