"""Every flag of the original train.py (princeton-nlp/SimCSE: ModelArguments, DataTrainingArguments,
OurTrainingArguments over transformers 4.2.1's TrainingArguments) has a row here: accepted with the same
meaning, mapped to its replacement with a one-line notice, or refused with an error naming the
replacement."""

from __future__ import annotations

import json
import os

import pytest

from simcse.errors import SimCSEError
from simcse.training.arguments import parse_train_args
from simcse.training.legacy_flags import LEGACY_FLAGS

# flag -> (tokens after the flag, (arguments group 0/1/2, attribute, expected value)); same meaning as the
# original. Groups: 0 model, 1 data, 2 training.
ACCEPTED = {
    "model_name_or_path": ([], (0, "model_name_or_path", "bert-base-uncased")),
    "config_name": (["cfg"], (0, "config_name", "cfg")),
    "tokenizer_name": (["tok"], (0, "tokenizer_name", "tok")),
    "cache_dir": (["cache"], (0, "cache_dir", "cache")),
    "use_fast_tokenizer": (["false"], (0, "use_fast_tokenizer", False)),
    "model_revision": (["v1"], (0, "model_revision", "v1")),
    "temp": (["0.1"], (0, "temp", 0.1)),
    "pooler_type": (["avg"], (0, "pooler_type", "avg")),
    "hard_negative_weight": (["0.5"], (0, "hard_negative_weight", 0.5)),
    "do_mlm": ([], (0, "do_mlm", True)),
    "mlm_weight": (["0.2"], (0, "mlm_weight", 0.2)),
    "mlp_only_train": ([], (0, "mlp_only_train", True)),
    "overwrite_cache": ([], (1, "overwrite_cache", True)),
    "preprocessing_num_workers": (["2"], (1, "preprocessing_num_workers", 2)),
    "train_file": ([], (1, "train_file", None)),  # given in every row; checked by the fixture
    "max_seq_length": (["64"], (1, "max_seq_length", 64)),
    "pad_to_max_length": ([], (1, "pad_to_max_length", True)),
    "mlm_probability": (["0.2"], (1, "mlm_probability", 0.2)),
    "eval_transfer": ([], (2, "eval_transfer", True)),
    "output_dir": ([], (2, "output_dir", None)),
    "overwrite_output_dir": ([], (2, "overwrite_output_dir", True)),
    "do_train": ([], (2, "do_train", True)),
    "do_eval": ([], (2, "final_transfer_eval", True)),  # after training: STS + transfer dev, as the original
    "do_predict": ([], (2, "do_predict", True)),
    "evaluation_strategy": (["steps", "--eval_steps", "5"], (2, "eval_strategy", "steps")),
    "prediction_loss_only": ([], (2, "prediction_loss_only", True)),
    "per_device_train_batch_size": (["64"], (2, "per_device_train_batch_size", 64)),
    "per_device_eval_batch_size": (["16"], (2, "per_device_eval_batch_size", 16)),
    "gradient_accumulation_steps": (["2"], (2, "gradient_accumulation_steps", 2)),
    "eval_accumulation_steps": (["2"], (2, "eval_accumulation_steps", 2)),
    "learning_rate": (["3e-5"], (2, "learning_rate", 3e-5)),
    "weight_decay": (["0.01"], (2, "weight_decay", 0.01)),
    "adam_beta1": (["0.8"], (2, "adam_beta1", 0.8)),
    "adam_beta2": (["0.99"], (2, "adam_beta2", 0.99)),
    "adam_epsilon": (["1e-6"], (2, "adam_epsilon", 1e-6)),
    "max_grad_norm": (["2.0"], (2, "max_grad_norm", 2.0)),
    "num_train_epochs": (["3"], (2, "num_train_epochs", 3.0)),
    "max_steps": (["10"], (2, "max_steps", 10)),
    "lr_scheduler_type": (["constant"], (2, "lr_scheduler_type", "constant")),
    "warmup_steps": (["5"], (2, "warmup_steps", 5)),
    "logging_first_step": ([], (2, "logging_first_step", True)),
    "logging_steps": (["7"], (2, "logging_steps", 7)),
    "save_steps": (["250"], (2, "save_steps", 250)),
    "save_total_limit": (["1"], (2, "save_total_limit", 1)),
    "seed": (["7"], (2, "seed", 7)),
    "fp16": ([], None),  # needs a GPU: the refusal without one is checked separately
    "local_rank": (["-1"], (2, "local_rank", -1)),
    "dataloader_drop_last": ([], (2, "dataloader_drop_last", True)),
    "eval_steps": (["125", "--eval_strategy", "steps"], (2, "eval_steps", 125)),
    "dataloader_num_workers": (["2"], (2, "dataloader_num_workers", 2)),
    "run_name": (["r1"], (2, "run_name", "r1")),
    "disable_tqdm": (["true"], (2, "disable_tqdm", True)),
    "remove_unused_columns": (["false"], (2, "remove_unused_columns", False)),
    "label_names": (["a"], (2, "label_names", ["a"])),
    "load_best_model_at_end": (["--eval_strategy", "steps", "--eval_steps", "5", "--metric_for_best_model",
                                "stsb_spearman"], (2, "load_best_model_at_end", True)),
    "metric_for_best_model": (["stsb_spearman"], (2, "metric_for_best_model", "stsb_spearman")),
    "greater_is_better": (["false"], (2, "greater_is_better", False)),
    "ignore_data_skip": ([], (2, "ignore_data_skip", True)),
    "deepspeed": ([], None),  # needs CUDA: the refusal without it is checked separately
    "label_smoothing_factor": (["0.1"], (2, "label_smoothing_factor", 0.1)),
    "report_to": (["none"], (2, "report_to", [])),  # 4.2.1's default was "all" integrations; ours is none
}

