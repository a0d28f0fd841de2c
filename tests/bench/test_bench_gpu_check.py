"""bench/gpu_check.py in its CPU form: every side trains, the checks pass, one JSON is written."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest

from helpers import REPO, write_sts_tree

pytestmark = pytest.mark.slow  # runs a bench script end to end


def test_tiny_cpu_run_writes_one_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gpu_check  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--tiny", "--steps", "4", "--warmup", "1", "--batch_size", "4", "--precisions", "fp32",
                           "--sts_data", str(write_sts_tree(tmp_path / "sts")), "--output_json", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    assert payload["tiny"] and payload["checks"] == {"losses_finite": True, "no_fp16_skips_after_warmup": True}
    sides = {(r["side"], r["precision"]): r for r in payload["results"]}
    assert set(sides) == {("floor", "fp32"), ("ours", "fp32"), ("peer", "fp32")}
    for r in sides.values():
        assert r["steps_per_s"] > 0 and r["sentences_per_s"] == r["steps_per_s"] * 4 and r["skipped_steps"] == 0
    assert math.isclose(payload["ratios"]["ours_over_floor_fp32"],
                        sides[("ours", "fp32")]["steps_per_s"] / sides[("floor", "fp32")]["steps_per_s"])
    sts = payload["sts_eval_speed"]
    assert set(sts["ours"]) == set(sts["peer"]) and sts["max_abs_diff"] < 0.01  # same scores, both sides
    printed = capsys.readouterr().out
    assert "ours_over_peer_fp32" in printed and "6.62 steps/s fp32" in printed
