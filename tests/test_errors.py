"""Library errors name arguments; entry points print them as flags (simcse.errors.as_flags)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import train
from helpers import REPO
from simcse.cli import run_cli
from simcse.errors import SimCSEError, as_flags
from simcse.training.arguments import ModelArguments


def test_as_flags_turns_backticked_names_into_flags_and_leaves_commands():
    assert as_flags("`temp` must be > 0; see `loss_type` dcl") == "--temp must be > 0; see --loss_type dcl"
    # A quoted command holds spaces: not an argument name, kept as written.
    assert as_flags("run `bash data/download_wiki.sh` or pip install --no-deps x") == \
        "run `bash data/download_wiki.sh` or pip install --no-deps x"


def test_the_same_check_speaks_to_python_and_to_the_command_line(tmp_path, capsys):
    with pytest.raises(SimCSEError) as err:
        ModelArguments(model_name_or_path="m", loss_type="met", margin=-0.1)
    assert "`margin` must be >= 0" in str(err.value) and "--margin" not in str(err.value)
    code = run_cli(train.main, ["--model_name_or_path", "m", "--loss_type", "met", "--margin", "-0.1",
                                "--train_file", "x.txt", "--output_dir", str(tmp_path / "o")], prog="train.py")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("train.py: error: --margin must be >= 0, got -0.1"), last


FLAG = re.compile(r"(?<![\w`-])--[a-z][a-z0-9_]*")
# Commands a message quotes for the user to run keep their literal flags.
COMMAND = re.compile(r"(pip install|python \S+|torchrun) --")


def test_no_library_error_message_names_a_flag():
    offenders = []
    for path in sorted((REPO / "simcse").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "SimCSEError":
                text = "".join(c.value for c in ast.walk(node)
                               if isinstance(c, ast.Constant) and isinstance(c.value, str))
                for match in FLAG.finditer(text):
                    if not COMMAND.search(text[max(0, match.start() - 40):match.end()]):
                        offenders.append(f"{Path(path).relative_to(REPO)}:{node.lineno}: {match.group(0)}")
    assert offenders == []
