"""The papers' recipes in configs/: every file parses with train.py's parser and documents itself (a
``"recipe"`` object with the paper, the reported number, the hardware and the data), flags after the file
override it, unknown keys are errors naming the file, train.py prints the recipe and the global batch, and
(slow tier) every recipe trains two steps on a tiny model of its family, so none can rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import train
from helpers import REPO, save_tiny_model
from simcse.cli import run_cli
from simcse.errors import SimCSEError
from simcse.training.arguments import ModelArguments, parse_train_args
from simcse.training.recipes import global_batch, run_notices

CONFIGS = sorted((REPO / "configs").glob("*.json"))
RECIPE_KEYS = {"paper", "reported", "hardware", "data"}


def config_of(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def is_supervised(config: dict) -> bool:
    return config["train_file"].endswith(".csv")


def small_data(config: dict, directory: Path, lines: int = 16) -> Path:
    """A small training file of the recipe's kind: sentences (.txt) or NLI triplets (.csv)."""
    if is_supervised(config):
        path = directory / "nli.csv"
        rows = [f"a cat sat on mat {i},a cat is sitting {i},no animal is here {i}" for i in range(lines)]
        path.write_text("sent0,sent1,hard_neg\n" + "\n".join(rows) + "\n", encoding="utf-8")
    else:
        path = directory / "wiki.txt"
        path.write_text("\n".join(f"sentence number {i} about the weather" for i in range(lines)) + "\n",
                        encoding="utf-8")
    return path


def family(config: dict) -> str:
    """The tiny model standing in for the recipe's model: gpt2, roberta, or bert (BERT-like MiniLM too)."""
    name = config["model_name_or_path"].lower()
    return "gpt2" if "gpt2" in name else "roberta" if "roberta" in name else "bert"


CPU = ["--fp16", "false", "--use_cpu", "--report_to", "none"]


def test_the_recipes_are_there():
    names = {p.stem for p in CONFIGS}
    for size in ("bert-base", "bert-large", "roberta-base", "roberta-large"):
        assert {f"simcse-unsup-{size}", f"simcse-sup-{size}"} <= names
    assert {"simcse-unsup-gpt2", "met-unsup-bert-base", "mpt-unsup-bert-base", "mat-unsup-bert-base",
            "dcl-unsup-bert-base", "dhel-unsup-bert-base", "kcl-unsup-bert-base", "compare-losses"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_recipe_parses_and_documents_itself(path, tmp_path):
    config = config_of(path)
    recipe = config["recipe"]
    assert RECIPE_KEYS <= set(recipe), f"{path.name}: recipe lacks {RECIPE_KEYS - set(recipe)}"
    assert "output_dir" not in config, "the user gives --output_dir"
    reported = recipe["reported"]
    assert isinstance(reported, dict) and isinstance(reported["sts_avg"], float) or reported.startswith("not reported")
    data = small_data(config, tmp_path)
    model_args, data_args, training_args, _ = parse_train_args(
        [str(path), "--output_dir", str(tmp_path / "out"), "--train_file", str(data), "--model_name_or_path",
         "tiny", *CPU])
    values = {**vars(model_args), **vars(data_args)}
    for key, value in config.items():  # every key of the file reaches its dataclass (but the overridden ones)
        if key in ("recipe", "train_file", "model_name_or_path", "fp16", "report_to"):
            continue
        got = values[key] if key in values else getattr(training_args, key)
        assert str(getattr(got, "value", got)) == str(value) or got == value, (key, got, value)
    assert model_args.model_name_or_path == "tiny" and data_args.train_file == str(data)
    assert training_args.per_device_train_batch_size == recipe.get("global_batch", 512) or is_supervised(config)


def test_the_paper_hyperparameters():
    """Table A.1 of arXiv:2104.08821 (princeton-nlp/SimCSE README): batch and learning rate per model."""
    expected = {"simcse-unsup-bert-base": (64, 3e-5), "simcse-unsup-bert-large": (64, 1e-5),
                "simcse-unsup-roberta-base": (512, 1e-5), "simcse-unsup-roberta-large": (512, 3e-5),
                "simcse-sup-bert-base": (512, 5e-5), "simcse-sup-bert-large": (512, 1e-5),
                "simcse-sup-roberta-base": (512, 5e-5), "simcse-sup-roberta-large": (512, 1e-5)}
    for name, (batch, lr) in expected.items():
        config = config_of(REPO / "configs" / f"{name}.json")
        assert (config["recipe"]["global_batch"], config["learning_rate"]) == (batch, lr), name
        assert config["max_seq_length"] == 32 and config["num_train_epochs"] == (3 if "-sup-" in name else 1)
        assert config.get("mlp_only_train", False) is ("unsup" in name)


def test_flags_after_the_file_win(tmp_path):
    path = REPO / "configs" / "simcse-unsup-bert-base.json"
    data = small_data(config_of(path), tmp_path)
    model_args, _, training_args, _ = parse_train_args(
        [str(path), "--output_dir", str(tmp_path), "--train_file", str(data), "--model_name_or_path", "tiny",
         "--learning_rate", "1e-4", "--per_device_train_batch_size", "8", "--mlp_only_train", "false",
         "--eval_strategy", "no", "--load_best_model_at_end", "false", *CPU])
    assert training_args.learning_rate == 1e-4 and training_args.per_device_train_batch_size == 8
    assert model_args.mlp_only_train is False and training_args.load_best_model_at_end is False
    assert model_args.temp == 0.05 and training_args.num_train_epochs == 1  # the file's, not overridden


def test_a_file_alone_still_works_and_needs_its_required_keys(tmp_path):
    data = tmp_path / "t.txt"
    data.write_text("a\nb\n")
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"model_name_or_path": "m", "train_file": str(data), "output_dir": str(tmp_path),
                                "use_cpu": True, "per_device_train_batch_size": 4}))
    *_, training_args, notices = parse_train_args([str(path)])
    assert training_args.per_device_train_batch_size == 4 and notices == []
    assert run_notices([str(path)]) == []  # no recipe: the global batch is logged, not noticed
    assert global_batch(training_args) == (4, "global batch 4 = 4 per device x 1 process(es) x 1 accumulation step(s)")
    path.write_text(json.dumps({"train_file": str(data), "output_dir": str(tmp_path), "use_cpu": True}))
    with pytest.raises(SystemExit):  # argparse: --model_name_or_path is required, in the file or as a flag
        parse_train_args([str(path)])
    assert parse_train_args([str(path), "--model_name_or_path", "m"])[0].model_name_or_path == "m"