# flag -> (tokens, the notice's start); dropped or rewritten with a one-line notice.
NOTICES = {
    "model_type": (["bert"], "--model_type ignored: the model class comes from the checkpoint's config.model_type"),
    "use_auth_token": ([], "--use_auth_token ignored: a saved login"),
    "validation_split_percentage": (["5"], "--validation_split_percentage ignored"),
    "fp16_opt_level": (["O1"], "--fp16_opt_level ignored: apex is not used"),
    "fp16_backend": (["amp"], "--fp16_backend ignored"),
    "past_index": (["-1"], "--past_index ignored"),
    "tpu_metrics_debug": ([], "--tpu_metrics_debug ignored"),
    "per_gpu_train_batch_size": (["32"], "--per_gpu_train_batch_size 32 -> --per_device_train_batch_size 32"),
    "per_gpu_eval_batch_size": (["8"], "--per_gpu_eval_batch_size 8 -> --per_device_eval_batch_size 8"),
    "no_cuda": ([], "--no_cuda -> --use_cpu"),
    "adafactor": ([], "--adafactor -> --optim adafactor"),
    "logging_dir": (["runs/x"], "--logging_dir runs/x -> TENSORBOARD_LOGGING_DIR=runs/x"),
    "debug": ([], "--debug ignored"),
}
# the effect of each rewritten flag: (group, attribute, value)
REWRITTEN = {
    "per_gpu_train_batch_size": (2, "per_device_train_batch_size", 32),
    "per_gpu_eval_batch_size": (2, "per_device_eval_batch_size", 8),
    "no_cuda": (2, "use_cpu", True),
    "adafactor": (2, "optim", "adafactor"),
}

# flag -> (tokens, words the error must contain: the replacement)
REFUSED = {
    "dataset_name": (["wiki"], "use --train_file"),
    "dataset_config_name": (["x"], "use --train_file"),
    "model_parallel": ([], "use torchrun"),
    "sharded_ddp": (["simple"], "use torchrun (DDP)"),
    "tpu_num_cores": (["8"], "use a GPU or CPU run"),
    "group_by_length": ([], "plain shuffled batches"),
}

