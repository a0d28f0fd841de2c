"""The recipes' flags (run_unsup_example.sh, run_sup_example.sh) parse with train.py's parser, and the
settings train.py refuses at parse time (several GPUs in one process) are refused with the fix."""

from __future__ import annotations

import shlex

import pytest
import torch

from helpers import REPO
from simcse.errors import SimCSEError
from simcse.training.arguments import SimCSETrainingArguments, parse_train_args


def script_flags(name: str) -> list[str]:
    """The arguments the script passes to train.py (the lines after `train.py \\` up to "$@")."""
    text = (REPO / name).read_text(encoding="utf-8")
    command = text[text.index("train.py \\\n") + len("train.py"):text.rindex('"$@"')]
    # run_sup_example.sh derives the per-device batch from GLOBAL_BATCH / (NUM_GPU x GRAD_ACCUM): 512 / (4 x 1)
    command = command.replace('"$PER_DEVICE"', "128").replace('"$GRAD_ACCUM"', "1")
    return shlex.split(command.replace("\\\n", " "))


@pytest.mark.parametrize("script, expected", [
    ("run_unsup_example.sh", {"pooler_type": "cls", "mlp_only_train": True, "per_device_train_batch_size": 64,
                              "learning_rate": 3e-5, "num_train_epochs": 1}),
    ("run_sup_example.sh", {"pooler_type": "cls", "mlp_only_train": False, "per_device_train_batch_size": 128,
                            "learning_rate": 5e-5, "num_train_epochs": 3}),
])
def test_example_script_flags_parse(script, expected, tmp_path):
    flags = script_flags(script)
    assert flags[flags.index("--metric_for_best_model") + 1] == "stsb_spearman"
    # the data file must exist for the parser: the same name, empty, in a temporary directory
    train_file = tmp_path / flags[flags.index("--train_file") + 1].rsplit("/", 1)[-1]
    train_file.write_text("a sentence\n" if train_file.suffix == ".txt" else "sent0,sent1,hard_neg\na,b,c\n")
    flags[flags.index("--train_file") + 1] = str(train_file)
    flags[flags.index("--output_dir") + 1] = str(tmp_path / "out")
    if "--fp16" in flags and not torch.cuda.is_available():
        flags.remove("--fp16")  # refused without a GPU (tested in test_train_guards); the rest must parse
    model_args, data_args, training_args, notices = parse_train_args(flags + ["--use_cpu"])
    parsed = {**vars(model_args), **vars(data_args), **{k: getattr(training_args, k) for k in
                                                        ("per_device_train_batch_size", "learning_rate",
                                                         "num_train_epochs")}}
    assert {k: parsed[k] for k in expected} == expected
    assert training_args.load_best_model_at_end and training_args.eval_steps == 125
    assert data_args.max_seq_length == 32 and model_args.temp == 0.05


def test_several_visible_gpus_in_one_process_are_refused(tmp_path, monkeypatch):
    """train.py without torchrun on a machine with 2 GPUs would fall into DataParallel (negatives not
    gathered across replicas): refused with the torchrun command."""
    monkeypatch.setattr(SimCSETrainingArguments, "n_gpu", property(lambda self: 2))
    data = tmp_path / "train.txt"
    data.write_text("a sentence\n")
    with pytest.raises(SimCSEError, match=r"2 GPUs are visible.*torchrun --nproc_per_node 2 train.py"):
        parse_train_args(["--model_name_or_path", "m", "--train_file", str(data), "--output_dir",
                          str(tmp_path / "out")])


def test_the_supervised_script_splits_the_global_batch_over_the_processes(tmp_path):
    """run_sup_example.sh keeps the paper's global batch of 512 whatever NUM_GPU and the accumulation steps
    are (8 GPUs train 8 x 64, not 8 x 128), and says so; a split that does not divide, or a per-device batch
    among the extra flags, is refused (torchrun replaced by a stub that records its arguments)."""
    import os
    import subprocess

    stub = tmp_path / "bin" / "torchrun"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "$@" > "$ARGS_FILE"\n', encoding="utf-8")
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}", "ARGS_FILE": str(tmp_path / "a")}

    def run(extra_env: dict, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(REPO / "run_sup_example.sh"), *flags], env={**env, **extra_env},
                              capture_output=True, text=True, timeout=60)

    cases = [({"NUM_GPU": "8"}, (), "64", "8", "1"), ({"NUM_GPU": "4"}, (), "128", "4", "1"),
             ({"NUM_GPU": "1"}, (), "512", "1", "1"), ({"NUM_GPU": "2", "GRAD_ACCUM": "2"}, (), "128", "2", "2"),
             ({"NUM_GPU": "4"}, ("--gradient_accumulation_steps", "4"), "32", "4", "4"),
             ({"NUM_GPU": "1"}, ("--gradient_accumulation_steps=2",), "256", "1", "2")]
    for extra_env, flags, per_device, gpus, accumulation in cases:
        done = run(extra_env, *flags)
        assert done.returncode == 0, done.stderr
        args = (tmp_path / "a").read_text().split()
        assert args[args.index("--per_device_train_batch_size") + 1] == per_device
        assert args[args.index("--gradient_accumulation_steps") + 1] == accumulation
        assert (f"global batch 512 = {per_device} per device x {gpus} process(es) x {accumulation} accumulation "
                "step(s)") in done.stderr
    bad = run({"NUM_GPU": "3"})
    assert bad.returncode == 2 and "GLOBAL_BATCH=512 does not split over NUM_GPU=3" in bad.stderr
    bad = run({"NUM_GPU": "4", "GRAD_ACCUM": "3"})
    assert bad.returncode == 2 and "NUM_GPU=4 processes x GRAD_ACCUM=3 accumulation steps" in bad.stderr
    bad = run({"NUM_GPU": "4"}, "--per_device_train_batch_size", "128")
    assert bad.returncode == 2 and "set those instead of --per_device_train_batch_size" in bad.stderr
    bad = run({"NUM_GPU": "x"})
    assert bad.returncode == 2 and "NUM_GPU=x is not a positive integer" in bad.stderr
