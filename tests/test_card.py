"""The model card of the sentence-transformers export (simcse.inference.card): every value on it equals the
one in the run's own files (config.json, simcse_run.json, trainer_state.json, --card_results files)."""

from __future__ import annotations

import json

import pytest
from test_backbones import train_args, write_sentences

import evaluation
import simcse_to_huggingface as convert_cli
from helpers import ScriptedEvaluation, save_tiny_model, train_with, write_sts_tree
from simcse.cli import run_cli
from simcse.inference.card import NOT_RECORDED, RUN_FACTS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny LoRA run with a scripted dev evaluation at steps 0, 1 and 2, and its files."""
    root = tmp_path_factory.mktemp("card")
    base = save_tiny_model(root / "base", "bert")
    data = write_sentences(root)
    ckpt = root / "ckpt"
    argv = train_args(base, data, ckpt, "avg", "--max_steps", "2", "--lora_r", "4", "--eval_strategy", "steps",
                      "--eval_steps", "1", "--eval_on_start")
    train_with(argv, ScriptedEvaluation([0.5, 0.61234, 0.7]))
    return root, base, data, ckpt


def card_of(root, ckpt, *extra: str) -> str:
    out = root / f"st{len(extra)}"
    report = convert_cli.main(["--path", str(ckpt), "--output_dir", str(out), "--sentence_transformers",
                               "--overwrite", *extra])
    assert report["model_card"] == str(out / "README.md")
    return (out / "README.md").read_text(encoding="utf-8")


def test_every_value_comes_from_the_run_files(run):
    root, base, data, ckpt = run
    facts = json.loads((ckpt / RUN_FACTS).read_text())
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert facts["base_model"] == str(base) and facts["train_file"] == str(data)
    assert facts["train_examples"] == len(data.read_text().splitlines()) and facts["steps"] == state["global_step"] == 2
    assert facts["global_batch"] == 4 and facts["versions"]["torch"]
    card = card_of(root, ckpt)
    assert f"base_model: {base}" in card
    for row in (f"| training file | {data} |", f"| examples | {facts['train_examples']} |", "| steps | 2 |",
                "| global batch | 4 |", f"| learning rate | {facts['learning_rate']} |", "| seed | 42 |",
                "| pooler | avg |", "| loss | infonce |",
                "| loss hyperparameters | hard_negative_weight=0.0, symmetric=False, temp=0.05 |",
                "| LoRA (merged in this export) | r=4, alpha=8.0, on query,value |", "| embedding width | 32 |"):
        assert row in card, row
    # the scripted dev scores: first (step 0) and last (step 2), x 100
    assert "step 0 and step 2" in card and "| stsb_spearman | 50.00 | 70.00 |" in card
    assert f"torch {facts['versions']['torch']}" in card and NOT_RECORDED not in card
    assert "@inproceedings{gao2021simcse," in card


def test_result_files_add_their_tables(run):
    root, _, _, ckpt = run
    tree = write_sts_tree(root / "data")
    evaluated = root / "eval.json"
    payload = evaluation.main(["--model_name_or_path", str(ckpt), "--pooler", "avg", "--senteval_data", str(tree),
                               "--task_set", "na", "--tasks", "STSBenchmark", "SICKRelatedness", "--output_json",
                               str(evaluated)])
    seeds = root / "multiseed.json"
    seeds.write_text(json.dumps({"seeds": [42, 43], "summary": {
        "STSBenchmark": {"mean": 80.125, "std": 0.5, "n": 2}, "SICKRelatedness": {"mean": 70.0, "std": None, "n": 1}}}))
    card = card_of(root, ckpt, "--card_results", str(evaluated), str(seeds))
    sts = payload["tables"]["sts"]
    assert "| " + " | ".join(sts) + " |" in card
    assert "| " + " | ".join(f"{v:.2f}" for v in sts.values()) + " |" in card
    assert "Over seeds 42, 43 (multiseed.json; mean ± sample std):" in card
    assert "| STSBenchmark | 80.12 ± 0.50 | 2 |" in card and "| SICKRelatedness | 70.00 | 1 |" in card


def test_bad_card_results_are_refused_before_anything_is_written(run, capsys):
    root, _, _, ckpt = run
    out = root / "refused"
    for extra, message in ((["--sentence_transformers", "--card_results", str(root / "none.json")],
                            "--card_results '" + str(root / "none.json") + "' does not exist"),
                           (["--card_results", str(ckpt / "config.json")], "add --sentence_transformers"),
                           (["--sentence_transformers", "--card_results", str(ckpt / "config.json")],
                            "is neither an evaluation.py --output_json file nor a multiseed.json")):
        code = run_cli(convert_cli.main, ["--path", str(ckpt), "--output_dir", str(out), *extra],
                       prog="simcse_to_huggingface.py")
        assert code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]
        assert not out.exists()
