"""The floors of the project: nothing under simcse/, SentEval/ or bench/ imports a top-level script, and
every bench script imports (so a library move cannot silently break one)."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from helpers import REPO

SCRIPT_IMPORT = re.compile(r"^\s*(from|import) (train|evaluation|simcse_to_huggingface)\b", re.MULTILINE)
BENCHES = sorted(p for p in (REPO / "bench").glob("*.py"))


def test_no_library_or_bench_module_imports_a_script():
    offenders = [f"{path.relative_to(REPO)}: {match.group(0).strip()}"
                 for folder in ("simcse", "SentEval", "bench") for path in (REPO / folder).rglob("*.py")
                 for match in SCRIPT_IMPORT.finditer(path.read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.parametrize("path", BENCHES, ids=[p.stem for p in BENCHES])
def test_every_bench_script_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)  # module level only: every bench runs its work under main()
    assert callable(getattr(module, "main", None)) or path.stem == "bench_defaults"
