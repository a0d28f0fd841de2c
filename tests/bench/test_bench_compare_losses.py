"""bench/compare_losses.py: per-(loss, seed) results written as they complete, resumed, summarised as
mean ± std with the overlap rule; training and evaluation replaced by fakes with known scores."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from helpers import REPO, write_sts_tree

pytestmark = pytest.mark.slow  # runs a bench script end to end

# STS avg of each fake run: infonce 70 ± 1, dcl 70.5 ± 1 (overlaps), cosent 80 ± 1 (beyond the spread)
FAKE = {"infonce": 70.0, "dcl": 70.5, "cosent": 80.0}


def load_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("compare_losses", REPO / "bench" / "compare_losses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench(monkeypatch, tmp_path):
    module = load_bench(monkeypatch)
    calls = []

    def fake_train(model_args, data_args, training_args):
        out, loss, seed = training_args.output_dir, model_args.loss_type, training_args.seed
        calls.append((loss, seed, data_args.train_file))
        import os

        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "config.json"), "w") as handle:
            json.dump({"simcse_loss": {"name": loss, "temp": 0.05}, "seed": seed}, handle)
        return {}

    def fake_evaluation(config):
        path = config.model_name_or_path
        if "seed" not in path:  # the start model
            return {"tables": {"sts": {"Avg.": 60.0, "STSBenchmark": 61.0}}}
        saved = json.loads(open(f"{path}/config.json").read())
        value = FAKE[saved["simcse_loss"]["name"]] + (saved["seed"] - 2)  # seeds 1, 2, 3: mean, std 1
        return {"tables": {"sts": {"Avg.": value, "STSBenchmark": value + 1}}}

    def fake_args(**values):  # the three argument groups, without the file checks (no real data here)
        from types import SimpleNamespace as NS

        return (NS(loss_type=values["loss_type"]), NS(train_file=values["train_file"]),
                NS(output_dir=values["output_dir"], seed=values["seed"]))

    def fake_retrieval(model, folders):  # nDCG@10 per proxy: the loss's STS value minus 10, 20, 30
        if "seed" not in model:  # the start model
            return {name: 40.0 for name in folders}
        saved = json.loads(open(f"{model}/config.json").read())
        value = FAKE[saved["simcse_loss"]["name"]] + (saved["seed"] - 2)
        return {name: value - 10 * (i + 1) for i, name in enumerate(folders)}

    monkeypatch.setattr(module, "proxy_folders", lambda out, data, nli: {f"{s}_proxy": s for s in module.PROXIES})
    monkeypatch.setattr(module, "retrieval_scores", fake_retrieval)
    monkeypatch.setattr(module, "make_train_args", fake_args)
    monkeypatch.setattr(module, "train_model", fake_train)
    monkeypatch.setattr(module, "evaluate", fake_evaluation)
    module.calls = calls
    module.data = str(write_sts_tree(tmp_path / "data"))
    module.nli = tmp_path / "nli.csv"
    module.nli.write_text("sent0,sent1,hard_neg\n", encoding="utf-8")
    return module


def test_results_are_written_summarised_and_resumed(bench, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["--losses", "infonce,dcl,cosent", "--seeds", "1,2,3", "--steps", "5", "--output_dir", str(out),
            "--senteval_data", bench.data, "--train_file", "wiki.txt", "--nli_file", str(bench.nli), "--model",
            "start-model"]
    rows = bench.main(argv)
    assert len(bench.calls) == 9 and {c[2] for c in bench.calls if c[0] == "cosent"} == {
        str(out / "stsb-train-scored.csv")}  # graded losses train on STS-B train, written once
    assert {c[2] for c in bench.calls if c[0] != "cosent"} == {"wiki.txt"}
    assert sorted(p.name for p in (out / "results").iterdir()) == sorted(
        [f"{loss}-seed{s}.json" for loss in FAKE for s in (1, 2, 3)] + ["start.json"])
    summary = {row["loss"]: row for row in rows}
    assert summary["cosent"]["sts_avg"] == pytest.approx((80.0, 1.0))
    assert summary["cosent"]["vs_reference"] == ">" and summary["dcl"]["vs_reference"] == "≈"
    assert summary["infonce"]["vs_reference"] == "-"
    table = (out / "compare_losses.md").read_text()
    assert ("| cosent | stsb-train | 3 | 80.00 ± 1.00 | 81.00 ± 1.00 | > | 60.00 ± 1.00 | 70.00 | 60.00 | 50.00 |"
            in table)  # the retrieval columns: the proxies' average nDCG@10, then each proxy's mean
    header, rule = [line for line in table.splitlines() if line.startswith("|")][:2]
    assert header.count("|") == rule.count("|") == 12  # 11 columns, a well-formed markdown table
    assert ("Start model, no training: STS avg 60.00, STS-B test 61.00, retrieval nDCG@10 40.00 (stsb_proxy 40.00 / "
            "sickr_proxy 40.00 / nli_proxy 40.00)") in table and (out / "compare_losses.png").is_file()
    assert "total compute time of these results" in capsys.readouterr().out

    bench.calls.clear()  # a second sitting: nothing to redo ...
    bench.main(argv)
    assert bench.calls == []
    (out / "results" / "dcl-seed2.json").unlink()  # ... except a result that is missing
    bench.main(argv)
    assert [c[:2] for c in bench.calls] == [("dcl", 2)]
    with pytest.raises(SystemExit, match="computed with other settings"):
        bench.main([*argv[:-2], "--model", "start-model", "--steps", "7"])

    # a result from before the retrieval columns is completed by training the run again (deterministic)
    old = json.loads((out / "results" / "cosent-seed3.json").read_text())
    for key in ("retrieval", "retrieval_avg"):
        old.pop(key)
    (out / "results" / "cosent-seed3.json").write_text(json.dumps(old))
    bench.calls.clear()
    bench.main(argv)
    assert [c[:2] for c in bench.calls] == [("cosent", 3)]
    again = json.loads((out / "results" / "cosent-seed3.json").read_text())
    assert again["sts_avg"] == old["sts_avg"] and again["retrieval"] == {"stsb_proxy": 71.0, "sickr_proxy": 61.0,
                                                                         "nli_proxy": 51.0}


def test_the_overlap_rule(bench):
    assert bench.verdict((72.0, 1.0), (70.0, 0.5)) == ">"
    assert bench.verdict((70.0, 1.0), (72.0, 0.9)) == "<"
    assert bench.verdict((71.0, 1.0), (70.0, 0.5)) == "≈"
    assert bench.verdict((71.0, math.nan), (70.0, 0.5)) == "?"
    assert bench.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)


def test_an_interrupted_sitting_leaves_a_current_table(bench, tmp_path, monkeypatch):
    out, fake_train = tmp_path / "cmp", bench.train_model

    def train_then_fail(model_args, data_args, training_args):
        if model_args.loss_type == "dcl":
            raise KeyboardInterrupt  # the sitting stops during the first dcl run
        return fake_train(model_args, data_args, training_args)

    monkeypatch.setattr(bench, "train_model", train_then_fail)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--losses", "infonce,dcl", "--seeds", "1,2,3", "--output_dir", str(out), "--senteval_data",
                    bench.data, "--train_file", "wiki.txt", "--nli_file", str(bench.nli), "--model",
                    "start-model"])
    table = (out / "compare_losses.md").read_text()
    assert "| infonce | wiki | 3 | 70.00 ± 1.00 |" in table and "| dcl |" not in table
    assert not (out / "results" / "dcl-seed1.json").exists()


def test_the_proxy_sets_are_built_once_from_the_data(monkeypatch, tmp_path):
    module = load_bench(monkeypatch)
    data = write_sts_tree(tmp_path / "data")
    nli = tmp_path / "nli.csv"
    rows = "".join(f"premise {i},entailed {i},contradicted {i}\n" for i in range(40))
    nli.write_text("sent0,sent1,hard_neg\n" + rows, encoding="utf-8")
    folders = module.proxy_folders(tmp_path / "out", str(data), str(nli))
    assert list(folders) == ["stsb_proxy", "sickr_proxy", "nli_proxy"]
    for folder in folders.values():
        assert (Path(folder) / "README.txt").is_file() and (Path(folder) / "qrels" / "test.tsv").is_file()
    stamp = (Path(folders["nli_proxy"]) / "corpus.jsonl").stat().st_mtime_ns
    assert module.proxy_folders(tmp_path / "out", str(data), str(nli)) == folders  # the next sitting reuses them
    assert (Path(folders["nli_proxy"]) / "corpus.jsonl").stat().st_mtime_ns == stamp
