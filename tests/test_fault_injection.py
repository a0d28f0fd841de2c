"""A real train.py run SIGKILLed at 20+ file operations drawn by a seeded generator (checkpoint writes,
rotations, the final save): after each kill, a final model that carries its completeness marker is whole
and equal to an uninterrupted run's, every marked checkpoint is whole, and the same command with
``--resume_from_checkpoint last`` ends with the uninterrupted run's weights. See tests/fault_harness.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_train import write_train_file

from conftest import REPO, save_tiny_model


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