def test_an_unknown_key_names_the_file_and_the_key(tmp_path):
    config = config_of(REPO / "configs" / "simcse-unsup-bert-base.json")
    config["learning_rat"] = 3e-5
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(config))
    with pytest.raises(SimCSEError, match=r"typo\.json: unknown key\(s\) \['learning_rat'\]"):
        parse_train_args([str(path), "--output_dir", str(tmp_path)])
    path.write_text(json.dumps({**config_of(REPO / "configs" / "simcse-unsup-bert-base.json"), "recipe": 3}))
    with pytest.raises(SimCSEError, match="must be an object"):
        parse_train_args([str(path), "--output_dir", str(tmp_path)])


def test_the_recipe_line_prints_where_the_recipe_cannot_run(capsys):
    """`python train.py configs/simcse-unsup-bert-base.json` on a machine without its data (or GPU): the
    recipe and its global batch come first, then the one-line reason it cannot start."""
    code = run_cli(train.main, [str(REPO / "configs" / "simcse-unsup-bert-base.json")], prog="train.py")
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and lines[1].startswith("train.py: error: ")
    assert lines[0] == ("train.py: notice: recipe simcse-unsup-bert-base (arXiv:2104.08821 Table A.1); global batch "
                        "64 = 64 per device x 1 process(es) x 1 accumulation step(s)")


def test_global_batch_counts_processes_and_accumulation(tmp_path, monkeypatch):
    path = REPO / "configs" / "simcse-sup-bert-base.json"
    data = small_data(config_of(path), tmp_path)
    argv = [str(path), "--output_dir", str(tmp_path), "--train_file", str(data), "--model_name_or_path", "m",
            "--gradient_accumulation_steps", "2", *CPU]
    training_args = parse_train_args(argv)[2]  # parsed before WORLD_SIZE is set: one process here
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert global_batch(training_args)[0] == 1024  # the parsed arguments agree with the notice
    assert run_notices(argv) == [
        "recipe simcse-sup-bert-base (arXiv:2104.08821 Table A.1); global batch 1024 = 128 per device x "
        "4 process(es) x 2 accumulation step(s) (the recipe's: 512)"]
    monkeypatch.setenv("RANK", "1")
    assert run_notices(argv) == []  # one line per run, from the main process


def test_train_py_prints_the_recipe_and_global_batch(tmp_path, capsys):
    path = REPO / "configs" / "simcse-unsup-bert-base.json"
    model = save_tiny_model(tmp_path / "tiny", "bert")
    argv = [str(path), "--output_dir", str(tmp_path / "out"), "--model_name_or_path", str(model),
            "--train_file", str(small_data(config_of(path), tmp_path)), "--max_steps", "2",
            "--eval_strategy", "no", "--load_best_model_at_end", "false", "--save_strategy", "no",
            "--per_device_train_batch_size", "4", *CPU]
    assert run_cli(train.main, argv, prog="train.py") == 0
    err = capsys.readouterr().err
    assert ("train.py: notice: recipe simcse-unsup-bert-base (arXiv:2104.08821 Table A.1); global batch 4 = "
            "4 per device x 1 process(es) x 1 accumulation step(s) (the recipe's: 64)") in err.splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_recipe_trains_two_steps(path, tmp_path):
    config = config_of(path)
    model = save_tiny_model(tmp_path / "tiny", family(config))
    argv = [str(path), "--output_dir", str(tmp_path / "out"), "--model_name_or_path", str(model),
            "--train_file", str(small_data(config, tmp_path)), "--max_steps", "2", "--num_train_epochs", "1",
            "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--load_best_model_at_end", "false",
            "--save_strategy", "no", "--logging_steps", "1", *CPU]
    model_args, data_args, training_args, _ = parse_train_args(argv)
    assert model_args.loss_type == config.get("loss_type", ModelArguments.loss_type)
    assert run_cli(train.main, argv, prog="train.py") == 0
    assert (tmp_path / "out" / "config.json").is_file()
