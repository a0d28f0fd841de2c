"""bench/data_scale.py in its CI-sized form: builds distinct inputs, runs every stage, and resumes."""

from __future__ import annotations

import csv
import json

import pytest

from helpers import SHARED, load_bench

pytestmark = pytest.mark.slow  # runs a bench script end to end



def test_small_run_measures_every_stage_and_resumes(tmp_path, capsys):
    bench = load_bench("data_scale")
    argv = ["--work_dir", str(tmp_path / "work"), "--lines", "300", "--nli_rows", "120", "--in_process",
            "--shared", str(SHARED), "--unsup_batch_size", "16", "--sup_batch_size", "32",
            "--output_json", str(tmp_path / "out.json")]
    payload = bench.main(argv)

    wiki = (tmp_path / "work" / "wiki_300.txt").read_text(encoding="utf-8").splitlines()
    assert len(wiki) == len(set(wiki)) == 300  # distinct lines, longer than the sample would give alone
    with open(tmp_path / "work" / "nli_120.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["sent0", "sent1", "hard_neg"] and len({tuple(r) for r in rows[1:]}) == 120

    sizes = {"unsupervised (wiki .txt)": (300, 1, 16), "supervised (NLI .csv)": (120, 3, 32)}
    for name, (examples, num_sent, batch_size) in sizes.items():
        stages = payload["datasets"][name]["stages"]
        assert set(stages) == {"floor", "prepare_first", "prepare_cached", "sampler_epoch"}
        assert stages["floor"]["sentences"] == examples * num_sent
        assert stages["prepare_first"]["examples"] == stages["prepare_cached"]["examples"] == examples
        assert stages["prepare_first"]["num_sent"] == num_sent
        sampler = stages["sampler_epoch"]
        assert sampler["collated_batches"] == sampler["batches"] >= examples // batch_size
        assert all(s["seconds"] > 0 and s["peak_rss_mb"] > 0 for s in stages.values())
    assert json.loads((tmp_path / "out.json").read_text())["goals"] == payload["goals"]
    printed = capsys.readouterr().out
    assert "prepare / floor =" in printed and "goals:" in printed

    again = bench.main(argv + ["--resume"])  # nothing re-measured: every stage read back
    assert capsys.readouterr().out.count("reused from") == 8
    assert again["datasets"] == payload["datasets"]
