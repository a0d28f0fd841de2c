"""Your own data (senteval.custom, evaluation.py --custom_*, train.py --eval_custom_sts): layouts, exact
agreement with the built-in STS-B task, raw text reaching the encoder, probes, one-line errors, training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import pearsonr, spearmanr

import evaluation
import train
from helpers import SHARED, require_shared, save_tiny_model, write_sts_tree
from senteval import SentEvalError
from senteval.custom import (
    CustomClassificationEval,
    CustomSTSEval,
    evaluate,
    metric_name,
    parse_columns,
    parse_spec,
    split_specs,
)
from senteval.registry import build_task
from senteval.sts import STSBenchmarkEval, word_count
from senteval.utils import FAST_CLASSIFIER
from simcse.cli import run_cli
from simcse.evaluation import report as evaluators


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def hash_vector(text: str, dim: int = 8) -> np.ndarray:
    """A fixed pseudo-random vector per string (the same string always gives the same vector)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(dim)


def recording_batcher(seen: list):
    """A SentEval batcher that records what it receives and embeds the joined text with hash_vector."""

    def batcher(params, batch):
        seen.extend(batch)
        return np.stack([hash_vector(" ".join(tokens)) for tokens in batch])

    return batcher


def expected_correlations(a: list[str], b: list[str], gold: list[float]) -> tuple[float, float]:
    va = np.stack([hash_vector(s) for s in a])
    vb = np.stack([hash_vector(s) for s in b])
    cos = (va * vb).sum(1) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))
    return spearmanr(cos, gold)[0], pearsonr(cos, gold)[0]


PAIRS = [(f"a man plays the guitar {i}", f"someone plays music number {i * 7 % 5}") for i in range(10)]
BINARY = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0]
SCORES = [4.5, 0.25, 3.0, 5.0, 1.0, 0.0, 2.75, 1.5, 3.5, 2.0]


# --------------------------------------------------------------------------------- spec helpers


def test_spec_parsing_and_metric_names(tmp_path):
    assert parse_spec("data/lcqmc_dev.tsv") == ("data/lcqmc_dev.tsv", None, None)
    assert parse_spec("data/lcqmc_dev.tsv:lcqmc") == ("data/lcqmc_dev.tsv", "lcqmc", None)
    assert parse_spec("a.tsv,b.tsv,c.tsv:mine") == ("a.tsv,b.tsv,c.tsv", "mine", None)
    assert parse_spec("data/p.tsv:mine:2,3,1") == ("data/p.tsv", "mine", "2,3,1")
    assert parse_spec("data/p.tsv::s1,s2,score") == ("data/p.tsv", None, "s1,s2,score")
    assert parse_spec("C:\\data\\p.tsv:mine") == ("C:\\data\\p.tsv", "mine", None)
    odd = write(tmp_path / "x:y", "")  # an existing file whose name holds a colon is a path, not a name
    assert parse_spec(str(odd)) == (str(odd), None, None)
    # train.py's comma-separated --eval_custom_sts: the commas of a COLUMNS part stay with their file
    assert split_specs("a.tsv,b.tsv:b:2,3,1,c.tsv:c") == ["a.tsv", "b.tsv:b:2,3,1", "c.tsv:c"]
    assert parse_columns("sentence1, sentence2,label", 3, "--c") == ("sentence1", "sentence2", "label")
    assert parse_columns("1,2,0", 3, "--c") == (1, 2, 0)
    with pytest.raises(SentEvalError, match="mixes names and indices"):
        parse_columns("s1,1,label", 3, "--c")
    with pytest.raises(SentEvalError, match="must list 3 columns"):
        parse_columns("a,b", 3, "--c")
    assert metric_name("LCQMC-dev (v2)") == "lcqmc_dev_v2"
    with pytest.raises(SentEvalError, match="FILE:NAME"):
        metric_name("测试")


