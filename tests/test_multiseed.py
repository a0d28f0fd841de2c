"""python -m simcse.training.multiseed: three seeds of a tiny CPU run, evaluated with the recorded pooler; mean ± std
and the t-interval from the unrounded scores (numpy / scipy recomputed), n=1 without a fake spread,
resuming after a crash at each stage, and the paired comparison (scipy's ttest_rel)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file
from scipy import stats

from helpers import save_tiny_model, write_sts_tree
from simcse.cli import run_cli
from simcse.errors import SimCSEError
from simcse.evaluation import report as evaluators
from simcse.training import multiseed, seed_statistics
from simcse.training import run as training

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


@pytest.mark.slow
def test_three_seeds_mean_std_ci_and_resume(tmp_path, capsys, monkeypatch):
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

    # the last two rows: "mean ± std" and "95% CI" per column, from the unrounded per-seed scores
    summary_block = printed.split("------ test: 3 seeds, mean ± std (sample std, ddof 1), 95% CI of the mean "
                                  "(t, 2 df) ------")[1]
    rows = [line for line in summary_block.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["seed", *TASKS, "Avg."]
    mean_row = [c.strip() for c in rows[-2].strip("|").split("|")]
    ci_row = [c.strip() for c in rows[-1].strip("|").split("|")]
    assert mean_row[0] == "mean ± std" and ci_row[0] == "95% CI"
    for column, cell, ci in zip(header[1:], mean_row[1:], ci_row[1:]):
        values = np.array([result["runs"][s]["scores"][column] for s in seeds])
        mean, std = parse_cell(cell)
        assert mean == pytest.approx(round(float(np.mean(values)), 2), abs=1e-9)
        assert std == pytest.approx(round(float(np.std(values, ddof=1)), 2), abs=1e-9)
        assert result["summary"][column]["mean"] == pytest.approx(np.mean(values))
        assert result["summary"][column]["std"] == pytest.approx(np.std(values, ddof=1))
        low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
        assert result["summary"][column]["ci95"] == pytest.approx([low, high])
        assert ci == f"[{low:.2f}, {high:.2f}]"
    for seed, line in zip(seeds, rows[1:-2]):  # per-seed rows: the unrounded scores, printed as evaluation.py does
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == str(seed)
        run = result["runs"][seed]
        assert cells[1:] == [f"{run['scores'][c]:.2f}" for c in header[1:]]
        evaluated = json.loads((out / f"seed-{seed}" / "eval_results.json").read_text())
        assert evaluated["pooler"] == "cls_before_pooler" and evaluated["tables"]["sts"] == run["printed"]
        for task in TASKS:  # unrounded: the Spearman x 100 SentEval returned, which evaluation.py rounds
            assert run["scores"][task] == 100 * evaluated["results"][task]["test"]["spearman"]
            assert round(run["scores"][task], 2) == run["printed"][task]
        assert run["scores"]["Avg."] == pytest.approx(np.mean([run["scores"][t] for t in TASKS]))
    saved = json.loads((out / "multiseed.json").read_text())
    assert saved["seeds"] == seeds and saved["std_ddof"] == 1 and saved["complete"] is True
    assert re.search(r"wrote .*multiseed\.json", printed)

    # Resumable. The same command again: every seed is read back, nothing is trained or evaluated.
    def refuse(*args, **kwargs):
        raise AssertionError("must not run again")

    argv = ["--seeds", "1,2,3", "--tasks", *TASKS, "--senteval_data", str(data), "--", *train_args(tmp_path, out)]
    monkeypatch.setattr(training, "train_model", refuse)
    with monkeypatch.context() as patch:
        patch.setattr(evaluators, "evaluate", refuse)
        again = multiseed.main(argv)
    assert again["summary"] == result["summary"] and "seed 3: already done" in capsys.readouterr().out
    # A crash after seed 2 was trained but before it was scored: seed 2 is evaluated, not retrained.
    (out / "seed-2" / multiseed.SEED_RESULT).unlink()
    (out / "multiseed.json").unlink()
    resumed = multiseed.main(argv)
    assert "seed 2: trained earlier" in capsys.readouterr().out
    assert resumed["runs"][2]["scores"] == result["runs"][2]["scores"]
    assert json.loads((out / "multiseed.json").read_text())["complete"] is True
    # The same folder with other training arguments: refused, nothing overwritten.
    other = [a if a != "1e-2" else "2e-2" for a in train_args(tmp_path, out)]
    with pytest.raises(SimCSEError, match=r"seed-1' was started with other settings"):
        multiseed.main(["--seeds", "1", "--tasks", *TASKS, "--senteval_data", str(data), "--", *other])


@pytest.mark.slow
def test_a_seed_killed_mid_training_resumes_from_its_checkpoint(tmp_path, capsys):
    data = write_sts_tree(tmp_path / "data")
    out = tmp_path / "runs"
    args = train_args(tmp_path, out)
    at = args.index("--save_strategy")
    args[at:at + 2] = ["--save_strategy", "steps", "--save_steps", "1"]  # a checkpoint after each of the 2 steps
    argv = ["--seeds", "5", "--mode", "dev", "--tasks", "STSBenchmark", "--senteval_data", str(data), "--", *args]
    first = multiseed.main(argv)
    seed_dir = out / "seed-5"
    # what a kill during step 2 leaves: checkpoint-1 complete, no final model, no result
    shutil.rmtree(seed_dir / "checkpoint-2")
    for name in ("model.safetensors", "simcse_model.json", multiseed.SEED_RESULT):
        (seed_dir / name).unlink()
    capsys.readouterr()
    second = multiseed.main(argv)
    assert f"seed 5: resuming in {seed_dir} from {seed_dir / 'checkpoint-1'}" in capsys.readouterr().out
    assert (seed_dir / "model.safetensors").is_file() and set(second["runs"][5]["scores"]) == {"STSBenchmark"}
    assert list(first["runs"]) == list(second["runs"]) == [5]


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


def test_one_seed_says_n_1_instead_of_a_zero_spread():
    summary = seed_statistics.summarize({1: {"A": 70.0}})
    assert summary == {"A": {"mean": 70.0, "std": None, "n": 1, "ci95": None}}
    table = seed_statistics.render({1: {"A": 70.0}}, summary)
    assert "70.00 (n=1)" in table and "n/a (n=1)" in table and "± 0.00" not in table
    assert "1 seed (n=1" in seed_statistics.summary_title("test", 1)
    with pytest.raises(SimCSEError):
        multiseed.parse_seeds(" , ")


def test_statistics_use_the_unrounded_scores():
    # printed 70.00, 70.00, 70.01 (mean 70.00); the unrounded mean is 70.0073 -> 70.01
    payloads = [{"mode": "dev", "sts_agg": "all", "tables": {"sts": {"STSBenchmark": round(v * 100, 2)}},
                 "results": {"STSBenchmark": {"dev": {"spearman": v}}}} for v in (0.700040, 0.700040, 0.700140)]
    per_seed = {seed: seed_statistics.unrounded_scores(p) for seed, p in enumerate(payloads)}
    assert [row["STSBenchmark"] for row in per_seed.values()] == pytest.approx([70.004, 70.004, 70.014])
    summary = seed_statistics.summarize(per_seed)
    assert f"{summary['STSBenchmark']['mean']:.2f}" == "70.01"
    assert np.mean([p["tables"]["sts"]["STSBenchmark"] for p in payloads]) == pytest.approx(70.0033, abs=1e-4)


def test_unrounded_scores_follow_the_printed_columns():
    results = {"STS12": {"all": {"spearman": {"all": 0.61234, "mean": 0.6, "wmean": 0.62}}},
               "STSBenchmark": {"test": {"spearman": 0.80006}},
               "MR": {"acc": 80.5, "devacc": 81.0}, "CR": {"acc": 85.25, "devacc": 86.0}}
    payload = {"mode": "test", "sts_agg": "mean", "results": results,
               "tables": {"sts": {"STS12": 60.0, "STSBenchmark": 80.01, "Avg.": 70.0},
                          "transfer": {"MR": 80.5, "CR": 85.25, "Avg.": 82.88}}}
    scores = seed_statistics.unrounded_scores(payload)
    assert scores == pytest.approx({"STS12": 60.0, "STSBenchmark": 80.006, "Avg. (STS)": 70.003,
                                    "MR": 80.5, "CR": 85.25, "Avg. (transfer)": 82.875})
    assert list(scores) == ["STS12", "STSBenchmark", "Avg. (STS)", "MR", "CR", "Avg. (transfer)"]


def test_paired_comparison_is_the_paired_t_test(tmp_path, capsys):
    a = {1: {"X": 80.1, "Y": 70.0}, 2: {"X": 79.5, "Y": 71.0}, 3: {"X": 80.9, "Y": 69.5}, 4: {"X": 81.2, "Y": 70.2}}
    b = {1: {"X": 79.0, "Y": 70.1}, 2: {"X": 79.1, "Y": 70.4}, 3: {"X": 80.0, "Y": 70.0}, 9: {"X": 1.0, "Y": 1.0}}
    comparison = seed_statistics.paired_comparison(a, b)
    for column in ("X", "Y"):
        x, y = [a[s][column] for s in (1, 2, 3)], [b[s][column] for s in (1, 2, 3)]
        test = stats.ttest_rel(x, y)
        c = comparison[column]
        assert c["n"] == 3 and c["seeds"] == [1, 2, 3]  # seeds 4 and 9 are not in both
        assert c["t"] == pytest.approx(test.statistic) and c["p"] == pytest.approx(test.pvalue)
        d = np.subtract(x, y)
        assert c["ci95"] == pytest.approx(list(stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))))
    one = seed_statistics.paired_comparison({1: {"X": 2.0}}, {1: {"X": 1.5}})
    assert one["X"]["mean_diff"] == 0.5 and one["X"]["p"] is None and "n/a (n=1)" in seed_statistics.render_comparison(
        one, "A", "B")
    with pytest.raises(SimCSEError, match=r"no seed in common"):
        seed_statistics.paired_comparison({1: {"X": 1.0}}, {2: {"X": 1.0}})
    # from the command line, on two multiseed.json files
    paths = []
    for name, per_seed in (("a", a), ("b", b)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"runs": {str(s): {"scores": row} for s, row in per_seed.items()}}))
        paths.append(str(path))
    result = multiseed.main(["--compare", *paths])
    assert result["comparison"]["X"]["p"] == pytest.approx(comparison["X"]["p"])
    printed = capsys.readouterr().out
    assert "mean diff (A - B)" in printed and f"{comparison['X']['mean_diff']:+.2f}" in printed
