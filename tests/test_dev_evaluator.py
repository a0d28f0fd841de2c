"""The dev evaluation during training: SentEval files read and sentences tokenized once per run, the
same scores as evaluating from scratch each time, and embeddings kept for one task at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig

import senteval.sts
from helpers import tokenizer_path, write_sts_tree
from senteval.engine import SE
from senteval.errors import SentEvalError
from senteval.registry import build_task
from senteval.utils import FAST_CLASSIFIER
from simcse.evaluation.dev import ModelEvaluation, build_evaluators
from simcse.evaluation.senteval_tasks import STS_DEV_METRICS
from simcse.losses.diagnostics import alignment, uniformity
from simcse.modeling.encoder import SentenceEncoder
from simcse.modeling.models import BertForCL, configure


def dev_evaluation(tokenizer, data: Path, transfer: bool = False) -> ModelEvaluation:
    """train.py's default dev evaluation (STS-B / SICK-R dev, with --eval_transfer the transfer tasks)."""
    return ModelEvaluation(build_evaluators(str(data), transfer_dev=transfer), tokenizer)


class CountingTokenizer:
    """The real tokenizer, counting the texts it is asked to tokenize."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.texts = 0

    def __call__(self, texts, **kwargs):
        self.texts += len(texts)
        return self._tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


@pytest.fixture(scope="module")
def bert_tokenizer():
    return AutoTokenizer.from_pretrained(tokenizer_path("bert-base-uncased"))


def tiny_model(vocab_size: int, seed: int = 0) -> BertForCL:
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    configure(config, pooler_type="avg")
    torch.manual_seed(seed)
    return BertForCL(config).train()


def scores_from_scratch(model, tokenizer, data_dir: Path) -> dict[str, float]:
    """The evaluation as it ran before: every task built (its files read) and every sentence tokenized
    anew, one encoder caching everything."""
    encoder = SentenceEncoder(model.encode, tokenizer, torch.device("cpu"), batch_size=128)

    def batcher(params, batch):
        return encoder.encode([" ".join(tokens) for tokens in batch]).numpy()

    se = SE({"task_path": str(data_dir), "kfold": 5, "classifier": dict(FAST_CLASSIFIER), "batch_size": 4096,
             "sts_splits": ["dev"]}, batcher)
    model.eval()
    metrics = {name: se.eval(task)["dev"]["spearman"] for name, task in STS_DEV_METRICS.items()}
    metrics["avg_sts"] = sum(metrics.values()) / 2
    sent_a, sent_b, gold = build_task("STSBenchmark", data_dir / "downstream").data["dev"]
    a, b = [" ".join(t) for t in sent_a], [" ".join(t) for t in sent_b]
    metrics["stsb_uniform"] = uniformity(encoder.encode(list(dict.fromkeys(a + b)))).item()
    positives = [i for i, score in enumerate(gold) if score > 4]
    metrics["stsb_align"] = alignment(encoder.encode([a[i] for i in positives]),
                                      encoder.encode([b[i] for i in positives])).item()
    model.train()
    return metrics


def test_files_read_and_sentences_tokenized_once_per_run_same_scores(tmp_path, monkeypatch, bert_tokenizer):
    data = write_sts_tree(tmp_path / "data")
    reads = []
    original_read_lines = senteval.sts.read_lines
    monkeypatch.setattr(senteval.sts, "read_lines",
                        lambda path, **kw: reads.append(path) or original_read_lines(path, **kw))
    tokenizer = CountingTokenizer(bert_tokenizer)
    evaluator = dev_evaluation(tokenizer, data)
    model = tiny_model(len(bert_tokenizer))

    first = evaluator(model)
    assert len(reads) == 6  # STS-B's three csv files and SICK's three, once
    distinct = 2 * 6 + (6 + 1)  # STS-B dev: 6 + 6 sentences; SICK trial: 6 + "a fish swims"
    assert tokenizer.texts == distinct
    with torch.no_grad():  # a training step changes the model between evaluations
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    second = evaluator(model)
    assert len(reads) == 6 and tokenizer.texts == distinct  # nothing read or tokenized again
    assert model.training  # the evaluator restores the mode

    monkeypatch.setattr(senteval.sts, "read_lines", original_read_lines)
    expected = scores_from_scratch(model, bert_tokenizer, data)
    assert second.keys() == expected.keys() == {"stsb_spearman", "sickr_spearman", "avg_sts", "stsb_uniform",
                                                "stsb_align"}
    assert second == pytest.approx(expected, abs=1e-12)
    assert first != second  # the cached data is scored with the current weights, not a cached result


def test_embeddings_are_kept_for_one_task_at_a_time(tmp_path, monkeypatch, bert_tokenizer):
    data = write_sts_tree(tmp_path / "data")
    held = []
    original_encode = SentenceEncoder.encode

    def encode(self, sentences):
        out = original_encode(self, sentences)
        held.append((self.cached_embeddings, self.sentences_encoded))
        return out

    monkeypatch.setattr(SentenceEncoder, "encode", encode)
    dev_evaluation(bert_tokenizer, data)(tiny_model(len(bert_tokenizer)))
    # STS-B dev has 12 distinct sentences, SICK trial 7: never both at once (19 without the bound). The
    # STS-B run, then alignment/uniformity's three calls from its cached embeddings, then SICK-R.
    assert held == [(12, 12)] * 4 + [(7, 19)]


def test_retain_drops_only_what_the_next_task_does_not_need(bert_tokenizer):
    model = tiny_model(len(bert_tokenizer)).eval()
    encoder = SentenceEncoder(model.encode, bert_tokenizer, torch.device("cpu"))
    before = encoder.encode(["a b", "c d", "e f"])
    encoder.retain(["c d", "x y"])
    assert encoder.cached_embeddings == 1
    again = encoder.encode(["c d", "a b"])
    assert encoder.sentences_encoded == 4  # "c d" came from the cache, "a b" was encoded again
    torch.testing.assert_close(again, before[[1, 0]])


def test_dropped_split_is_an_error_not_a_silent_empty_score(tmp_path):
    data = write_sts_tree(tmp_path / "data")
    task = build_task("STSBenchmark", data / "downstream")
    task.keep_only(["dev"])
    assert list(task.data) == ["dev"] and len(task.samples) == 12
    with pytest.raises(SentEvalError, match=r"split\(s\) \['test'\] were dropped"):
        task.subsets({"sts_splits": ["test"]})
    with pytest.raises(SentEvalError, match="has no subset"):
        task.keep_only(["validation"])


def test_eval_transfer_adds_every_transfer_tasks_dev_accuracy(bert_tokenizer, tmp_path):
    """--eval_transfer: the dev evaluator also reports each transfer task's dev accuracy (as SentEval's
    engine computes it with the same encoder and fast settings) and their mean; without it, none."""
    from helpers import make_transfer_tree as make_tree
    from senteval.registry import TRANSFER_TASKS
    from simcse.evaluation.senteval_tasks import senteval_params

    data_dir = write_sts_tree(tmp_path / "data")
    make_tree(data_dir)
    model = tiny_model(len(bert_tokenizer))
    plain = dev_evaluation(bert_tokenizer, data_dir)(model)
    assert not set(TRANSFER_TASKS) & set(plain) and "avg_transfer" not in plain
    metrics = dev_evaluation(bert_tokenizer, data_dir, transfer=True)(model)
    assert {k: metrics[k] for k in plain} == plain
    accuracies = [metrics[task] for task in TRANSFER_TASKS]
    assert metrics["avg_transfer"] == pytest.approx(sum(accuracies) / len(accuracies))
    model.eval()  # as the evaluator runs it (it restores training mode afterwards)
    encoder = SentenceEncoder(model.encode, bert_tokenizer, torch.device("cpu"), batch_size=128)
    se = SE(senteval_params("dev", str(data_dir)),
            lambda params, batch: encoder.encode([" ".join(tokens) for tokens in batch]).numpy())
    for task in ("MR", "TREC", "MRPC"):
        assert metrics[task] == pytest.approx(se.eval(task)["devacc"], abs=1e-9)
