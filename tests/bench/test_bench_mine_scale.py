"""bench/mine_scale.py in a CI-sized form: builds distinct inputs, measures the three stages, and resumes."""

from __future__ import annotations

import csv
import json

import pytest

from helpers import REPO, load_bench, require_shared

pytestmark = pytest.mark.slow  # runs a bench script end to end (three child processes)



def test_small_run_measures_every_stage_and_resumes(tmp_path, capsys):
    bench = load_bench("mine_scale")
    model = require_shared(REPO.parent / "shared" / "models" / "paraphrase-MiniLM-L3-v2", "MiniLM-L3")
    argv = ["--work_dir", str(tmp_path), "--lines", "400", "--pairs", "60", "--model", str(model),
            "--batch_size", "32"]
    payload = bench.main(argv)
    with open(tmp_path / "pairs_60.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    assert len({tuple(r) for r in rows}) == 60
    stages = payload["stages"]
    assert set(stages) == {"floor", "mine", "rerun"}
    mine, rerun = stages["mine"]["report"], stages["rerun"]["report"]
    assert mine["pairs"] == 60 and mine["corpus_texts"] >= 400 and mine["rows_written"] > 0
    assert rerun["seconds"]["embed_corpus_s"] < mine["seconds"]["embed_corpus_s"]  # reused, not recomputed
    assert payload["figures"]["mine_over_floor_cpu"] > 0 and payload["figures"]["embeddings_mb"] > 0
    printed = capsys.readouterr().out
    assert "mine / floor (CPU s) =" in printed and "beyond the embeddings" in printed
    saved = json.loads((tmp_path / "mine_scale.json").read_text())
    again = bench.main(argv + ["--resume"])  # every stage read back, nothing re-run
    assert again["stages"] == saved["stages"] == stages
