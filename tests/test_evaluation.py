"""evaluation.py: table layout, task selection, aggregation naming, JSON output and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import evaluation
from helpers import REPO, write_sts_tree
from simcse.cli import run_cli
from simcse.errors import SimCSEError
from simcse.evaluation import report as evaluators

ORIGINAL_TABLE = """\
+-------+-------+-------+-------+-------+--------------+-----------------+-------+
| STS12 | STS13 | STS14 | STS15 | STS16 | STSBenchmark | SICKRelatedness |  Avg. |
+-------+-------+-------+-------+-------+--------------+-----------------+-------+
| 75.30 | 84.67 | 80.19 | 85.40 | 80.82 |    84.26     |      80.39      | 81.58 |
+-------+-------+-------+-------+-------+--------------+-----------------+-------+"""


def fake_results(sts12_all=0.7530, sts12_wmean=0.70):
    results = {}
    for task, value in zip(["STS12", "STS13", "STS14", "STS15", "STS16"], [sts12_all, 0.8467, 0.8019, 0.8540, 0.8082]):
        wmean = sts12_wmean if task == "STS12" else value
        results[task] = {"all": {"spearman": {"all": value, "mean": value, "wmean": wmean}}}
    results["STSBenchmark"] = {"test": {"spearman": 0.8426}, "dev": {"spearman": 0.86}}
    results["SICKRelatedness"] = {"test": {"spearman": 0.8039}, "dev": {"spearman": 0.81}}
    return results


def test_sts_table_is_byte_compatible_with_the_original():
    names, scores = evaluators.sts_row(fake_results(), "test", "all")
    assert evaluators.render_table(names, scores) == ORIGINAL_TABLE


def test_wmean_changes_the_row_and_is_named():
    _, all_scores = evaluators.sts_row(fake_results(), "test", "all")
    _, wmean_scores = evaluators.sts_row(fake_results(), "test", "wmean")
    assert all_scores[0] == "75.30" and wmean_scores[0] == "70.00"
    assert "wmean" in evaluators.aggregation_note("test", "wmean")
    assert "weighted by subset size" in evaluators.aggregation_note("test", "wmean")


def test_dev_row_shows_only_stsb_and_sick_dev():
    names, scores = evaluators.sts_row(fake_results(), "dev", "all")
    assert names == ["STSBenchmark", "SICKRelatedness"] and scores == ["86.00", "81.00"]


def test_transfer_row_uses_devacc_in_dev_mode():
    results = {t: {"devacc": 80.0, "acc": 70.0} for t in evaluators.TRANSFER_TASKS}
    assert evaluators.transfer_row(results, "dev")[1][-1] == "80.00"
    names, scores = evaluators.transfer_row(results, "test")
    assert names == ["MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC", "Avg."] and scores[-1] == "70.00"


def test_task_selection():
    assert evaluators.select_tasks("sts", [], "dev") == ["STSBenchmark", "SICKRelatedness"]
    assert evaluators.select_tasks("sts", [], "test")[0] == "STS12"
    assert evaluators.select_tasks("na", ["MR", "STS12", "MR"], "test") == ["MR", "STS12"]
    assert len(evaluators.select_tasks("full", [], "test")) == 14


def test_end_to_end_on_a_tiny_model(tiny_bert_dir, tmp_path, capsys):
    data = write_sts_tree(tmp_path / "data")
    out_json = tmp_path / "out" / "result.json"
    payload = evaluation.main([
        "--model_name_or_path", str(tiny_bert_dir), "--pooler", "avg", "--senteval_data", str(data),
        "--output_json", str(out_json), "--batch_size", "4",
    ])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "------ test ------"
    header = [cell.strip() for cell in printed[2].strip("|").split("|")]
    assert header == ["STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness", "Avg."]
    assert printed[6].startswith("STS aggregation: all")
    saved = json.loads(out_json.read_text())
    assert saved["tables"] == payload["tables"]
    row = [float(cell) for cell in printed[4].strip("|").split("|")]
    assert row == list(saved["tables"]["sts"].values())
    # identical sentences across subsets and tasks are encoded once
    assert saved["sentences_encoded"] == 2 * 6 + 2 * 6 + 6 + 1


def test_cls_pooler_on_plain_bert_uses_its_pooling_layer(tiny_bert_dir, tmp_path):
    data = write_sts_tree(tmp_path / "data")
    base = ["--model_name_or_path", str(tiny_bert_dir), "--senteval_data", str(data), "--tasks", "STSBenchmark",
            "--task_set", "na"]
    cls = evaluation.main(base + ["--pooler", "cls"])
    before = evaluation.main(base + ["--pooler", "cls_before_pooler"])
    # By hand: BertModel's pooler_output (tanh(W h_cls + b)) for cls, h_cls itself for cls_before_pooler,
    # one sentence at a time, cosine per pair, Spearman against the gold scores of the STS-B test split.
    import numpy as np
    import torch
    from scipy.stats import spearmanr
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(tiny_bert_dir).eval(), AutoTokenizer.from_pretrained(tiny_bert_dir)

    def embed(text, pooled):
        with torch.no_grad():
            out = model(**tokenizer(text, return_tensors="pt"))
        return (out.pooler_output if pooled else out.last_hidden_state[:, 0])[0].double().numpy()

    gold = [i % 6 for i in range(6)]  # write_sts_tree's STS-B rows: "a dog runs i" / "a cat sleeps i", score i % 6
    expected_values = []
    for result, pooled in ((cls, True), (before, False)):
        cosines = []
        for i in range(6):
            a, b = embed(f"a dog runs {i}", pooled), embed(f"a cat sleeps {i}", pooled)
            cosines.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        expected = spearmanr(cosines, gold)[0]
        assert result["results"]["STSBenchmark"]["test"]["spearman"] == pytest.approx(expected, abs=1e-9)
        expected_values.append(expected)
    assert expected_values[0] != expected_values[1]  # so a swapped pooler cannot pass


def run(argv, capsys):
    code = run_cli(evaluation.main, argv, prog="evaluation.py")
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--tasks", "STS17", "--task_set", "na"], "invalid choice: 'STS17'"),
        (["--pooler", "max"], "invalid choice: 'max'"),
        (["--mode", "valid"], "invalid choice: 'valid'"),
        (["--max_seq_length", "1"], "--max_seq_length must be at least 2 tokens, got 1"),
        (["--senteval_data", "/nonexistent/data"], "'/nonexistent/data' (from --senteval_data) has no downstream/"),
    ],
)
def test_bad_input_is_one_line(extra, expected, tiny_bert_dir, capsys):
    with pytest.raises(SystemExit) if "invalid choice" in expected else _nullcontext():
        code, err = run(["--model_name_or_path", str(tiny_bert_dir)] + extra, capsys)
        assert code == 2
    if "invalid choice" in expected:
        err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_missing_model_path_is_one_line(capsys):
    code, err = run(["--model_name_or_path", "/no/such/model"], capsys)
    assert code == 2 and err == ("evaluation.py: error: model path '/no/such/model' does not exist; "
                                 "give a local directory or a hub id")


def test_cls_pooler_on_gpt2_is_rejected(tiny_gpt2_dir, capsys):
    code, err = run(["--model_name_or_path", str(tiny_gpt2_dir), "--pooler", "cls"], capsys)
    assert code == 2 and "pooler 'cls' does not fit model type 'gpt2'" in err and "avg, wavg, last" in err


def test_gpt2_wavg_runs(tiny_gpt2_dir, tmp_path):
    data = write_sts_tree(tmp_path / "data")
    payload = evaluation.main(["--model_name_or_path", str(tiny_gpt2_dir), "--pooler", "wavg",
                               "--senteval_data", str(data),
                               "--task_set", "na", "--tasks", "SICKRelatedness", "--mode", "dev"])
    assert list(payload["tables"]["sts"]) == ["SICKRelatedness"]


@pytest.mark.slow
def test_subprocess_exit_code_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "evaluation.py", "--model_name_or_path", "/no/such/model", "--pooler", "avg"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert "/no/such/model" in proc.stderr


def test_cls_pooler_without_trained_pooling_layer_is_refused(tmp_path, capsys):
    """A checkpoint saved without BERT's pooler would get a random one: refuse instead of printing noise."""
    from safetensors.torch import load_file, save_file

    from helpers import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "no-pooler", "bert")
    weights = load_file(model_dir / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("pooler.")}, model_dir / "model.safetensors",
              metadata={"format": "pt"})
    code, err = run(["--model_name_or_path", str(model_dir), "--pooler", "cls"], capsys)
    assert code == 2 and "needs a trained pooling layer (pooler.dense)" in err and "cls_before_pooler" in err