def test_word_count_equals_token_count_for_split_sentences():
    # the built-in tasks' order is unchanged by the shared sort key; a raw string counts its words
    assert word_count("a man  is here .".split()) == 5 == len("a man  is here .".split())
    assert word_count(["a man  is here ."]) == 5 and word_count(["今天天气很好"]) == 1


# --------------------------------------------------------------------------------- pair files


def test_stsb_dev_as_a_custom_file_gives_exactly_the_builtin_number(tmp_path):
    downstream = SHARED / "data" / "downstream"
    require_shared(downstream / "STS" / "STSBenchmark" / "sts-dev.csv", "STS-B dev")
    model = save_tiny_model(tmp_path / "tiny", "bert")
    # The built-in task splits each sentence on whitespace and evaluation.py's batcher re-joins the tokens
    # with one space, so the encoder sees " ".join(line.split()); the custom task passes the file's text
    # unchanged. Writing " ".join(tokens) of the loader's output makes both paths see identical strings.
    # (The released file is already tokenised with single spaces, so this changes few if any lines.)
    sent_a, sent_b, gold = build_task("STSBenchmark", downstream).data["dev"]
    lines = ["sentence1\tsentence2\tscore"]
    lines += [f"{' '.join(a)}\t{' '.join(b)}\t{float(g)!r}" for a, b, g in zip(sent_a, sent_b, gold)]
    pair_file = write(tmp_path / "stsb-dev.tsv", "\n".join(lines) + "\n")
    common = ["--model_name_or_path", str(model), "--pooler", "avg", "--mode", "dev", "--batch_size", "512"]
    builtin = evaluation.main(common + ["--task_set", "na", "--tasks", "STSBenchmark",
                                        "--senteval_data", str(SHARED / "data")])
    custom = evaluation.main(common + ["--task_set", "custom", "--custom_sts", str(pair_file)])  # own encoder
    expected = builtin["results"]["STSBenchmark"]["dev"]
    got = custom["results"]["custom_sts"]["stsb-dev"]
    assert got["nsamples"] == expected["nsamples"] == 1500
    assert got["spearman"] == expected["spearman"] and got["pearson"] == expected["pearson"]
    assert custom["tables"]["custom_sts"]["stsb-dev"]["spearman"] == builtin["tables"]["sts"]["STSBenchmark"]


@pytest.mark.parametrize("layout", ["lcqmc_tsv", "pawsx_tsv", "csv_header", "jsonl", "indices"])
def test_binary_labels_and_float_scores(layout, tmp_path):
    gold = SCORES if layout in ("csv_header", "indices") else BINARY
    if layout == "lcqmc_tsv":  # s1 <TAB> s2 <TAB> label, no header
        path = write(tmp_path / "lcqmc.txt", "".join(f"{a}\t{b}\t{g}\n" for (a, b), g in zip(PAIRS, gold)))
        columns = None
    elif layout == "pawsx_tsv":  # header id sentence1 sentence2 label
        rows = "".join(f"{i}\t{a}\t{b}\t{g}\n" for i, ((a, b), g) in enumerate(zip(PAIRS, gold)))
        path = write(tmp_path / "pawsx.tsv", "id\tsentence1\tsentence2\tlabel\n" + rows)
        columns = None
    elif layout == "csv_header":  # quoted CSV with a comma inside a sentence
        rows = "".join(f'"{a}, yes",{b},{g}\n' for (a, b), g in zip(PAIRS, gold))
        path = write(tmp_path / "scores.csv", "text1,text2,score\n" + rows)
        columns = None
    elif layout == "jsonl":
        rows = [json.dumps({"label": g, "sentence2": b, "sentence1": a}) for (a, b), g in zip(PAIRS, gold)]
        path = write(tmp_path / "pairs.jsonl", "\n".join(rows) + "\n")
        columns = None
    else:  # STS-B-like: genre, score, s1, s2 with no header; columns by index
        rows = "".join(f"main\t{g}\t{a}\t{b}\n" for (a, b), g in zip(PAIRS, gold))
        path = write(tmp_path / "stsb_like.tsv", rows)
        columns = "2,3,1"
    seen: list = []
    result = evaluate(CustomSTSEval(path, columns=columns), {"batch_size": 4}, recording_batcher(seen))
    first = [f"{a}, yes" if layout == "csv_header" else a for a, _ in PAIRS]
    rho, r = expected_correlations(first, [b for _, b in PAIRS], gold)
    assert result["nsamples"] == 10
    assert result["spearman"] == pytest.approx(rho, abs=1e-12) and result["pearson"] == pytest.approx(r, abs=1e-12)
    assert all(len(tokens) == 1 for tokens in seen)  # raw strings, one per sentence, each encoded once
    assert len(seen) == len({t[0] for t in seen}) == len(set(first)) + len({b for _, b in PAIRS})


