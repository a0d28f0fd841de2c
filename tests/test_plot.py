"""python -m simcse.training.plot on a real (tiny) training run, and TensorBoard logging through the Trainer."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import train
from helpers import save_tiny_model, write_sts_tree
from simcse.cli import run_cli
from simcse.errors import SimCSEError
from simcse.training import plot

SENTENCES = [f"sentence number {i} about a topic {i % 3}" for i in range(12)]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED = ["loss.png", "learning_rate.png", "sts_dev.png", "train_diagnostics.png", "eval_diagnostics.png"]


def tiny_run_args(tmp_path, out, *extra):
    model = save_tiny_model(tmp_path / "tiny-bert", "bert")
    train_file = tmp_path / "train.txt"
    train_file.write_text("\n".join(SENTENCES) + "\n")
    return ["--model_name_or_path", str(model), "--train_file", str(train_file), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--use_cpu",
            "--max_seq_length", "16", *extra]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """3 steps, logged every step, evaluated on a tiny STS tree every step, best checkpoint kept."""
    pytest.importorskip("matplotlib")
    tmp_path = tmp_path_factory.mktemp("plot-run")
    out = tmp_path / "out"
    data = write_sts_tree(tmp_path / "data")
    train.main(tiny_run_args(tmp_path, out, "--max_steps", "3", "--logging_steps", "1", "--report_to", "none",
                             "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps",
                             "--save_steps", "1", "--metric_for_best_model", "stsb_spearman",
                             "--load_best_model_at_end", "--senteval_data", str(data)))
    return out


def check_png(path):
    content = path.read_bytes()
    assert content.startswith(PNG_SIGNATURE), path
    assert len(content) > 5_000, (path, len(content))


@pytest.mark.slow
def test_plots_of_a_training_run(run_dir, tmp_path, capsys):
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    logged = set().union(*history)
    assert {"loss", "learning_rate", "align", "uniform", "p_pos", "eval_stsb_spearman", "eval_stsb_align"} <= logged

    target = tmp_path / "plots"
    paths = plot.main([str(run_dir), "--out_dir", str(target)])
    assert sorted(p.name for p in paths) == sorted(EXPECTED)
    for path in paths:
        check_png(path)
    assert capsys.readouterr().out.split() == [str(p) for p in paths]  # the written paths, one a line


def test_latest_checkpoint_is_used_when_the_run_has_no_final_state(run_dir, tmp_path):
    partial = tmp_path / "partial"
    for checkpoint in ("checkpoint-2", "checkpoint-3"):
        if (run_dir / checkpoint).is_dir():
            shutil.copytree(run_dir / checkpoint, partial / checkpoint)
    assert plot.find_trainer_state(partial) == partial / "checkpoint-3" / "trainer_state.json"
    paths = plot.plot_training(partial)
    assert paths[0].parent == partial / "plots"
    for path in paths:
        check_png(path)


def test_errors(tmp_path, capsys, monkeypatch):
    code = run_cli(plot.main, [str(tmp_path)], prog="plot")
    assert code == 2 and "no trainer_state.json in" in capsys.readouterr().err
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [{"train_runtime": 1.0, "step": 3}]}))
    pytest.importorskip("matplotlib")
    with pytest.raises(SimCSEError, match=r"no logged metrics to plot; train with `logging_steps` N"):
        plot.plot_training(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(SimCSEError, match=r"plotting needs matplotlib; pip install matplotlib"):
        plot.plot_training(tmp_path)


def test_report_to_tensorboard_writes_an_events_file(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (optional: pip install tensorboard)")
    out = tmp_path / "out"
    train.main(tiny_run_args(tmp_path, out, "--max_steps", "2", "--logging_steps", "1", "--report_to", "tensorboard",
                             "--eval_strategy", "no", "--save_strategy", "no"))
    events = list(out.rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)


def test_a_trainer_state_path_and_15_custom_dev_sets_in_15_colours(tmp_path, monkeypatch, capsys):
    """A trainer_state.json path (it used to crash: the plots went to 'trainer_state.json/plots'), 15
    --eval_custom_sts curves in one panel, each with its own colour (the default cycle repeats after 10)."""
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    names = [f"eval_set_{i:02d}_spearman" for i in range(15)]
    history = [{"step": s, "loss": 1.0 / s, "learning_rate": 1e-5} for s in range(1, 6)]
    history += [{"step": s, "eval_stsb_spearman": 0.5 + s / 100, **{n: i / 20 + s / 100 for i, n in enumerate(names)}}
                for s in range(1, 6)]
    state = tmp_path / "run" / "checkpoint-5" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"log_history": history, "best_model_checkpoint": "run/checkpoint-4"}))

    figures = {}
    real_savefig = Figure.savefig

    def keep(self, path, *args, **kwargs):
        figures[Path(path).name] = self
        return real_savefig(self, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    paths = plot.main([str(state)])
    assert {p.name for p in paths} == {"loss.png", "learning_rate.png", "sts_dev.png", "custom_dev.png"}
    assert all(p.parent == state.parent / "plots" for p in paths)
    for path in paths:
        check_png(path)
    custom = figures["custom_dev.png"]
    [ax] = custom.axes
    curves = [line for line in ax.get_lines() if line.get_label() in names]
    assert [line.get_label() for line in curves] == names
    assert len({matplotlib.colors.to_hex(line.get_color()) for line in curves}) == 15
    legend = ax.get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1  # beside the axes
    assert "eval_stsb_spearman" not in [line.get_label() for line in ax.get_lines()]  # it has its own plot
    capsys.readouterr()


def test_series_styles_never_repeat():
    pytest.importorskip("matplotlib")
    assert len({str(s["color"]) for s in plot.series_styles(15)}) == 15
    assert len({str(s["color"]) for s in plot.series_styles(20)}) == 20
    assert len({(str(s["color"]), s["linestyle"]) for s in plot.series_styles(45)}) == 45