def test_truncate_dim_keeps_the_embedding_prefix(tiny_bert_dir, tmp_path, capsys):
    from simcse.modeling.encoder import build_encoder

    full = build_encoder(str(tiny_bert_dir), "avg", device="cpu")
    short = build_encoder(str(tiny_bert_dir), "avg", device="cpu", truncate_dim=4)
    sentences = ["a cat sits", "dogs run fast today"]
    a, b = full.encode(sentences), short.encode(sentences)
    assert b.shape == (2, 4)
    torch.testing.assert_close(b, a[:, :4])
    data = write_sts_tree(tmp_path / "data")
    base = ["--model_name_or_path", str(tiny_bert_dir), "--senteval_data", str(data), "--tasks", "STSBenchmark",
            "--task_set", "na", "--pooler", "avg"]
    assert evaluation.main(base + ["--truncate_dim", "4"])["results"]["STSBenchmark"]["test"]["spearman"] != \
        evaluation.main(base)["results"]["STSBenchmark"]["test"]["spearman"]
    code, err = run(base + ["--truncate_dim", "100000"], capsys)
    assert code == 2 and "--truncate_dim must be an integer in [1," in err


@pytest.mark.parametrize("mlp_only_train, pooler, notice", [
    (True, "cls", "was trained with --pooler_type cls --mlp_only_train, whose dev scores were computed as "
                  "--pooler cls_before_pooler; this evaluation uses --pooler cls"),
    (True, "cls_before_pooler", None),
    (False, "cls", None),
    (False, "avg", "was trained with --pooler_type cls, whose dev scores were computed as --pooler cls; "
                   "this evaluation uses --pooler avg"),
])
def test_a_pooler_other_than_the_one_training_scored_with_is_said(tmp_path, mlp_only_train, pooler, notice, capsys):
    from test_tool import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "ckpt", "bert", "cls", mlp_only_train=mlp_only_train)
    write_sts_tree(tmp_path / "data")
    code, err = run(["--model_name_or_path", str(ckpt), "--pooler", pooler, "--task_set", "na", "--tasks",
                     "STSBenchmark", "--senteval_data", str(tmp_path / "data")], capsys)
    said = [line for line in err.splitlines() if "notice" in line]
    assert code == 0 and said == ([] if notice is None else [f"evaluation.py: notice: {ckpt} {notice}"])


