"""Plot a training run from its ``trainer_state.json``: loss, learning rate, STS dev scores, diagnostics.

    python -m simcse.plot result/my-unsup-simcse [--out_dir result/my-unsup-simcse/plots]

Reads ``OUTPUT_DIR/trainer_state.json`` (train.py saves it at the end) or, while a run is going, the
one in the latest ``checkpoint-*``. Writes one PNG per group that has data, against the global step:

* ``loss.png``: the training loss (and the gradient norm, own panel)
* ``learning_rate.png``
* ``sts_dev.png``: eval_stsb_spearman, eval_sickr_spearman, eval_avg_sts (one panel; a dotted line at
  the best checkpoint)
* ``transfer_dev.png``: eval_MR ... eval_avg_transfer, with ``--eval_transfer``
* ``train_diagnostics.png``: align, uniform, p_pos of the training batches (one panel each)
* ``eval_diagnostics.png``: eval_stsb_align, eval_stsb_uniform on STS-B dev (one panel each)

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


def find_trainer_state(output_dir: str | Path) -> Path:
    """OUTPUT_DIR/trainer_state.json, else the one in the checkpoint-N with the largest N."""
    root = Path(output_dir)
    if root.is_file() and root.name == "trainer_state.json":
        return root
    if not root.is_dir():
        raise SimCSEError(f"{str(root)!r} is not a directory; give a train.py --output_dir")
    if (root / "trainer_state.json").is_file():
        return root / "trainer_state.json"
    checkpoints = [p for p in root.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)
                   and (p / "trainer_state.json").is_file()]
    if not checkpoints:
        raise SimCSEError(f"no trainer_state.json in {str(root)!r} or its checkpoint-* folders; "
                          "give the --output_dir of a train.py run")
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
    state = json.loads(state_file.read_text(encoding="utf-8"))
    history = state.get("log_history") or []
    target = Path(out_dir) if out_dir is not None else Path(output_dir) / "plots"
    best = best_step(state)
    written: list[Path] = []
    for group in GROUPS:
        present = [(m, *series(history, m)) for m in group.metrics]
        present = [(m, steps, values) for m, steps, values in present if steps]
        if not present:
            continue
        panels = 1 if group.shared_axes else len(present)
        fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
        for i, (metric, steps, values) in enumerate(present):
            ax = axes[0][0 if group.shared_axes else i]
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=metric)
            if not group.shared_axes:
                ax.set_title(metric)
        for ax in axes[0]:
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            if best is not None and group.filename == "sts_dev.png":
                ax.axvline(best, color="grey", linestyle=":", label=f"best checkpoint (step {best})")
            if group.shared_axes:
                ax.legend(fontsize=8)
        fig.suptitle(f"{group.title}: {Path(output_dir).name}")
        fig.tight_layout()
        target.mkdir(parents=True, exist_ok=True)
        path = target / group.filename
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    if not written:
        raise SimCSEError(f"{str(state_file)!r} has no logged metrics to plot; train with --logging_steps N "
                          "(and --eval_strategy steps for the STS curves)")
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    from simcse.cli import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m simcse.plot", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="the --output_dir of a train.py run (or a checkpoint-N folder)")
    parser.add_argument("--out_dir", default=None, help="where to write the PNGs (default: OUTPUT_DIR/plots)")
    args = parser.parse_args(argv)
    paths = plot_training(args.output_dir, args.out_dir)
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    from simcse.cli import run_cli

    sys.exit(run_cli(main, prog="python -m simcse.plot"))
