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


def test_a_missing_optional_package_fails_under_ci_and_skips_elsewhere(monkeypatch):
    from helpers import require_module

    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="'no_such_package_x'.*CI is set"):
        require_module("no_such_package_x")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no_such_package_x"):
        require_module("no_such_package_x")
    assert require_module("json").dumps([1]) == "[1]"
