"""Docstring examples run: the loss modules' examples as doctests, the tool's module example on a checkpoint."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import simcse.inference.tool
import simcse.losses
from helpers import save_tiny_model

LOSS_MODULES = sorted(m.name for m in pkgutil.iter_modules(simcse.losses.__path__, "simcse.losses."))
# Modules whose docstrings hold at least one example (so a rewrite that drops them fails here).
WITH_EXAMPLES = {"simcse.losses.align_uniform", "simcse.losses.arccon", "simcse.losses.dcl",
                 "simcse.losses.dhel", "simcse.losses.diagnostics", "simcse.losses.graded",
                 "simcse.losses.infonce", "simcse.losses.margin", "simcse.losses.nt_xent",
                 "simcse.losses.vicreg"}


@pytest.mark.parametrize("name", LOSS_MODULES)
def test_loss_module_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (run python -m doctest -v)"
    if name in WITH_EXAMPLES:
        assert result.attempted > 0, f"{name} lost its docstring examples"


def test_tool_module_example_runs(tmp_path):
    """The example at the top of simcse/inference/tool.py, line by line, on a small BERT checkpoint."""
    checkpoint = save_tiny_model(tmp_path / "ckpt", "bert")
    examples = doctest.DocTestParser().get_examples(simcse.inference.tool.__doc__)
    assert len(examples) >= 4
    namespace: dict = {}
    with pytest.warns(UserWarning, match="records no pooler"):  # a plain BERT directory: cls, with a warning
        for example in examples:
            exec(example.source.replace("result/my-sup-simcse", str(checkpoint)), namespace)
    hits = namespace["model"].search("A man plays a guitar.", top_k=3)
    assert sorted(hit["sentence"] for hit in hits) == ["A person plays music.", "Stocks fell."]
