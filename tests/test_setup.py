"""scripts/setup.sh on a fresh machine: a Python without venv/ensurepip stops with the one-line fix, and
constraints.txt pins every dependency setup.sh installs (except torch, pinned by TORCH_VERSION)."""

from __future__ import annotations

import re
import shutil
import subprocess

from helpers import REPO


def test_missing_venv_module_prints_the_one_line_fix(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    fake = tmp_path / "python3"  # a Python whose `import venv, ensurepip` fails, as stock Debian/Ubuntu's
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named ensurepip' >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh")], env={"PATH": "/usr/bin:/bin",
                          "PYTHON": str(fake)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"setup.sh: {fake} has no venv module; install python3-venv: apt-get install python3-venv"]
    assert not (tmp_path / ".venv").exists()


def test_constraints_pin_every_requirement_exactly():
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    for requirements in ("requirements.txt", "requirements-dev.txt"):
        for line in (REPO / requirements).read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.-]+)", line)
            if match and not line.startswith("-r") and match.group(1) != "torch":
                name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
                assert name in pins, f"{match.group(1)} not in constraints.txt"
    assert "torch" not in pins