ORIGINAL_FLAGS = sorted(set(ACCEPTED) | set(NOTICES) | set(REFUSED))


def test_every_original_flag_has_exactly_one_row_and_the_table_matches_the_library():
    assert len(ORIGINAL_FLAGS) == 80  # 14 model + 10 data (incl. eval_transfer) + 56 TrainingArguments (4.2.1)
    assert not (set(ACCEPTED) & set(NOTICES)) and not (set(REFUSED) & (set(ACCEPTED) | set(NOTICES)))
    assert set(NOTICES) - {"debug"} | set(REFUSED) == set(LEGACY_FLAGS)


@pytest.fixture
def base(tmp_path):
    train_file = tmp_path / "train.txt"
    train_file.write_text("a sentence\n", encoding="utf-8")
    return ["--model_name_or_path", "bert-base-uncased", "--train_file", str(train_file),
            "--output_dir", str(tmp_path / "out"), "--use_cpu", "--report_to", "none"]


@pytest.mark.parametrize("flag", [f for f in sorted(ACCEPTED) if ACCEPTED[f][1] is not None])
def test_accepted_with_the_same_meaning(flag, base):
    tokens, (group, attribute, expected) = ACCEPTED[flag]
    argv = base if flag in ("model_name_or_path", "train_file", "output_dir") else base + [f"--{flag}", *tokens]
    *groups, notices = parse_train_args(argv)
    assert notices == []
    if expected is not None:
        value = getattr(groups[group], attribute)
        assert (value.value if hasattr(value, "value") else value) == expected


@pytest.mark.parametrize("flag", sorted(NOTICES))
def test_mapped_with_a_one_line_notice(flag, base):
    tokens, notice = NOTICES[flag]
    *groups, notices = parse_train_args(base + [f"--{flag}", *tokens])
    assert len(notices) == 1 and notices[0].startswith(notice) and "\n" not in notices[0], notices
    if flag in REWRITTEN:
        group, attribute, expected = REWRITTEN[flag]
        value = getattr(groups[group], attribute)
        assert (value.value if hasattr(value, "value") else value) == expected
    if flag == "logging_dir":
        assert os.environ.pop("TENSORBOARD_LOGGING_DIR") == "runs/x"


@pytest.mark.parametrize("flag", sorted(REFUSED))
def test_refused_naming_the_replacement(flag, base):
    tokens, replacement = REFUSED[flag]
    with pytest.raises(SimCSEError, match=f"--{flag} \\(a flag of the original train.py\\) is not supported") as err:
        parse_train_args(base + [f"--{flag}", *tokens])
    assert replacement in str(err.value)


def test_gpu_only_flags_are_refused_without_a_gpu(base):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SimCSEError, match="`fp16` needs a CUDA GPU"):
        parse_train_args(base + ["--fp16"])
    with pytest.raises(SimCSEError, match="needs a CUDA GPU"):
        parse_train_args(base + ["--deepspeed", "ds.json"])


def test_switch_values_and_inline_values(base):
    *_, training, notices = parse_train_args(base + ["--no_cuda", "false", "--per_gpu_train_batch_size=16"])
    assert training.per_device_train_batch_size == 16
    assert notices == ["--no_cuda false ignored (off)",
                       "--per_gpu_train_batch_size 16 -> --per_device_train_batch_size 16 (the flag was renamed)"]


def test_a_json_config_of_the_original_is_translated_too(base, tmp_path):
    config = {"model_name_or_path": "bert-base-uncased", "train_file": base[3], "output_dir": base[5],
              "use_cpu": True, "report_to": "none", "model_type": "bert", "per_gpu_train_batch_size": 32,
              "no_cuda": True}
    path = tmp_path / "args.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    *groups, notices = parse_train_args([str(path)])
    assert groups[2].per_device_train_batch_size == 32 and groups[2].use_cpu is True
    assert len(notices) == 3
    config["dataset_name"] = "wiki"
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(SimCSEError, match="use --train_file"):
        parse_train_args([str(path)])