def test_chinese_pairs_reach_the_batcher_and_the_encoder_intact(tmp_path, monkeypatch):
    pairs = [("今天天气很好", "今天天气不错", 1), ("我喜欢打篮球", "他讨厌下雨天", 0),
             ("这家餐厅的菜很好吃", "这个餐馆的饭菜味道很好", 1), ("火车几点出发？", "飞机什么时候降落", 0),
             ("two  spaces\u3000here", "tab-free text", 0)]
    path = write(tmp_path / "lcqmc_zh.tsv", "".join(f"{a}\t{b}\t{g}\n" for a, b, g in pairs))
    raw = {s for a, b, _ in pairs for s in (a, b)}

    seen: list = []
    evaluate(CustomSTSEval(path), None, recording_batcher(seen))
    assert {tokens[0] for tokens in seen} == raw and all(len(t) == 1 for t in seen)

    encoded: list[str] = []  # what evaluation.py's batcher hands to the tokenizer side

    class RecordingEncoder:
        sentences_encoded = 0

        def encode(self, sentences):
            encoded.extend(sentences)
            return torch.tensor(np.stack([hash_vector(s) for s in sentences]), dtype=torch.float32)

        def retain(self, sentences):  # the cache bound of SentenceEncoder; nothing cached here
            pass

    monkeypatch.setattr(evaluators, "build_encoder", lambda *args, **kwargs: RecordingEncoder())
    payload = evaluation.main(["--model_name_or_path", "unused", "--task_set", "custom",
                               "--custom_sts", f"{path}:中文"])
    assert set(encoded) == raw  # characters, double spaces and the ideographic space all kept
    assert list(payload["tables"]["custom_sts"]) == ["中文"]


# --------------------------------------------------------------------------------- classification

CLASSES = {"fruit": 0, "animal": 1, "vehicle": 2}


def keyword_batcher(params, batch):
    """One-hot of the class keyword plus a little hashed noise: linearly separable. Scaled up because the
    fast protocol's probe stops early after few RMSprop steps of fixed size (a few per epoch here)."""
    rows = []
    for tokens in batch:
        text = " ".join(tokens)
        onehot = np.zeros(3)
        onehot[CLASSES[text.split()[0]]] = 100.0
        rows.append(np.concatenate([onehot, 0.1 * hash_vector(text, 5)]))
    return np.stack(rows)


def labelled_file(path: Path, n_per_class: int, offset: int = 0, header: str | None = "text\tlabel") -> Path:
    lines = [header] if header else []
    for i in range(n_per_class):
        for word in CLASSES:
            lines.append(f"{word} item number {offset + i}\t{word}")
    return write(path, "\n".join(lines) + "\n")


