"""A real train.py run SIGKILLed at 20+ file operations drawn by a seeded generator (checkpoint writes,
rotations, the final save): after each kill, a final model that carries its completeness marker is whole
and equal to an uninterrupted run's, every marked checkpoint is whole, and the same command with
``--resume_from_checkpoint last`` ends with the uninterrupted run's weights (tests/fault_harness.py).
Under 2-process torchrun the checkpoint marker waits for the slower rank's RNG state (tests/ddp_slow_rank.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from test_train import write_train_file

from helpers import REPO, save_tiny_model
from simcse.training.reliability import MARKER, final_save_incomplete, is_complete

pytestmark = pytest.mark.slow  # kills real training processes at file operations


@pytest.mark.slow  # about 20 s per 5 instants on 2 shared cores
def test_sigkill_at_twenty_file_operations_always_resumes_to_the_uninterrupted_weights(tmp_path):
    model = save_tiny_model(tmp_path / "bert", "bert")
    train_file = write_train_file(tmp_path, 1)
    work = tmp_path / "work"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "SentEval"), str(REPO / "tests")]))
    done = subprocess.run([sys.executable, str(REPO / "tests" / "fault_harness.py"), str(work), str(model),
                           str(train_file), "--instants", "20", "--seed", "0"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((work / "report.json").read_text())
    instants = report["instants"]

    assert len(instants) >= 20 and report["operations"] > len(instants)
    assert {"checkpoint", "rotation", "final save"} <= {i["phase"] for i in instants}
    for entry in instants:
        assert entry["first_run"] == "killed", entry  # a real SIGKILL at that operation
        assert entry["broken_marked_checkpoints"] == [], entry
        if entry["final_model_after_kill"] != "none (no completeness marker)":
            assert entry["final_model_after_kill"] == "whole" and entry["final_model_diff"] <= 1e-6, entry
        assert entry["second_run"] == "finished", entry
        assert entry["final_complete"] and entry["final_diff"] <= 1e-6, entry
    # the kills cover both ways back: resuming a complete checkpoint, and starting afresh when none was
    assert any(e["resumed_from"] for e in instants) and any(e["resumed_from"] is None for e in instants)


def torchrun_train(tmp_path, out, env_extra: dict) -> subprocess.CompletedProcess:
    model = tmp_path / "bert"
    if not model.is_dir():
        save_tiny_model(model, "bert")
    train_file = write_train_file(tmp_path, 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", SLOW_RANK_DELAY="2", **env_extra,
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "SentEval"), str(REPO / "tests")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(REPO / "tests" / "ddp_slow_rank.py"), "--model_name_or_path", str(model), "--train_file",
               str(train_file), "--output_dir", str(out), "--per_device_train_batch_size", "2", "--max_steps", "2",
               "--save_strategy", "steps", "--save_steps", "1", "--eval_strategy", "no", "--max_seq_length", "16",
               "--report_to", "none", "--use_cpu", "--disable_tqdm", "true"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # two 2-process torchrun runs, about 40 s each
def test_two_processes_mark_a_checkpoint_only_after_every_rank_wrote(tmp_path):
    """Rank 1 writes its rng_state_1.pth 2 s after rank 0 is done: the marker, written by rank 0 after the
    barrier, still lists it with its full size. Without the barrier (the control) it does not."""
    out = tmp_path / "ddp"
    done = torchrun_train(tmp_path, out, {})
    assert done.returncode == 0, done.stderr[-3000:]
    for step in (1, 2):
        folder = out / f"checkpoint-{step}"
        files = json.loads((folder / MARKER).read_text())["files"]
        assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(files) and is_complete(folder)
        assert files["rng_state_1.pth"] == (folder / "rng_state_1.pth").stat().st_size > 0
    assert final_save_incomplete(out) is None

    control = tmp_path / "ddp-no-barrier"
    done = torchrun_train(tmp_path, control, {"NO_BARRIER": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    listed = [set(json.loads((control / f"checkpoint-{s}" / MARKER).read_text())["files"]) for s in (1, 2)]
    assert any("rng_state_1.pth" not in files for files in listed)  # marked before rank 1 had written
