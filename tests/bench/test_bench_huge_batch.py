"""bench/huge_batch.py at tiny sizes: plain and tiled cases in child processes, the plain loss refused past
the memory budget with the size it would need, the end-to-end gradient-cached step, and --resume."""

from __future__ import annotations

import json

import pytest

from helpers import REPO, load_bench, require_shared

pytestmark = pytest.mark.slow  # a dozen child processes, one loading MiniLM-L3



def test_tiny_run_refuses_the_plain_loss_past_the_budget_and_resumes(tmp_path, capsys, monkeypatch):
    bench = load_bench("huge_batch")
    model = require_shared(REPO.parent / "shared" / "models" / "paraphrase-MiniLM-L3-v2", "MiniLM-L3")
    # Budget 10 MB: the plain loss at 1024 needs ≥ 1 x 4 MiB + 6 MiB of embeddings, whatever the calibration.
    argv = ["--output_dir", str(tmp_path), "--batches", "256,1024", "--tile", "96", "--calibration_batch", "512",
            "--memory_budget_gb", "0.01", "--threads", "1", "--end_to_end", "--end_to_end_batch", "24",
            "--end_to_end_chunk", "8", "--model", str(model)]
    payload = bench.main(argv)
    cases = {(c["kind"], c["batch"], c["method"]): c for c in payload["cases"]}
    assert set(cases) == {("calibration", 512, "plain"), ("calibration", 1024, "plain"), ("loss", 256, "plain"),
                          ("loss", 256, "tiled"), ("loss", 1024, "plain"), ("loss", 1024, "tiled"),
                          ("end_to_end", 24, "tiled")}
    assert not [c for c in payload["cases"] if "error" in c]
    plain, tiled = cases["loss", 256, "plain"], cases["loss", 256, "tiled"]
    assert tiled["loss"] == pytest.approx(plain["loss"], rel=1e-5, abs=1e-6)  # the same loss, float32
    assert tiled["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-4)
    assert plain["wall_s"] > 0 and plain["cpu_s"] >= 0 and plain["peak_rss_gb"] > 0 and "estimated_gb" in plain
    refused = cases["loss", 1024, "plain"]["refused"]
    assert refused["temporaries"] >= 1 and refused["need_gb"] > 0.01 and "wall_s" not in cases["loss", 1024, "plain"]
    assert cases["loss", 1024, "tiled"]["peak_rss_gb"] > 0
    e2e = cases["end_to_end", 24, "tiled"]
    assert e2e["tokens"] > 0 and e2e["chunk"] == 8 and e2e["wall_s"] > 0 and e2e["peak_rss_gb"] > 0
    printed = capsys.readouterr().out
    assert "plain at 1,024 refused: needs ≈" in printed and "| 1,024 | plain | refused: needs ≈" in printed
    assert "At 256, the largest batch the plain loss fits in 0.01 GB: tiled / plain =" in printed
    assert "| MiniLM-L3, mean pooling, batch 24, chunk 8, tiled loss (96)" in printed
    saved = json.loads((tmp_path / "huge_batch.json").read_text())
    assert (tmp_path / "huge_batch.md").read_text().startswith("| batch | loss |")

    def no_child(*args, **kwargs):
        raise AssertionError("--resume re-ran a case")

    monkeypatch.setattr(bench, "run_child", no_child)
    again = bench.main(argv + ["--resume"])
    assert again["cases"] == saved["cases"]