@pytest.mark.parametrize("with_dev", [True, False])
def test_three_string_classes_are_probed_to_100(with_dev, tmp_path):
    train_file = labelled_file(tmp_path / "topics-train.tsv", 20)
    test_file = labelled_file(tmp_path / "topics-test.tsv", 5, offset=100, header=None)  # 2 columns, no header
    dev_file = labelled_file(tmp_path / "topics-dev.tsv", 5, offset=200) if with_dev else None
    task = CustomClassificationEval(train_file, test_file, dev=dev_file)
    assert task.name == "topics" and task.classes == ["animal", "fruit", "vehicle"]  # ids: sorted labels
    # The fast probe (RMSprop, lr 0.01): the default one (Adam, lr 0.001, as in the original) needs
    # more steps than 60 samples give to move logits set by 100-scaled random features.
    result = evaluate(task, {"batch_size": 16, "classifier": dict(FAST_CLASSIFIER)}, keyword_batcher)
    assert result["acc"] == 100.0 and result["macro_f1"] == 100.0 and result["devacc"] == 100.0
    assert result["selection"] == ("dev" if with_dev else "kfold")
    assert (result["ntrain"], result["ndev"], result["ntest"]) == (60, 15 if with_dev else 0, 15)


def test_numeric_labels_are_sorted_by_value_and_jsonl_works(tmp_path):
    rows = [json.dumps({"sentence": f"{w} thing {i}", "class": label})
            for i in range(6) for w, label in (("fruit", 10), ("animal", 2), ("vehicle", 1))]
    path = write(tmp_path / "num.jsonl", "\n".join(rows) + "\n")
    task = CustomClassificationEval(path, path)
    assert task.classes == ["1", "2", "10"]
    assert task.data["train"][1][:3] == [2, 1, 0]


def test_macro_f1_differs_from_accuracy_when_a_class_is_missed(tmp_path):
    # "vehicle" sentences embed like "fruit" ones at test time: accuracy 2/3, macro-F1 lower than that
    train_file = labelled_file(tmp_path / "train.tsv", 20)
    test_file = write(tmp_path / "test.tsv", "".join(f"{w} x {i}\t{w if w != 'fruit' else 'vehicle'}\n"
                                                     for i in range(5) for w in ("fruit", "animal", "vehicle")))
    result = evaluate(CustomClassificationEval(train_file, test_file), {"batch_size": 16}, keyword_batcher)
    assert result["acc"] == pytest.approx(100 * 10 / 15, abs=0.01)
    assert result["macro_f1"] < result["acc"]


def test_evaluation_cli_prints_both_custom_tables_and_json(tiny_bert_dir, tmp_path, capsys):
    pairs = write(tmp_path / "pairs.tsv", "".join(f"{a}\t{b}\t{g}\n" for (a, b), g in zip(PAIRS, SCORES)))
    train_file = labelled_file(tmp_path / "train.tsv", 8)
    test_file = labelled_file(tmp_path / "test.tsv", 3, offset=50)
    out_json = tmp_path / "result.json"
    payload = evaluation.main(["--model_name_or_path", str(tiny_bert_dir), "--pooler", "avg", "--task_set", "custom",
                               "--custom_sts", f"{pairs}:mine", "--custom_classification",
                               f"{train_file},{test_file}:topics", "--mode", "fasttest",
                               "--output_json", str(out_json)])
    printed = capsys.readouterr().out
    assert printed.startswith("------ fasttest ------\n")
    assert "| custom STS | pairs | Spearman | Pearson |" in printed and "\n| mine " in printed
    assert "5-fold CV on train" in printed and "test macro-F1" in printed
    saved = json.loads(out_json.read_text())
    assert saved["tables"] == payload["tables"]
    assert set(saved["tables"]) == {"custom_sts", "custom_classification"}
    mine = saved["results"]["custom_sts"]["mine"]
    assert saved["tables"]["custom_sts"]["mine"]["spearman"] == round(mine["spearman"] * 100, 2)
    assert set(saved["tables"]["custom_classification"]["topics"]) == {"devacc", "acc", "macro_f1"}


# --------------------------------------------------------------------------------- errors


def run(argv, capsys) -> tuple[int, str]:
    code = run_cli(evaluation.main, argv, prog="evaluation.py")
    return code, capsys.readouterr().err.strip()


