"""Resuming: a run killed (SIGKILL) or crashed while writing a checkpoint, restarted with
``--resume_from_checkpoint last``, ends with the weights and the best-model bookkeeping of an
uninterrupted run with the same seed (dropout on, so the RNG states must be restored too)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import write_train_file

import train
from helpers import REPO, ScriptedEvaluation, save_tiny_model, train_with, write_sts_tree
from simcse.training.reliability import MARKER, incomplete_reason, is_complete
from simcse.training.trainers import SimCSETrainer

pytestmark = pytest.mark.slow  # training runs killed and resumed


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return {"model": save_tiny_model(root / "bert", "bert"), "train": write_train_file(root, 1),
            "senteval": write_sts_tree(root / "senteval")}


def run_args(setup, out: Path, *extra: str) -> list[str]:
    """6 steps (2 epochs of 3 batches), a checkpoint and an evaluation every 2 steps, dropout on."""
    return ["--model_name_or_path", str(setup["model"]), "--train_file", str(setup["train"]), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--max_steps", "6", "--learning_rate", "1e-3", "--seed", "7",
            "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "steps", "--eval_steps", "2",
            "--metric_for_best_model", "stsb_spearman", "--senteval_data", str(setup["senteval"]),
            "--logging_steps", "1", "--max_seq_length", "16", "--report_to", "none", "--use_cpu",
            "--disable_tqdm", "true", *extra]


def assert_same_weights(a: Path, b: Path) -> None:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys()
    worst = max((x[k] - y[k]).abs().max().item() for k in x)
    assert worst <= 1e-6, f"weights differ by {worst}"


def best_of(out: Path) -> tuple[float, str]:
    state = json.loads((out / "trainer_state.json").read_text())
    return state["best_metric"], Path(state["best_model_checkpoint"]).name


@pytest.mark.parametrize("extra", [[], ["--no_duplicates_in_batch"], ["--grad_cache_mini_batch", "2"]],
                         ids=["plain", "no_duplicates", "grad_cache"])
def test_crash_while_writing_a_checkpoint_then_resume_last(extra, setup, tmp_path, monkeypatch):
    """The run dies inside the save of checkpoint-4 (after the weights and optimizer, before the RNG state
    and the marker). checkpoint-2, the best one, stays intact; `last` skips the cut-off checkpoint-4; the
    resumed run ends as the uninterrupted one, and still knows that checkpoint-2 (0.9) is the best."""
    full, out = tmp_path / "full", tmp_path / "out"
    # scores scripted in advance, so the best checkpoint is known: steps 2, 4, 6, then after training
    train_with(run_args(setup, full, *extra), ScriptedEvaluation([0.9, 0.5, 0.3, 0.0], repeat_last=False))

    save_rng_state = SimCSETrainer._save_rng_state

    def crash_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise OSError("No space left on device (simulated)")
        save_rng_state(self, output_dir)

    with monkeypatch.context() as patch, pytest.raises(OSError, match="simulated"):
        patch.setattr(SimCSETrainer, "_save_rng_state", crash_at_step_4)
        train_with(run_args(setup, out, *extra), ScriptedEvaluation([0.9, 0.5], repeat_last=False))
    assert is_complete(out / "checkpoint-2")
    assert "no simcse_checkpoint.json" in incomplete_reason(out / "checkpoint-4")
    assert (out / "checkpoint-4" / "model.safetensors").exists()  # it looks like a checkpoint, but is not one
    assert not (out / "model.safetensors").exists()
    assert_same_weights(out / "checkpoint-2", full / "checkpoint-2")
    kept = (out / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns

    metrics = train_with(run_args(setup, out, "--resume_from_checkpoint", "last", *extra),
                         ScriptedEvaluation([0.5, 0.3, 0.0], repeat_last=False))  # steps 4 and 6, then after
    assert (out / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns == kept  # resumed, not retrained
    assert is_complete(out / "checkpoint-4") and is_complete(out / "checkpoint-6")
    assert_same_weights(out, full)
    final, at_2 = load_file(out / "model.safetensors"), load_file(out / "checkpoint-2" / "model.safetensors")
    assert not all(torch.equal(final[k], at_2[k]) for k in final)  # steps 3-6 did train
    assert best_of(out) == best_of(full) == (0.9, "checkpoint-2")
    assert metrics["best_metric"] == 0.9
    # Weights are written as safetensors only, never as a pickle.
    assert not list(out.rglob("pytorch_model.bin"))


def wait_for(condition, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"train.py ended (code {proc.returncode}) before the condition held:\n"
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for train.py")
        time.sleep(0.05)


def test_sigkilled_run_resumes_to_the_weights_of_an_uninterrupted_run(setup, tmp_path):
    """A real process, killed with SIGKILL once checkpoint-2 is complete; the real SentEval evaluator."""
    full, out = tmp_path / "full", tmp_path / "out"
    train.main(run_args(setup, full))

    # tests/inject/step_delay/sitecustomize.py: 0.5 s after every step (a test-only start-up hook)
    path = os.pathsep.join([str(REPO / "tests" / "inject" / "step_delay"), str(REPO), str(REPO / "SentEval")])
    env = dict(os.environ, STEP_DELAY="0.5", PYTHONPATH=path)
    command = [sys.executable, "train.py", *run_args(setup, out)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: is_complete(out / "checkpoint-2"), proc)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert not (out / "model.safetensors").exists(), "the kill landed after the end of training"
    assert not is_complete(out / "checkpoint-6")
    kept = (out / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns

    resumed = subprocess.run([sys.executable, "train.py", *run_args(setup, out, "--resume_from_checkpoint", "last")],
                             cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns == kept  # resumed, not retrained
    assert_same_weights(out, full)
    assert best_of(out) == best_of(full)
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4", "checkpoint-6"}
    assert all((p / MARKER).is_file() for p in out.glob("checkpoint-*"))
    assert not (out / ".simcse-staging").exists()
