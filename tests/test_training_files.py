"""Misread training files are refused by the reader, naming the file and the line, before train.py loads the
model: a CSV quote that spans lines, a score that is not a finite number, a quote never closed; and the
.json/.jsonl/.txt readers' line numbers. Valid files (quoted commas, doubled quotes) still read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import train
from helpers import save_tiny_model
from simcse.cli import run_cli
from simcse.data import column_roles, load_training_dataset
from simcse.data.reading import row_location
from simcse.errors import SimCSEError
from simcse.modeling.models import BertForCL

HEADER = "sent0,sent1,score\n"
GOOD = ["a man is playing a flute,a man plays a flute,4.2", "a dog runs,a cat sleeps,0.4",
        "the man plays the guitar,a man is playing a guitar,4.8", "the stock market fell,stocks dropped,4.0",
        "a woman cuts an onion,someone slices an onion,3.9", "kids play football,children play soccer,4.5"]

# Line 4 opens a quote that line 5 closes: Python's csv would join them into one cell.
SPANNING = HEADER + "\n".join(GOOD[:2] + ['"' + GOOD[2], 'the stock market fell",stocks dropped,4.0'] + GOOD[4:]) + "\n"
# File line 6 (data row 5) holds a word where the score belongs.
BAD_SCORE = HEADER + "\n".join(GOOD[:4] + ["a woman cuts an onion,someone slices an onion,high", GOOD[5]]) + "\n"
# Line 4 opens a quote that no line closes: the rest of the file would be swallowed.
UNCLOSED = HEADER + "\n".join(GOOD[:2] + ['"' + GOOD[2]] + GOOD[3:]) + "\n"
# Quoted commas and doubled quotes, a blank line, CRLF line ends: all valid.
VALID = ('sent0,sent1,score\r\n"a man, with a hat, plays",a man plays,4.2\r\n\r\n'
         'she said ""hi"",\"she said \"\"hi\"\", twice\",3.5\r\n"x",y,1e-1\r\n')

CASES = {
    "spanning": (SPANNING, 4, 'a quoted cell opened on this line runs on to line 5, but a training file holds one '
                              'example per line (an unclosed " quote?); close the quote on line 4, or write a '
                              'quote inside a quoted cell as "" (doubled)'),
    "bad-score": (BAD_SCORE, 6, "the 'score' column holds 'high', not a finite number"),
    "unclosed": (UNCLOSED, 4, 'a " quote opened on this line is never closed (the file ends inside it, on line 7); '
                              'close the quote on line 4'),
}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "bert", "bert")


class _Loaded(Exception):
    """Raised by the recording from_pretrained: the run got as far as loading the model."""


@pytest.fixture
def model_loads(monkeypatch):
    """Record every BertForCL.from_pretrained call (and stop the run there)."""
    calls = []

    def recording(cls, *args, **kwargs):
        calls.append(args)
        raise _Loaded

    monkeypatch.setattr(BertForCL, "from_pretrained", classmethod(recording))
    return calls


def write(directory: Path, content: str, name: str = "graded.csv") -> Path:
    path = directory / name
    path.write_text(content, encoding="utf-8", newline="")
    return path


def train_argv(model_dir: Path, train_file: Path, tmp_path: Path) -> list[str]:
    return ["--model_name_or_path", str(model_dir), "--train_file", str(train_file), "--output_dir",
            str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--loss_type", "cosent",
            "--per_device_train_batch_size", "2", "--max_steps", "1", "--report_to", "none", "--use_cpu",
            "--save_strategy", "no", "--eval_strategy", "no", "--max_seq_length", "16"]


# ----- through train.py -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_train_py_refuses_the_file_before_loading_the_model(case, tiny_bert, tmp_path, capsys, model_loads):
    content, line, message = CASES[case]
    path = write(tmp_path, content)
    code = run_cli(train.main, train_argv(tiny_bert, path, tmp_path), prog="train.py")
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if not line.startswith("train.py: notice: ")]  # the start-up notice may precede
    assert code == 2 and len(errors) == 1 and errors == lines[-1:], lines
    assert errors[0].startswith(f"train.py: error: training file {path}, line {line}: ") and message in errors[0]
    assert model_loads == [], "the model was loaded before the training file was refused"


def test_train_py_reads_a_valid_file_up_to_the_model(tiny_bert, tmp_path, capsys, model_loads):
    with pytest.raises(_Loaded):
        train.main(train_argv(tiny_bert, write(tmp_path, VALID), tmp_path))
    assert len(model_loads) == 1


# ----- the reader -----------------------------------------------------------------------------------


def read(path: Path, train_columns: str | None = None):
    dataset = load_training_dataset(path, cache_dir=path.parent / "cache")
    return dataset, column_roles(dataset, train_columns, where=f"training file {path}")


@pytest.mark.parametrize("case", list(CASES))
def test_the_reader_names_the_file_and_line(case, tmp_path):
    content, line, message = CASES[case]
    path = write(tmp_path, content)
    with pytest.raises(SimCSEError) as caught:
        read(path)
    assert str(caught.value).startswith(f"training file {path}, line {line}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_valid_csv_with_quoted_commas_still_reads(tmp_path):
    dataset, roles = read(write(tmp_path, VALID))
    assert dataset[:] == {"sent0": ["a man, with a hat, plays", 'she said ""hi""', "x"],
                          "sent1": ["a man plays", 'she said "hi", twice', "y"], "score": ["4.2", "3.5", "1e-1"]}
    assert roles.score == "score" and [row_location(dataset, k) for k in range(3)] == ["line 2", "line 4", "line 5"]


@pytest.mark.parametrize("cell, held", [("nan", "'nan'"), ("inf", "'inf'"), ("-Infinity", "'-Infinity'"),
                                        ("1e39", "'1e39'"), ("", "nothing (an empty cell)")])
def test_non_finite_and_empty_scores_are_refused(cell, held, tmp_path):
    path = write(tmp_path, HEADER + GOOD[0] + "\n\n" + f"a,b,{cell}\n")
    with pytest.raises(SimCSEError, match=rf"graded.csv, line 4: the 'score' column holds {re.escape(held)}, not a"):
        read(path)


def test_a_declared_score_column_is_checked_by_file_line(tmp_path):
    path = write(tmp_path, "premise,hypothesis,similarity\na,b,1\n\n\nc,d,five\n")
    assert read(path)[1].score is None  # undeclared: 'five' is no number, so column 3 is sentences
    with pytest.raises(SimCSEError, match=r"graded.csv, line 5: the 'similarity' column holds 'five'"):
        read(path, "sent0,sent1,score")


def test_a_quote_closed_mid_cell_and_a_lone_carriage_return(tmp_path):
    with pytest.raises(SimCSEError, match=r"line 3: not valid CSV \(',' expected after '\"'.*close the quote on li"):
        read(write(tmp_path, HEADER + GOOD[0] + '\na,"he said "hi" ok",1\n'))
    with pytest.raises(SimCSEError, match=r"line 2: a lone carriage return \(\\r\) in an unquoted cell"):
        read(write(tmp_path, "sent0,sent1\na\rb,c\n"))
    with pytest.raises(SimCSEError, match=r"line 2: a quoted cell opened on this line holds a line break"):
        read(write(tmp_path, 'sent0,sent1\n"a\rb",c\n'))


def test_json_lines_and_arrays_name_the_line(tmp_path):
    records = '[\n  {"sent0": "a", "sent1": "b", "score": 1},\n\n  {"sent0": "c", "sent1": "d", "score": NaN}\n]\n'
    with pytest.raises(SimCSEError, match=r"t.json, line 4 \(record 2\): the 'score' column holds 'NaN'"):
        read(write(tmp_path, records, "t.json"))
    with pytest.raises(SimCSEError, match=r"t.json, line 3: not valid JSON \(Expecting ',' delimiter"):
        read(write(tmp_path, '[\n {"sent0": "a"},\n {"sent0": "b" "sent1": "c"}\n]', "t.json"))
    with pytest.raises(SimCSEError, match=r"t.json, line 2: not valid JSON \(Expecting value"):
        read(write(tmp_path, '[{"sent0": "a"},\n]', "t.json"))
    with pytest.raises(SimCSEError, match=r"t.jsonl, line 3: the 'score' column holds 'x'"):
        read(write(tmp_path, '{"sent0": "a", "sent1": "b", "score": 2.5}\n\n{"sent0": "c", "sent1": "d", '
                             '"score": "x"}\n', "t.jsonl"))


def test_txt_rows_keep_their_file_lines(tmp_path):
    dataset, _ = read(write(tmp_path, "first\n\n  \nsecond\r\nthird", "t.txt"))
    assert dataset["text"] == ["first", "second", "third"]
    assert [row_location(dataset, k) for k in range(3)] == ["line 1", "line 4", "line 5"]
    # a view carries no line numbers (select() of contiguous rows is a slice that shares the cache file)
    assert row_location(dataset.select([1]), 0) == "row 1" and row_location(dataset.select([2, 0]), 0) == "row 1"
