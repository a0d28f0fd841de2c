"""scripts/gpu_pack.sh and the README's command for the offline GPU node, in the node's environment.

A fresh venv holds only the node's preinstalled packages (the ``node`` lines of scripts/gpu_pack.txt;
CPU torch, the versions of constraints.txt); the working tree is copied alone (no ../shared beside it,
as on the node); the pack is built there for this machine's Python; then the README's command runs, with
``--tiny``. A wheel missing from the pack fails here, naming the module, instead of on the GPU node.
The venv is cached under .cache/gpu-node-venv/ keyed by its package list (built from scratch in a
fresh clone: about a minute from a local wheel cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, SHARED, require_shared

pytestmark = pytest.mark.slow  # builds a venv (first run) and runs the whole check on CPU

TORCH_VERSION = os.environ.get("TORCH_VERSION", "2.13.0")  # the pin of scripts/setup.sh
MARKER = re.compile(r"<!-- gpu-node-command -->\s*```bash\n(.*?)```\s*<!-- /gpu-node-command -->", re.DOTALL)


def pack_list(kind: str) -> list[str]:
    lines = (REPO / "scripts" / "gpu_pack.txt").read_text(encoding="utf-8").splitlines()
    return [line.split()[1] for line in lines if line.split()[:1] == [kind]]


def pins(names: list[str]) -> list[str]:
    """``name==version`` from constraints.txt (names compared as pip does: case and -/_ folded)."""
    def key(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pinned = {key(line.split("==")[0]): line.strip() for line in (REPO / "constraints.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    return [f"torch=={TORCH_VERSION}" if name == "torch" else pinned[key(name)] for name in names]


def readme_node_command() -> str:
    match = MARKER.search((REPO / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md: the node command between <!-- gpu-node-command --> markers is missing"
    return match.group(1).replace("\\\n", " ").strip()


def node_env(home: Path, venv: Path | None = None) -> dict:
    """The node's environment: no network index, no pip configuration of this machine, offline hubs,
    nothing of the development venv."""
    keep = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TMPDIR", "OMP_NUM_THREADS")}
    path = f"{venv / 'bin'}{os.pathsep}" if venv else ""
    return {**keep, "PATH": path + "/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run(command, cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          shell=isinstance(command, str), executable="/bin/bash" if isinstance(command, str) else None)


def node_venv() -> Path:
    """A venv of exactly the node's packages, cached by its package list and this Python's version."""
    packages = pins(pack_list("node"))
    index = os.environ.get("TORCH_INDEX_URL", "")
    key = hashlib.sha256(json.dumps([sys.version_info[:2], packages, index]).encode()).hexdigest()[:12]
    venv = REPO / ".cache" / "gpu-node-venv" / key
    if (venv / "ready").is_file():
        print(f"node venv: reused {venv}")
        return venv
    started = time.perf_counter()
    building = venv.with_name(f"{key}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
    pip = [str(building / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    torch_pin, rest = packages[0], packages[1:]
    assert torch_pin.startswith("torch==")
    subprocess.run(pip + (["--index-url", index] if index else []) + [torch_pin], check=True)
    subprocess.run(pip + ["-c", str(REPO / "constraints.txt"), *rest], check=True)
    (building / "ready").write_text("\n".join(packages) + "\n")
    shutil.rmtree(venv, ignore_errors=True)
    building.rename(venv)
    size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"node venv: built {venv} in {time.perf_counter() - started:.0f} s, {size / 2**20:.0f} MiB")
    return venv


def copy_working_tree(target: Path) -> Path:
    """The files the node receives: tracked and untracked-but-not-ignored files of the working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """(venv, the copied tree with its pack built for this Python, the pack builder's output)."""
    shared = require_shared(SHARED / "data" / "train", "the shared data").parents[1]
    venv = node_venv()
    leaked = run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; print([m for m in "
                  f"{pack_list('pack')!r} if u.find_spec(m)])"], REPO)
    assert leaked.stdout.strip() == "[]", f"the node venv already has pack modules: {leaked.stdout}{leaked.stderr}"
    tree = copy_working_tree(tmp_path_factory.mktemp("node") / "repo")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    built = run(["bash", "scripts/gpu_pack.sh", "--python-version", version, "--shared", str(shared)], tree,
                env={**os.environ, "PYTHON": sys.executable}, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    return venv, tree, built.stdout


def test_the_pack_holds_the_wheels_the_tokenizer_and_the_data_under_64_mib(node):
    venv, tree, printed = node
    size = re.search(r"gpu pack: \S+ holds ([\d.]+) MiB in (\d+) files", printed)
    assert size and float(size.group(1)) < 64, printed
    print(printed.strip())
    manifest = json.loads((tree / "gpu_pack" / "manifest.json").read_text())
    names = {re.split(r"-\d", wheel)[0].lower().replace("_", "-") for wheel in manifest["wheels"]}
    assert names == set(pack_list("pack"))  # one wheel per named package, nothing pulled in unnamed
    for path in ("tokenizer/vocab.txt", "data/wiki1m.txt", "data/nli.csv",
                 "senteval/downstream/STS/STSBenchmark/sts-dev.csv", "senteval/downstream/SICK/SICK_trial.txt"):
        assert path in manifest["files"], path
    assert len((tree / "gpu_pack" / "data" / "wiki1m.txt").read_text().splitlines()) == 6400
    # The named wheels close the dependency set: pip resolves them with the node's packages and the pack alone.
    closure = run([str(venv / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--no-index", "--find-links",
                   str(tree / "gpu_pack" / "wheels"), *pack_list("pack")], tree, env=node_env(tree.parent / "home"))
    assert closure.returncode == 0, closure.stdout + closure.stderr
    ignored = subprocess.run(["git", "check-ignore", "-q", "gpu_pack/manifest.json"], cwd=REPO)
    assert ignored.returncode == 0, ".gitignore must keep gpu_pack/ out of commits"


def test_the_readme_node_command_runs_the_check(node):
    venv, tree, _ = node
    command = readme_node_command() + " --tiny --output_json node-check.json"
    started = time.perf_counter()
    result = run(command, tree, env=node_env(tree.parent / "home", venv))
    output = result.stdout + result.stderr
    print(f"README node command with --tiny: {time.perf_counter() - started:.0f} s, exit {result.returncode}")
    assert result.returncode == 0, output[-6000:]
    payload = json.loads((tree / "node-check.json").read_text())
    assert payload["inputs"]["pack"] == str(tree / "gpu_pack")
    locations = payload["environment"]["module_locations"]
    for module in pack_list("pack"):
        assert locations[module] and locations[module].startswith(str(tree / "gpu_pack" / "site")), (module, locations)
    assert payload["environment"]["modules"] == {"missing": [], "missing_optional": [], "errors": {}}
    assert {p: payload["parts"][p]["status"] for p in payload["parts"]} == dict.fromkeys(
        ("gradcache", "train_py", "unsup", "sup", "sts"), "ok")
    assert payload["checks"] and all(payload["checks"].values()), payload["checks"]
    trace = payload["parts"]["train_py"]["sides"][1]["trace"]
    assert trace["scaler_skipped"][trace["steps"].index(6)] and not any(trace["accelerate_step_was_skipped"])
    for part in ("train_py", "unsup", "sup", "sts"):
        print(f"  {part}: {payload['parts'][part]['seconds']} s")


def test_a_wheel_missing_from_the_pack_fails_naming_its_module(node, tmp_path):
    venv, tree, _ = node
    shutil.copytree(tree, tmp_path / "repo", ignore=shutil.ignore_patterns("site", "node-check.json"))
    for wheel in (tmp_path / "repo" / "gpu_pack" / "wheels").glob("xxhash-*.whl"):
        wheel.unlink()
    result = run(readme_node_command() + " --tiny", tmp_path / "repo", env=node_env(tmp_path / "home", venv))
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    error = [line for line in result.stdout.splitlines() if line.startswith("gpu_check: error: missing module(s)")]
    assert error and "xxhash" in error[0], result.stdout[-3000:]  # datasets, which imports it, is named too
    assert "gpu_check: missing module xxhash (needed by everything): ModuleNotFoundError" in result.stdout