BAD_PAIR_FILES = [
    ("empty.tsv", "\n\n", [], "the file is empty"),
    ("pairs.xlsx", "a\tb\t1\n", [], "unknown file extension '.xlsx'"),
    ("named.tsv", "sentence1\tsentence2\tlabel\na\tb\t1\n", ["--custom_columns", "sentence1,sentence2,score"],
     "no column named 'score' in the header row"),
    ("short.tsv", "a\tb\t1\nc\td\t0\ne only\n", [], ":3: 1 cell(s), expected 3 as on line 1; a missing tab"),
    ("mixed.tsv", "a\tb\t1\nc\td\t0\ne\tf\tyes\n", [], ":3: the score column 2 holds 'yes', not a number"),
    ("wide.tsv", "1\ta\tb\t1\n", [], "cannot tell which columns hold the first sentence, second sentence, score"),
    ("flat.tsv", "a\tb\t1\nc\td\t1\n", [], "every pair has the score 1"),
]


@pytest.mark.parametrize("name, content, extra, expected", BAD_PAIR_FILES)
def test_bad_pair_files_are_one_line_errors(name, content, extra, expected, tmp_path, capsys):
    path = write(tmp_path / name, content)
    # the files are read before the model is loaded: the (missing) model is never reached
    code, err = run(["--model_name_or_path", "/no/such/model", "--task_set", "custom",
                     "--custom_sts", str(path), *extra], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"evaluation.py: error: {path}") and expected in err, err


BAD_LABELLED_FILES = [
    ("mixed", "text\tlabel\na b\t1\nc d\t0\ne f\tpositive\n",
     "mixes numbers and strings ('1' on line 2, 'positive' on line 4)"),
    ("one class", "text\tlabel\na b\tpos\nc d\tpos\n", "only one class ('pos')"),
    ("missing column", "sentence\tsentiment\tsource\na\tpos\tweb\n", "cannot tell which columns hold the text, label"),
    ("empty", "", "the file is empty"),
    ("header only", "text\tlabel\n", "no data rows after the header"),
]


@pytest.mark.parametrize("case, content, expected", BAD_LABELLED_FILES, ids=[c[0] for c in BAD_LABELLED_FILES])
def test_bad_labelled_files_are_one_line_errors(case, content, expected, tmp_path, capsys):
    bad = write(tmp_path / "bad.tsv", content)
    good = labelled_file(tmp_path / "good.tsv", 3)
    for spec in (f"{bad},{good}", f"{good},{bad}"):  # in the train file or the test file
        if case == "one class" and spec.startswith(str(good)):
            continue  # a test file with one class is fine
        code, err = run(["--model_name_or_path", "/no/such/model", "--task_set", "custom",
                         "--custom_classification", spec], capsys)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"evaluation.py: error: {bad}") and expected in err, err


def test_unseen_test_label_and_bad_specs_are_one_line_errors(tmp_path, capsys):
    train_file = labelled_file(tmp_path / "train.tsv", 3)
    test_file = write(tmp_path / "test.tsv", "text\tlabel\nfruit x\tplant\n")
    code, err = run(["--model_name_or_path", "m", "--task_set", "custom", "--custom_classification",
                     f"{train_file},{test_file}"], capsys)
    assert code == 2 and f"{test_file}:2: label 'plant' does not occur in the train file" in err
    header = write(tmp_path / "header.tsv", "review\tsentiment\ngood\tpos\nbad\tneg\nfine\tpos\n")
    code, err = run(["--model_name_or_path", "m", "--task_set", "custom", "--custom_classification",
                     f"{header},{test_file}"], capsys)
    assert code == 2 and f"{header}:1: the label 'sentiment' occurs only on this first line" in err
    assert "--custom_classification_columns" in err
    code, err = run(["--model_name_or_path", "m", "--task_set", "custom", "--custom_classification", str(train_file)],
                    capsys)
    assert code == 2 and "give TRAIN,TEST or TRAIN,DEV,TEST" in err
    pairs = write(tmp_path / "p.tsv", "a\tb\t1\nc\td\t0\n")
    code, err = run(["--model_name_or_path", "m", "--task_set", "custom", "--custom_sts", f"{pairs}:x", f"{pairs}:x"],
                    capsys)
    assert code == 2 and "the name 'x' is used twice" in err
    for argv in (["--task_set", "custom"], ["--custom_columns", "0,1,2"]):
        with pytest.raises(SystemExit):
            run(["--model_name_or_path", "m", *argv], capsys)
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------- training


