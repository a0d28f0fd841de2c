"""train.py under the conditions of real runs: the original's evaluation flags keep the best model, a
last batch of one never reaches a loss, and engines or save settings that cannot work are refused at
parse time with the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import base_args, run, write_train_file

import train
from helpers import ScriptedEvaluation, save_tiny_model, train_with
from simcse.errors import SimCSEError
from simcse.evaluation.dev import build_evaluators
from simcse.evaluation.senteval_tasks import STSDevEvaluator, TransferDevEvaluator
from simcse.training.arguments import SimCSETrainingArguments


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("guards") / "bert", "bert")


def original_flags(model_dir: Path, tmp_path: Path, steps: int, *extra: str) -> list[str]:
    """The original's command shape: evaluate every N steps, select the best, no save flag at all."""
    args = base_args(model_dir, write_train_file(tmp_path, 1), tmp_path / "out", "--learning_rate", "1e-2", *extra)
    drop = {"--save_strategy", "--eval_strategy"}
    args = [a for i, a in enumerate(args) if a not in drop and not (i and args[i - 1] in drop)]
    args[args.index("--max_steps") + 1] = str(steps)
    return args + ["--eval_strategy", "steps", "--eval_steps", "1", "--metric_for_best_model", "stsb_spearman",
                   "--load_best_model_at_end"]


def test_original_flags_keep_the_best_model_that_is_neither_last_nor_on_a_save_step(tiny_bert, tmp_path):
    # Best at step 3 of 5; the Trainer's own default would save only at step 500 and lose it.
    metrics = train_with(original_flags(tiny_bert, tmp_path, 5), ScriptedEvaluation([0.1, 0.5, 0.9, 0.3, 0.2]))
    out = tmp_path / "out"
    assert metrics["best_model_checkpoint"] == str(out / "checkpoint-3") and metrics["best_metric"] == 0.9
    final, best = load_file(out / "model.safetensors"), load_file(out / "checkpoint-3" / "model.safetensors")
    assert all(torch.equal(final[k], best[k]) for k in final)
    # Saved: each new best (1, 2, 3), never the worse later steps.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


def parse(**flags) -> SimCSETrainingArguments:
    return SimCSETrainingArguments(output_dir="/tmp/unused", use_cpu=True, report_to="none", **flags)


def test_save_strategy_defaults():
    assert parse(eval_strategy="steps", eval_steps=125, metric_for_best_model="stsb_spearman").save_strategy == "best"
    assert parse().save_strategy == "steps" and parse().save_steps == 500
    given = parse(eval_strategy="steps", eval_steps=5, metric_for_best_model="stsb_spearman", save_steps=5)
    assert (given.save_strategy, given.save_steps) == ("steps", 5)  # the user's choice stands
    assert parse().ddp_find_unused_parameters is False


def test_the_default_metric_for_best_model_is_the_dev_evaluation_primary_metric():
    args = parse(load_best_model_at_end=True, eval_strategy="steps", eval_steps=5)
    assert args.metric_for_best_model == STSDevEvaluator.primary_metric == "stsb_spearman"
    assert build_evaluators("unused-data-dir", custom_sts=()).primary_metric == STSDevEvaluator.primary_metric


def test_deepspeed_zero3_is_refused(tmp_path):
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}), encoding="utf-8")
    with pytest.raises(SimCSEError, match="ZeRO stage 3, which shards the parameters"):
        parse(deepspeed=str(config))


@pytest.mark.parametrize("flags, message", [
    (dict(load_best_model_at_end=True, metric_for_best_model="stsb_spearman"),
     "`load_best_model_at_end` needs evaluations to find the best model, but `eval_strategy` is no"),
    (dict(load_best_model_at_end=True, eval_strategy="steps", eval_steps=5, metric_for_best_model="loss"),
     "`metric_for_best_model` loss: the evaluation reports dev scores, no loss; use stsb_spearman"),
    (dict(load_best_model_at_end=True, eval_strategy="steps", eval_steps=5, save_strategy="steps", save_steps=10,
          metric_for_best_model="stsb_spearman"),
     "`save_steps` 10 differs from `eval_steps` 5"),
    (dict(fsdp="full_shard"), "`fsdp` shards the model over processes: launch it with torchrun"),
    (dict(fsdp="shard_grad_op auto_wrap"), "`fsdp` 'shard_grad_op auto_wrap' is not supported"),
    (dict(deepspeed="ds.json"), "`deepspeed` 'ds.json' needs a CUDA GPU"),
])
def test_settings_that_cannot_keep_the_best_model_or_run_are_refused(flags, message):
    if "deepspeed" in flags and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SimCSEError, match=message.replace("(", r"\(").replace("+", r"\+")):
        parse(**flags)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--no_duplicates_in_batch"]], ids=["shuffled", "no_duplicates"])
def test_dataset_size_mod_batch_one_trains_through_epochs_and_resumes(extra, tiny_bert, tmp_path):
    """9 sentences, batch 4: the last batch would hold one example (InfoNCE is undefined on it). Two whole
    epochs train; resuming from a checkpoint taken before the tail ends with the same weights."""
    lines = [f"line {i} of a file whose size is one more than a multiple of four" for i in range(9)]
    data = tmp_path / "nine.txt"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def args(out: Path) -> list[str]:
        a = base_args(tiny_bert, data, out, "--learning_rate", "1e-2", "--num_train_epochs", "2", *extra)
        i = a.index("--max_steps")
        a[i:i + 2] = []
        a[a.index("--save_strategy") + 1] = "steps"
        return a + ["--save_steps", "1"]

    full = train.main(args(tmp_path / "full"))
    assert full["train_loss"] == full["train_loss"]  # finite, no crash at the epoch ends
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "full").glob("checkpoint-*"))
    assert steps == [1, 2, 3, 4]  # 2 batches per epoch: the lone example never forms a batch of its own
    resumed_dir = tmp_path / "resumed"  # as if killed after step 1, before the first epoch's tail
    shutil.copytree(tmp_path / "full" / "checkpoint-1", resumed_dir / "checkpoint-1")
    train.main(args(resumed_dir) + ["--resume_from_checkpoint", "last"])
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(resumed_dir / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_bad_save_flags_through_train_py(tiny_bert, tmp_path, capsys):
    args = original_flags(tiny_bert, tmp_path, 2, "--save_strategy", "steps", "--save_steps", "2")
    code, err = run(args, capsys)
    assert code == 2 and "--save_steps 2 differs from --eval_steps 1" in err and len(err.splitlines()) == 1, err


def test_do_eval_runs_the_transfer_dev_evaluation_after_training(tiny_bert, tmp_path, monkeypatch):
    """The original's --do_eval: after training, the saved model's STS and transfer dev evaluation, even
    with no evaluation during training."""
    calls = []

    def sts(self, encoder):
        calls.append("sts")
        return {"stsb_spearman": 0.5}

    def transfer(self, encoder):
        calls.append("transfer")
        return {"MR": 70.0, "avg_transfer": 70.0}

    monkeypatch.setattr(STSDevEvaluator, "__call__", sts)
    monkeypatch.setattr(TransferDevEvaluator, "__call__", transfer)
    metrics = train.main(base_args(tiny_bert, write_train_file(tmp_path, 1), tmp_path / "out", "--do_eval"))
    assert calls == ["sts", "transfer"] and metrics["eval_MR"] == 70.0 and metrics["eval_avg_transfer"] == 70.0
    calls.clear()
    train.main(base_args(tiny_bert, write_train_file(tmp_path, 1), tmp_path / "out2"))
    assert calls == []  # without --do_eval (and no --eval_strategy) nothing is evaluated
