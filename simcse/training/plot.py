"""Plot a training run from its ``trainer_state.json``: loss, learning rate, STS dev scores, diagnostics.

    python -m simcse.training.plot result/my-unsup-simcse [--out_dir result/my-unsup-simcse/plots]

Reads ``OUTPUT_DIR/trainer_state.json`` (train.py saves it at the end) or, while a run is going, the
one in the latest ``checkpoint-*``; a ``trainer_state.json`` path is read as it is (the plots then go
beside it, in ``plots/``). Writes one PNG per group that has data, against the global step:

* ``loss.png``: the training loss (and the gradient norm, own panel)
* ``learning_rate.png``
* ``sts_dev.png``: eval_stsb_spearman, eval_sickr_spearman, eval_avg_sts (one panel; a dotted line at
  the best checkpoint)
* ``transfer_dev.png``: eval_MR ... eval_avg_transfer, with ``--eval_transfer``
* ``train_diagnostics.png``: align, uniform, p_pos of the training batches (one panel each)
* ``eval_diagnostics.png``: eval_stsb_align, eval_stsb_uniform on STS-B dev (one panel each)
* ``custom_dev.png``: every other ``eval_<name>_spearman``, i.e. the ``--eval_custom_sts`` files (one panel)

Curves sharing a panel never share a colour: up to 10 take matplotlib's ``tab10``, up to 20 the
``tab20`` colours (dark shades first), beyond that colours repeat with another line style; with more
than 8 curves the legend moves outside the axes.

matplotlib is a dev dependency (requirements-dev.txt), imported only here. For live curves use the
Trainer's own ``--report_to tensorboard`` (``pip install tensorboard``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from simcse.errors import SimCSEError


@dataclass(frozen=True)
class Group:
    filename: str
    title: str
    metrics: tuple[str, ...]
    shared_axes: bool  # all metrics in one panel (same scale) or one panel each


GROUPS = (
    Group("loss.png", "training loss", ("loss", "grad_norm"), shared_axes=False),
    Group("learning_rate.png", "learning rate", ("learning_rate",), shared_axes=True),
    Group("sts_dev.png", "STS dev (Spearman)", ("eval_stsb_spearman", "eval_sickr_spearman", "eval_avg_sts"),
          shared_axes=True),
    Group("transfer_dev.png", "transfer dev (accuracy)",
          ("eval_MR", "eval_CR", "eval_SUBJ", "eval_MPQA", "eval_SST2", "eval_TREC", "eval_MRPC",
           "eval_avg_transfer"), shared_axes=True),
    Group("train_diagnostics.png", "training-batch diagnostics", ("align", "uniform", "p_pos"), shared_axes=False),
    Group("eval_diagnostics.png", "STS-B dev alignment / uniformity", ("eval_stsb_align", "eval_stsb_uniform"),
          shared_axes=False),
)


KNOWN_METRICS = frozenset(m for group in GROUPS for m in group.metrics)
CUSTOM_METRIC = re.compile(r"eval_(.+)_spearman")
LINE_STYLES = ("-", "--", ":", "-.")


def custom_group(log_history: list[dict]) -> Group | None:
    """The --eval_custom_sts curves: every logged eval_<name>_spearman outside the fixed groups."""
    names = dict.fromkeys(key for entry in log_history for key in entry
                          if CUSTOM_METRIC.fullmatch(key) and key not in KNOWN_METRICS)
    return Group("custom_dev.png", "custom dev sets (Spearman)", tuple(names), shared_axes=True) if names else None


def series_styles(count: int) -> list[dict]:
    """``count`` (colour, line style) pairs, all different, with as many different colours as possible."""
    from matplotlib import colormaps

    if count <= 10:
        colours = list(colormaps["tab10"].colors)
    else:
        tab20 = list(colormaps["tab20"].colors)
        colours = tab20[0::2] + tab20[1::2]  # the 10 dark shades, then their light partners
    return [{"color": colours[i % len(colours)], "linestyle": LINE_STYLES[(i // len(colours)) % len(LINE_STYLES)]}
            for i in range(count)]


def find_trainer_state(output_dir: str | Path) -> Path:
    """OUTPUT_DIR/trainer_state.json, else the one in the checkpoint-N with the largest N."""
    root = Path(output_dir)
    if root.is_file() and root.name == "trainer_state.json":
        return root
    if not root.is_dir():
        raise SimCSEError(f"{str(root)!r} is not a directory; give a train.py `output_dir`")
    if (root / "trainer_state.json").is_file():
        return root / "trainer_state.json"
    checkpoints = [p for p in root.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)
                   and (p / "trainer_state.json").is_file()]
    if not checkpoints:
        raise SimCSEError(f"no trainer_state.json in {str(root)!r} or its checkpoint-* folders; "
                          "give the `output_dir` of a train.py run")
    return max(checkpoints, key=lambda p: int(p.name.split("-")[1])) / "trainer_state.json"


def series(log_history: list[dict], metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric over the log entries that carry it."""
    points = [(entry["step"], float(entry[metric])) for entry in log_history
              if metric in entry and "step" in entry and isinstance(entry[metric], (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def best_step(state: dict) -> int | None:
    match = re.search(r"checkpoint-(\d+)$", state.get("best_model_checkpoint") or "")
    return int(match.group(1)) if match else None


def plot_training(output_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the PNGs of one run (see the module docstring); returns their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SimCSEError("plotting needs matplotlib; pip install matplotlib (or -r requirements-dev.txt)") from None

    state_file = find_trainer_state(output_dir)
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except ValueError as err:
        raise SimCSEError(f"{str(state_file)!r} is not valid JSON ({err}); "
                          "was it cut off while being written?") from None
    history = state.get("log_history") or []
    run_dir = Path(output_dir).parent if Path(output_dir).is_file() else Path(output_dir)
    target = Path(out_dir) if out_dir is not None else run_dir / "plots"
    best = best_step(state)
    written: list[Path] = []
    groups = [*GROUPS, *filter(None, [custom_group(history)])]
    for group in groups:
        present = [(m, *series(history, m)) for m in group.metrics]
        present = [(m, steps, values) for m, steps, values in present if steps]
        if not present:
            continue
        panels = 1 if group.shared_axes else len(present)
        outside = group.shared_axes and len(present) > 8  # a legend that would cover the curves goes right
        fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels + (3 if outside else 0), 4), squeeze=False)
        styles = series_styles(len(present))
        for i, (metric, steps, values) in enumerate(present):
            ax = axes[0][0 if group.shared_axes else i]
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=metric,
                    **(styles[i] if group.shared_axes else {}))
            if not group.shared_axes:
                ax.set_title(metric)
        for ax in axes[0]:
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            if best is not None and group.filename in ("sts_dev.png", "custom_dev.png"):
                ax.axvline(best, color="grey", linestyle=":", label=f"best checkpoint (step {best})")
            if group.shared_axes:
                if outside:
                    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
                else:
                    ax.legend(fontsize=8)
        fig.suptitle(f"{group.title}: {run_dir.name}")
        fig.tight_layout()
        target.mkdir(parents=True, exist_ok=True)
        path = target / group.filename
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    if not written:
        raise SimCSEError(f"{str(state_file)!r} has no logged metrics to plot; train with `logging_steps` N "
                          "(and `eval_strategy` steps for the STS curves)")
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    from simcse.cli import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m simcse.training.plot", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="the --output_dir of a train.py run, a checkpoint-N folder, or a "
                        "trainer_state.json file")
    parser.add_argument("--out_dir", default=None, help="where to write the PNGs (default: OUTPUT_DIR/plots)")
    args = parser.parse_args(argv)
    paths = plot_training(args.output_dir, args.out_dir)
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    from simcse.cli import run_cli

    sys.exit(run_cli(main, prog="python -m simcse.training.plot"))
