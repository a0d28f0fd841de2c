"""The floors of the project: nothing under simcse/, SentEval/ or bench/ imports a top-level script;
inside simcse/, a layer imports only the layers below it (and its own package); every subpackage says
what it owns; no library module is over 400 lines; every bench script imports (so a library move cannot
silently break one)."""

from __future__ import annotations

import ast
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


BENCH_HELPERS = ("bench_defaults", "child_run")  # modules the bench scripts import; no main() of their own


@pytest.mark.parametrize("path", BENCHES, ids=[p.stem for p in BENCHES])
def test_every_bench_script_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)  # module level only: every bench runs its work under main()
    assert callable(getattr(module, "main", None)) or path.stem in BENCH_HELPERS


# simcse's layers, lowest first: a module may import its own package and any lower layer, never a higher
# one or a sibling of its own layer. The foundation modules sit directly in simcse/.
LAYERS = [
    {"simcse.errors", "simcse.files", "simcse.search", "simcse.distributed", "simcse.cli"},
    {"simcse.data", "simcse.losses"},
    {"simcse.modeling"},
    {"simcse.evaluation", "simcse.inference", "simcse.mine"},
    {"simcse.training"},
]
MAX_LINES = 400


def unit_of(module: str) -> str:
    """The layer unit of a dotted module name: "foundation" (its modules import each other freely), or a
    subpackage of simcse."""
    name = ".".join(module.split(".")[:2])
    return "foundation" if name in LAYERS[0] else name


def layer_of(unit: str) -> int:
    if unit == "foundation":
        return 0
    for rank, units in enumerate(LAYERS):
        if unit in units:
            return rank
    raise AssertionError(f"{unit} is in no layer: add it to tests/test_layout.py LAYERS")


def simcse_imports(path) -> list[str]:
    """Every simcse module a file imports, at any depth (function-level imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "simcse":
            base = node.module
            found += [f"{base}.{a.name}" if base == "simcse" else base for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "simcse"]
    return found


LIBRARY = sorted(p for p in (REPO / "simcse").rglob("*.py") if p.name != "__init__.py" or p.parent.name != "simcse")


def test_every_layer_imports_only_its_own_package_and_lower_layers():
    offenders = []
    for path in LIBRARY:
        own = unit_of(".".join(path.relative_to(REPO).with_suffix("").parts))
        for imported in simcse_imports(path):
            unit = unit_of(imported)
            if unit != own and layer_of(unit) >= layer_of(own):
                offenders.append(f"{path.relative_to(REPO)} imports {imported}")
    assert offenders == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from simcse.training.run import train_model\n", encoding="utf-8")
    assert simcse_imports(bad) == ["simcse.training.run"]
    assert layer_of(unit_of("simcse.training.run")) > layer_of(unit_of("simcse.modeling.encoder"))


def test_every_subpackage_says_what_it_owns_and_may_import():
    for package in sorted(p.parent for p in (REPO / "simcse").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "Imports:" in doc or package.name == "losses", f"{package.name}/__init__.py: say what it may import"


def test_no_library_module_is_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in (REPO / "simcse").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