def test_training_logs_the_custom_metric_and_selects_on_it(tmp_path, monkeypatch):
    """Scripted scores: STS-B dev 0.9, 0.1, 0.5 and the custom set 0.2, 0.9, 0.1 at steps 1-3. Selecting on
    the custom metric must keep checkpoint-2 (on STS-B it would be checkpoint-1)."""
    model = save_tiny_model(tmp_path / "tiny", "bert")
    data = write_sts_tree(tmp_path / "senteval")
    train_file = write(tmp_path / "train.txt", "".join(f"a sentence about topic {i}\n" for i in range(12)))
    pairs = write(tmp_path / "my pairs.tsv", "".join(f"{a}\t{b}\t{g}\n" for (a, b), g in zip(PAIRS, SCORES)))

    def scripted(real_run, values):
        values = iter(values)

        def run_then_override(self, params, batcher):
            result = real_run(self, params, batcher)  # the real path still runs on the tiny model
            key = "dev" if "dev" in result else None
            real = result[key]["spearman"] if key else result["spearman"]
            assert np.isfinite(real)
            value = next(values)
            return {**result, "dev": {**result["dev"], "spearman": value}} if key else {**result, "spearman": value}

        return run_then_override

    monkeypatch.setattr(CustomSTSEval, "run", scripted(CustomSTSEval.run, [0.2, 0.9, 0.1, 0.9]))
    monkeypatch.setattr(STSBenchmarkEval, "run", scripted(STSBenchmarkEval.run, [0.9, 0.1, 0.5, 0.1]))
    out = tmp_path / "out"
    metrics = train.main([
        "--model_name_or_path", str(model), "--train_file", str(train_file), "--output_dir", str(out),
        "--per_device_train_batch_size", "4", "--max_steps", "3", "--learning_rate", "1e-2", "--report_to", "none",
        "--use_cpu", "--max_seq_length", "16", "--senteval_data", str(data),
        "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
        "--eval_custom_sts", f"{pairs}:My-Pairs", "--metric_for_best_model", "my_pairs_spearman",
        "--load_best_model_at_end",
    ])
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [h["eval_my_pairs_spearman"] for h in history if "eval_my_pairs_spearman" in h]
    assert logged[:3] == [0.2, 0.9, 0.1]
    assert metrics["best_model_checkpoint"].endswith("checkpoint-2") and metrics["best_metric"] == 0.9
    final = load_file(out / "model.safetensors")
    best = load_file(out / "checkpoint-2" / "model.safetensors")
    assert all(torch.equal(final[k], best[k]) for k in final)


def test_eval_custom_sts_without_evaluation_is_a_one_line_error(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "tiny", "bert")
    train_file = write(tmp_path / "train.txt", "one sentence\nanother sentence\n")
    pairs = write(tmp_path / "p.tsv", "a\tb\t1\nc\td\t0\n")
    code = run_cli(train.main, ["--model_name_or_path", str(model), "--train_file", str(train_file),
                                "--output_dir", str(tmp_path / "o"), "--report_to", "none", "--use_cpu",
                                "--eval_custom_sts", str(pairs)], prog="train.py")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--eval_custom_sts is scored at each evaluation, but evaluation is off" in err
    code = run_cli(train.main, ["--model_name_or_path", str(model), "--train_file", str(train_file),
                                "--output_dir", str(tmp_path / "o"), "--report_to", "none", "--use_cpu",
                                "--senteval_data", str(write_sts_tree(tmp_path / "senteval")),
                                "--eval_strategy", "steps", "--eval_steps", "1",
                                "--eval_custom_sts", f"{pairs},{tmp_path / 'missing.tsv'}:m"], prog="train.py")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"train.py: error: {tmp_path / 'missing.tsv'}: no such file"


