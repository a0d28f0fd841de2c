"""With CI set, a test whose shared data is missing fails the run; elsewhere it skips (tests/helpers.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import REPO


@pytest.mark.slow
@pytest.mark.parametrize("ci, outcome", [("1", "1 failed"), ("", "1 skipped")])
def test_missing_shared_data_fails_under_ci_and_skips_elsewhere(ci, outcome, tmp_path):
    env = {**os.environ, "SIMCSE_SHARED": str(tmp_path / "renamed"), "CI": ci}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_data.py::test_real_shared_training_files"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert outcome in proc.stdout, proc.stdout + proc.stderr
    if ci:
        assert proc.returncode == 1 and "CI is set, so missing data fails the run" in proc.stdout
