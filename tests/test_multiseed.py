"""python -m simcse.multiseed: three seeds of a tiny CPU run, evaluated with the recorded pooler, and a
mean ± std row that is the numpy mean / sample std of the per-seed figures."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import save_tiny_model, write_sts_tree
from simcse import multiseed
from simcse.cli import run_cli
from simcse.errors import SimCSEError

SENTENCES = [f"sentence number {i} about a topic {i % 3}" for i in range(12)]
TASKS = ["STSBenchmark", "SICKRelatedness"]


def train_args(tmp_path, out):
    model = save_tiny_model(tmp_path / "tiny-bert", "bert")
    train_file = tmp_path / "train.txt"
    train_file.write_text("\n".join(SENTENCES) + "\n")
    return ["--model_name_or_path", str(model), "--train_file", str(train_file), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--max_steps", "2", "--learning_rate", "1e-2",
            "--report_to", "none", "--use_cpu", "--save_strategy", "no", "--eval_strategy", "no",
            "--max_seq_length", "16", "--pooler_type", "cls", "--mlp_only_train"]


def parse_cell(cell: str) -> tuple[float, float]:
    mean, std = (float(x) for x in cell.split("±"))
    return mean, std


def test_three_seeds_mean_and_std(tmp_path, capsys):
    data = write_sts_tree(tmp_path / "data")
    out = tmp_path / "runs"
    seeds = [1, 2, 3]
    result = multiseed.main(["--seeds", ",".join(map(str, seeds)), "--tasks", *TASKS, "--senteval_data", str(data),
                             "--", *train_args(tmp_path, out)])
    printed = capsys.readouterr().out

    assert list(result["runs"]) == seeds
    for seed in seeds:
        run = result["runs"][seed]
        assert run["output_dir"] == str(out / f"seed-{seed}") and run["pooler"] == "cls_before_pooler"
        assert json.loads((out / f"seed-{seed}" / "config.json").read_text())["mlp_only_train"] is True
    weights = [load_file(out / f"seed-{s}" / "model.safetensors")["mlp.dense.weight"] for s in seeds]
    assert not np.allclose(weights[0].numpy(), weights[1].numpy())  # the seeds really differ

    # the last table row is "mean ± std" per column; recompute it from the per-seed figures
    summary_block = printed.split("------ test: 3 seeds, mean ± std (sample std, ddof 1) ------")[1]
    rows = [line for line in summary_block.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["seed", *TASKS, "Avg."]
    last = [c.strip() for c in rows[-1].strip("|").split("|")]
    assert last[0] == "mean ± std"
    for column, cell in zip(header[1:], last[1:]):
        values = np.array([result["runs"][s]["scores"][column] for s in seeds])
        mean, std = parse_cell(cell)
        assert mean == pytest.approx(round(float(np.mean(values)), 2), abs=1e-9)
        assert std == pytest.approx(round(float(np.std(values, ddof=1)), 2), abs=1e-9)
        assert result["summary"][column]["mean"] == pytest.approx(np.mean(values))
        assert result["summary"][column]["std"] == pytest.approx(np.std(values, ddof=1))
    for seed, line in zip(seeds, rows[1:-1]):  # the per-seed rows are the evaluation.py figures
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == str(seed)
        assert [float(c) for c in cells[1:]] == [result["runs"][seed]["scores"][c] for c in header[1:]]
        evaluated = json.loads((out / f"seed-{seed}" / "eval_results.json").read_text())
        assert evaluated["pooler"] == "cls_before_pooler" and evaluated["tables"]["sts"] == result["runs"][seed]["scores"]
    saved = json.loads((out / "multiseed.json").read_text())
    assert saved["seeds"] == seeds and saved["std_ddof"] == 1
    assert re.search(r"wrote .*multiseed\.json", printed)


def test_seed_arguments_are_replaced():
    args = ["--model_name_or_path", "m", "--output_dir", "base", "--learning_rate", "1e-2"]
    assert multiseed.seed_train_args(args, 7, "base/seed-7") == [
        "--model_name_or_path", "m", "--learning_rate", "1e-2", "--output_dir", "base/seed-7", "--seed", "7"]
    assert multiseed.seed_train_args(["--output_dir=base"], 7, "x")[-4:] == ["--output_dir", "x", "--seed", "7"]


def test_json_train_arguments(tmp_path):
    config = tmp_path / "args.json"
    config.write_text(json.dumps({"model_name_or_path": "m", "output_dir": str(tmp_path / "runs")}))
    assert multiseed.base_output_dir([str(config)]) == str(tmp_path / "runs")
    [path] = multiseed.seed_train_args([str(config)], 5, str(tmp_path / "runs" / "seed-5"))
    assert json.loads(open(path).read()) == {"model_name_or_path": "m", "output_dir": str(tmp_path / "runs" / "seed-5"),
                                             "seed": 5}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "1,x", "--", "--output_dir", "o"], "--seeds '1,x' must be comma-separated integers"),
        (["--seeds", "1,1", "--", "--output_dir", "o"], "repeats a seed"),
        (["--seeds", "1", "--", "--output_dir", "o", "--seed", "3"], "set --seed; remove it"),
        (["--seeds", "1", "--", "--learning_rate", "1"], "need --output_dir"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    code = run_cli(multiseed.main, argv, prog="multiseed")
    assert code == 2 and message in capsys.readouterr().err


def test_missing_train_arguments(capsys):
    with pytest.raises(SystemExit) as stop:
        multiseed.main(["--seeds", "1"])
    assert stop.value.code == 2 and "give the train.py arguments after --" in capsys.readouterr().err


def test_summary_of_one_seed_has_zero_std():
    assert multiseed.summarize({1: {"A": 70.0}}) == {"A": {"mean": 70.0, "std": 0.0, "n": 1}}
    with pytest.raises(SimCSEError):
        multiseed.parse_seeds(" , ")
