"""pytest fixtures shared by the whole suite; the helpers they use live in tests/helpers.py (importable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import save_tiny_model


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")