def test_custom_retrieval_prints_its_table_and_writes_the_json(tiny_bert_dir, tmp_path, capsys):
    """evaluation.py --custom_retrieval: the table and the JSON hold what the retrieval evaluator computes
    on the same encoder (x100, 2 decimals), with the prompts handed on."""
    from helpers import REPO
    from simcse.evaluation.retrieval import METRICS, RetrievalEvaluator
    from simcse.modeling.encoder import build_encoder

    folder = REPO / "tests" / "fixtures" / "beir_tiny"
    out = tmp_path / "r.json"
    code, err = run(["--model_name_or_path", str(tiny_bert_dir), "--pooler", "avg", "--task_set", "custom",
                     "--custom_retrieval", f"{folder}:tiny", "--query_prompt", "query: ",
                     "--document_prompt", "passage: ", "--output_json", str(out)], capsys)
    assert code == 0, err
    table = json.loads(out.read_text())["tables"]["custom_retrieval"]["tiny"]
    expected = RetrievalEvaluator(folder, name="tiny", query_prompt="query: ", document_prompt="passage: ")(
        build_encoder(str(tiny_bert_dir), "avg"))
    assert table == {m: round(expected[f"tiny_{m}"] * 100, 2) for m in METRICS}
    plain = RetrievalEvaluator(folder, name="tiny")(build_encoder(str(tiny_bert_dir), "avg"))
    assert plain != expected  # the prompts reached the encoder


def test_a_bad_retrieval_folder_fails_before_the_model_loads(tmp_path, capsys):
    code, err = run(["--model_name_or_path", str(tmp_path / "no-model"), "--task_set", "custom",
                     "--custom_retrieval", str(tmp_path)], capsys)
    assert code == 2 and "corpus.jsonl" in err and "no-model" not in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("spec, expected", [
    ("{d}", ("{d}", None, "test")),
    ("{d}:proxy", ("{d}", "proxy", "test")),
    ("{d}:proxy:dev", ("{d}", "proxy", "dev")),
    ("{c}:proxy:dev", ("{c}", "proxy", "dev")),  # a folder whose name holds ':'
])
def test_retrieval_specs(tmp_path, spec, expected):
    from simcse.evaluation.dev import parse_retrieval_spec

    (tmp_path / "a:b").mkdir()
    fill = {"d": str(tmp_path), "c": str(tmp_path / "a:b")}
    assert parse_retrieval_spec(spec.format(**fill), "--x") == tuple(e if e is None else e.format(**fill)
                                                                     for e in expected)
    with pytest.raises(SimCSEError, match="give DIR, DIR:NAME or DIR:NAME:SPLIT"):
        parse_retrieval_spec(f"{tmp_path}:bad name", "--x")
