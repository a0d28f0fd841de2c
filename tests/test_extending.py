"""docs/extending.md's worked example runs as written: the loss module on that page registers a loss
that equals infonce at smoothing 0, differs from it otherwise, and trains through train.py."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest
import torch

import train
from helpers import REPO, save_tiny_model
from simcse.losses import LOSSES, build_loss

PAGE = REPO / "docs" / "extending.md"


def example_module() -> str:
    """The first Python block after the worked example's heading."""
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index("### A worked example"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture()
def smoothed(tmp_path, monkeypatch):
    """The page's module, imported (which registers its loss) for one test; unregistered afterwards."""
    path = tmp_path / "smoothed_infonce.py"
    path.write_text(example_module(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("docs_smoothed_infonce", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    assert "smoothed_infonce" not in LOSSES
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        LOSSES.pop("smoothed_infonce", None)


def test_the_page_example_registers_a_loss_equal_to_infonce_without_smoothing(smoothed):
    assert LOSSES["smoothed_infonce"] is smoothed.SmoothedInfoNCELoss
    torch.manual_seed(0)
    z1, z2, z3 = (torch.randn(6, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ours = build_loss("smoothed_infonce", smoothing=0.0)(z1, z2, z3)
    grads = torch.autograd.grad(ours, (z1, z2, z3))
    reference = build_loss("infonce")(z1, z2, z3)
    assert torch.allclose(ours, reference, atol=1e-12)
    for a, b in zip(grads, torch.autograd.grad(reference, (z1, z2, z3))):
        assert torch.allclose(a, b, atol=1e-12)
    assert not torch.allclose(build_loss("smoothed_infonce", smoothing=0.1)(z1, z2, z3), reference)
    with pytest.raises(Exception, match="`smoothing` must be in"):
        build_loss("smoothed_infonce", smoothing=1.0)


def test_the_page_example_trains_through_train_py(smoothed, tmp_path):
    model = save_tiny_model(tmp_path / "bert", "bert")
    data = tmp_path / "train.txt"
    data.write_text("".join(f"sentence number {i} about topic {i % 3} .\n" for i in range(8)), encoding="utf-8")
    metrics = train.main(["--model_name_or_path", str(model), "--train_file", str(data), "--output_dir",
                          str(tmp_path / "out"), "--loss_type", "smoothed_infonce", "--loss_kwargs",
                          '{"smoothing": 0.1}', "--per_device_train_batch_size", "4", "--max_steps", "1",
                          "--max_seq_length", "16", "--use_cpu", "--report_to", "none", "--eval_strategy", "no",
                          "--save_strategy", "no"])
    saved = (tmp_path / "out" / "config.json").read_text(encoding="utf-8")
    assert metrics["train_loss"] > 0 and '"name": "smoothed_infonce"' in saved and '"smoothing": 0.1' in saved
