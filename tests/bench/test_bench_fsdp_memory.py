"""bench/fsdp_memory.py at a tiny size: both engines run through torchrun, FSDP holds half the parameters
per process, both train the same steps (the same last loss), and the table is printed."""

from __future__ import annotations

import pytest

from helpers import load_bench

pytestmark = pytest.mark.slow  # two 2-process torchrun launches


def test_tiny_run_compares_ddp_and_fsdp(tmp_path, capsys):
    bench = load_bench("fsdp_memory")
    payload = bench.main(["--output_dir", str(tmp_path), "--layers", "2", "--hidden", "64", "--steps", "2",
                          "--batch", "2", "--max_seq_length", "16"])
    ddp, fsdp = payload["results"]
    assert (ddp["mode"], fsdp["mode"]) == ("ddp", "fsdp")
    assert ddp["held"] is None and fsdp["parameters"] / 2 <= fsdp["held"] < fsdp["parameters"] * 0.51
    assert ddp["peak_rss_mb"] > 0 and fsdp["peak_rss_mb"] > 0 and ddp["wall_s"] > 0
    for r in (ddp, fsdp):  # the hook's trace: memory when training began and in the steps, and the load peak
        assert 0 < r["begin_rss_mb"] <= r["load_peak_mb"] and r["step_rss_mb"] > 0
    # the model state: each process holds half the weights and gradients, and AdamW's two moments of them
    assert fsdp["weights_mb"] == pytest.approx(ddp["weights_mb"] / 2, rel=0.02)
    assert fsdp["grads_mb"] == pytest.approx(ddp["grads_mb"] / 2, rel=0.02)
    assert ddp["optimizer_mb"] == pytest.approx(2 * ddp["weights_mb"], rel=0.02)
    assert fsdp["optimizer_mb"] == pytest.approx(ddp["optimizer_mb"] / 2, rel=0.02)
    assert fsdp["last_loss"] == pytest.approx(ddp["last_loss"], rel=1e-3)  # the same steps, sharded or not
    printed = capsys.readouterr().out
    assert "| fsdp |" in printed and "FSDP / DDP per process: model state 0.5" in printed