# --------------------------------------------------------------------------------- strict reading
# Each case below was misread without a word before (rows merged, cells dropped, a data row taken for a
# header, the wrong line blamed); now it is read correctly or it is a one-line error naming file and line.


def pair_lines(fmt: str) -> list[str]:
    sep = "," if fmt == "csv" else "\t"
    return [f"{a}{sep}{b}{sep}{g}" for (a, b), g in zip(PAIRS, SCORES)]


def read_error(path: Path, capsys, *extra) -> str:
    code, err = run(["--model_name_or_path", "/no/such/model", "--task_set", "custom",
                     "--custom_sts", str(path), *extra], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"evaluation.py: error: {path}:"), err
    return err


def test_csv_quote_left_open_to_the_end_is_an_error_naming_its_line(tmp_path, capsys):
    lines = pair_lines("csv")
    lines[2] = '"' + lines[2]  # line 3 opens a quote nobody closes: the rest of the file was one cell
    err = read_error(write(tmp_path / "open.csv", "\n".join(lines) + "\n"), capsys)
    assert ':3: a " quote opened on this line is never closed (the file ends inside it, on line 10)' in err


def test_csv_quote_closed_rows_later_is_an_error_not_merged_rows(tmp_path, capsys):
    # 10 pairs in; the quote opened on line 3 closes on line 6 and the row has 3 cells again: before, this
    # read as 7 pairs, lines 3-6 merged into one sentence.
    lines = pair_lines("csv")
    lines[2] = '"' + lines[2]
    a, b, g = lines[5].split(",")
    lines[5] = f'{a}",{b},{g}'
    path = write(tmp_path / "merged.csv", "\n".join(lines) + "\n")
    err = read_error(path, capsys)
    assert ":3: a quoted cell opened on this line runs on to line 6" in err and "unclosed" in err
    good = write(tmp_path / "good.csv", "\n".join(pair_lines("csv")) + "\n")
    assert len(CustomSTSEval(good).data["pairs"][2]) == 10  # the same file without the quote: all 10


def test_csv_quote_followed_by_text_is_an_error(tmp_path, capsys):
    lines = pair_lines("csv")
    lines[3] = '"quoted" then text,b,1'  # strict CSV: only a separator may follow a closing quote
    err = read_error(write(tmp_path / "after.csv", "\n".join(lines) + "\n"), capsys)
    assert ":4: not valid CSV" in err and "',' expected after '\"'" in err


def test_tsv_row_with_an_extra_cell_is_an_error_naming_line_and_counts(tmp_path, capsys):
    lines = pair_lines("tsv")
    lines[6] = "a sentence\twith a stray\ttab\t1"  # 4 cells: was read as s1='a sentence', score 'tab'.. or worse
    err = read_error(write(tmp_path / "extra.tsv", "\n".join(lines) + "\n"), capsys)
    assert ":7: 4 cell(s), expected 3 as on line 1; a stray tab" in err


def test_csv_unquoted_comma_is_an_error_naming_line_and_counts(tmp_path, capsys):
    lines = pair_lines("csv")
    lines[4] = "well, a sentence,another,2.0"
    err = read_error(write(tmp_path / "comma.csv", "\n".join(lines) + "\n"), capsys)
    assert ":5: 4 cell(s), expected 3 as on line 1; a stray comma (quote cells that hold commas)?" in err


@pytest.mark.parametrize("first, expected", [
    ("3,5", "holds '3,5' uses a decimal comma; write 3.5"),
    ("nan", "holds 'nan' is not a finite number"),
    ("inf", "holds 'inf' is not a finite number"),
])
def test_first_row_with_a_decimal_comma_or_nan_score_is_data_not_a_header(first, expected, tmp_path, capsys):
    # before: not a number while the other rows are -> taken for a header and dropped without a word
    lines = pair_lines("tsv")
    a, b, _ = lines[0].split("\t")
    lines[0] = f"{a}\t{b}\t{first}"
    err = read_error(write(tmp_path / "first.tsv", "\n".join(lines) + "\n"), capsys)
    assert ":1: the score column 2 holds" in err and expected in err and "no header: line 1 is data" in err


