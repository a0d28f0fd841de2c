"""The demo pipeline end to end on a tiny model and a tiny SentEval tree: before/after table printed."""

from __future__ import annotations

import json

from helpers import save_tiny_model, write_sts_tree
from simcse.training import demo


def test_demo_runs_and_reports_both_rows(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "bert", "bert")
    data = write_sts_tree(tmp_path / "data")
    train_file = tmp_path / "train.txt"
    train_file.write_text("\n".join(f"line {i} of the demo corpus" for i in range(16)) + "\n")
    out = tmp_path / "demo"
    summary = demo.main(["--model_name_or_path", str(model), "--train_file", str(train_file), "--senteval_data",
                         str(data), "--output_dir", str(out), "--max_steps", "2", "--eval_steps", "1",
                         "--batch_size", "4"])
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if "(cls_before_pooler)" in line and line.startswith("|")]
    assert len(rows) == 2 and "start" in rows[0] and "unsup SimCSE" in rows[1]
    assert [step for step, _ in summary["stsb_dev_history"]] == [0, 1, 2]
    assert list(summary["before"]) == list(summary["after"]) and "Avg." in summary["after"]
    saved = json.loads((out / "demo.json").read_text())
    assert saved["after"] == summary["after"]
    assert (tmp_path / "demo-hf" / "model.safetensors").is_file()