def test_bad_score_far_down_is_blamed_on_its_own_line(tmp_path, capsys):
    # an unfamiliar header, 600 good rows, one bad score on line 500: the header is still a header
    rows = [f"sentence {i}\tother {i % 7}\t{i % 5}" for i in range(600)]
    rows[498] = "sentence x\tother y\tfour"
    path = write(tmp_path / "long.tsv", "first\tsecond\tsim\n" + "\n".join(rows) + "\n")
    err = read_error(path, capsys)
    assert ":500: the score column 2 ('sim') holds 'four', not a number" in err
    assert "line 1 is a header: its score cell 'sim' (column 2) is not a number" in err


def test_header_decision_is_logged_and_kept(tmp_path, caplog):
    lines = pair_lines("tsv")
    unnamed = write(tmp_path / "unnamed.tsv", "left\tright\tsim\n" + "\n".join(lines) + "\n")
    plain = write(tmp_path / "plain.tsv", "\n".join(lines) + "\n")
    with caplog.at_level("INFO", logger="senteval.custom"):
        with_header, without = CustomSTSEval(unnamed), CustomSTSEval(plain)
    assert with_header.layout.startswith("line 1 is a header: its score cell 'sim' (column 2)")
    assert without.layout == "no header: line 1 is data; columns [0, 1, 2]"
    assert f"{unnamed}: {with_header.layout}" in caplog.text and f"{plain}: {without.layout}" in caplog.text
    # both read the same 10 pairs
    assert with_header.data["pairs"][0] == without.data["pairs"][0] and len(without.data["pairs"][2]) == 10


def test_per_file_columns_override_the_flag_for_that_file_only(tmp_path, capsys, monkeypatch):
    # a.tsv is genre, score, s1, s2 (columns 2,3,1); b.tsv is s1, s2, score: one --custom_columns cannot fit both
    a = write(tmp_path / "a.tsv", "".join(f"main\t{g}\t{x}\t{y}\n" for (x, y), g in zip(PAIRS, SCORES)))
    b = write(tmp_path / "b.tsv", "".join(f"{x}\t{y}\t{g}\n" for (x, y), g in zip(PAIRS, BINARY)))
    args = evaluation.parse_args(["--model_name_or_path", "m", "--task_set", "custom",
                                  "--custom_sts", f"{a}:a:2,3,1", f"{b}::0,1,2"])
    sts, _ = evaluators.load_custom_tasks(args)
    assert [e.name for e in sts] == ["a", "b"]
    for task, gold in zip((e.task for e in sts), (SCORES, BINARY)):
        assert [s[0] for s in task.data["pairs"][0]] == [x for x, _ in PAIRS]
        assert list(task.data["pairs"][2]) == gold
    assert "custom STS a: no header: line 1 is data; columns [2, 3, 1]" in capsys.readouterr().err
    # the flag still applies to files without their own columns; a file's own wrong columns name the spec
    code, err = run(["--model_name_or_path", "m", "--task_set", "custom", "--custom_sts",
                     str(a), f"{b}:b:0,1,5", "--custom_columns", "2,3,1"], capsys)
    assert code == 2 and f"--custom_sts '{b}:b:0,1,5' names column 5 for the score" in err
    # train.py: FILE:NAME:COLUMNS inside a comma-separated --eval_custom_sts
    from simcse.training.arguments import DataTrainingArguments
    train_file = write(tmp_path / "t.txt", "x\n")
    data_args = DataTrainingArguments(train_file=str(train_file), eval_custom_sts=[f"{b},{a}:a:2,3,1"])
    assert data_args.eval_custom_sts == [str(b), f"{a}:a:2,3,1"]
