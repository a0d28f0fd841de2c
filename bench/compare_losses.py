"""Train every registered loss from the same start, seed, data and step count; compare them.

    python bench/compare_losses.py [--model DIR] [--steps 40] [--eval_steps 10] [--losses infonce,dcl]

For each loss: ``train.py`` (unsupervised, ``--pooler_type cls --mlp_only_train``, batch 64, max length
32, seed 42) with STS-B dev every ``--eval_steps`` steps and the best checkpoint kept, then the STS
suite on that checkpoint with ``cls_before_pooler``. Every loss uses its registry defaults (τ = 0.05
for those with a temperature). Writes into ``--output_dir``:

* ``compare_losses.md``: loss, hyperparameters, best STS-B dev, STS avg (test), alignment and
  uniformity on STS-B dev at the best step (SimCSE paper's protocol), training sentences/s;
* ``compare_losses.json``: the same plus every curve;
* ``stsb_dev_vs_step.png`` and ``align_uniform.png`` (each loss's trajectory in the
  alignment-uniformity plane, from the starting model to the last evaluation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from bench_defaults import default_model

import evaluation
import train
from senteval.datapath import resolve_data_dir
from simcse.losses import LOSSES, loss_kwargs_of


def run_one(loss: str, args, data: str) -> dict:
    out = Path(args.output_dir) / "runs" / loss
    started = time.perf_counter()
    train.main([
        "--model_name_or_path", args.model, "--train_file", args.train_file, "--output_dir", str(out),
        "--overwrite_output_dir", "--loss_type", loss, "--pooler_type", "cls", "--mlp_only_train",
        "--learning_rate", str(args.learning_rate), "--per_device_train_batch_size", str(args.batch_size),
        "--max_seq_length", "32", "--max_steps", str(args.steps), "--eval_strategy", "steps",
        "--eval_steps", str(args.eval_steps), "--save_strategy", "steps", "--save_steps", str(args.eval_steps),
        "--save_total_limit", "1", "--metric_for_best_model", "stsb_spearman", "--load_best_model_at_end",
        "--eval_on_start", "--logging_steps", str(args.eval_steps), "--seed", str(args.seed),
        "--report_to", "none", "--senteval_data", data, "--disable_tqdm", "true", "--dataloader_drop_last",
    ])
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    end = next(i for i, h in enumerate(history) if "train_runtime" in h)
    evals = [h for h in history[:end] if "eval_stsb_spearman" in h]
    eval_seconds = sum(h["eval_runtime"] for h in evals)  # STS-B dev runs inside the training clock
    best = max(evals, key=lambda h: h["eval_stsb_spearman"])
    suite = evaluation.main(["--model_name_or_path", str(out), "--pooler", "cls_before_pooler", "--task_set", "sts",
                             "--mode", "test", "--senteval_data", data])["tables"]["sts"]
    hparams = json.loads((out / "config.json").read_text())["simcse_loss"]
    hparams.pop("name")
    return {
        "loss": loss, "hparams": hparams, "stsb_dev_best": 100 * best["eval_stsb_spearman"], "best_step": best["step"],
        "sts_avg": suite["Avg."], "sts": suite, "align": best["eval_stsb_align"], "uniform": best["eval_stsb_uniform"],
        "sentences_per_s": args.steps * args.batch_size / (history[end]["train_runtime"] - eval_seconds),
        "curve": [(h["step"], 100 * h["eval_stsb_spearman"]) for h in evals],
        "trajectory": [(h["eval_stsb_align"], h["eval_stsb_uniform"]) for h in evals],
        "seconds": round(time.perf_counter() - started, 1),
    }


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"Model `{Path(args.model).name}`, {args.steps} steps of batch {args.batch_size} (max length 32, lr "
        f"{args.learning_rate}, seed {args.seed}) on `{Path(args.train_file).name}`, `--pooler_type cls "
        f"--mlp_only_train`, evaluated with `cls_before_pooler`; {platform.machine()} CPU x "
        f"{torch.get_num_threads()} threads. STS-B dev: best of the evaluations every {args.eval_steps} steps "
        "(start included); STS avg: the 7-task test average of that checkpoint; alignment/uniformity: "
        "STS-B dev at the best step (lower is better for both); sentences/s: training examples per second with "
        "the evaluation time taken out.",
        "",
        "| loss | hyperparameters | STS-B dev best | STS avg | alignment | uniformity | sentences/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["stsb_dev_best"]):
        hp = ", ".join(f"{k}={v}" for k, v in r["hparams"].items())
        lines.append(f"| {r['loss']} | {hp} | {r['stsb_dev_best']:.2f} | {r['sts_avg']:.2f} | {r['align']:.3f} | "
                     f"{r['uniform']:.3f} | {r['sentences_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        steps, values = zip(*r["curve"])
        ax.plot(steps, values, marker="o", markersize=3, label=r["loss"])
    ax.set_xlabel("training step")
    ax.set_ylabel("STS-B dev Spearman x 100")
    ax.set_title("STS-B dev during training, every loss from the same start")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    curve_png = out / "stsb_dev_vs_step.png"
    fig.tight_layout()
    fig.savefig(curve_png, dpi=130)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 5))
    for r in rows:
        align, uniform = zip(*r["trajectory"])
        line, = ax.plot(uniform, align, marker=".", alpha=0.8, label=r["loss"])
        ax.scatter(uniform[-1], align[-1], color=line.get_color(), s=30, zorder=3)
    start_align, start_uniform = rows[0]["trajectory"][0]
    ax.scatter(start_uniform, start_align, color="black", marker="*", s=120, zorder=4, label="start")
    ax.set_xlabel("uniformity (lower is better)")
    ax.set_ylabel("alignment (lower is better)")
    ax.set_title("STS-B dev alignment vs uniformity, start -> end")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    plane_png = out / "align_uniform.png"
    fig.tight_layout()
    fig.savefig(plane_png, dpi=130)
    plt.close(fig)
    return [curve_png, plane_png]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default: ../shared/models/paraphrase-MiniLM-L3-v2")
    parser.add_argument("--train_file", default=None, help="default: the wiki1m sample")
    parser.add_argument("--senteval_data", default=None)
    unsupervised = sorted(name for name, cls in LOSSES.items() if not (cls.needs_scores or cls.needs_guide))
    parser.add_argument("--losses", default=",".join(unsupervised),
                        help="comma-separated registry names (default: those that train on plain sentences)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval_steps", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=3e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", default="result/compare_losses")
    args = parser.parse_args(argv)
    from simcse.demo import default_train_file

    args.model = args.model or default_model()
    args.train_file = args.train_file or default_train_file()
    losses = [name.strip() for name in args.losses.split(",") if name.strip()]
    unknown = [name for name in losses if name not in LOSSES]
    if unknown:
        parser.error(f"unknown loss(es) {unknown}; registered: {', '.join(sorted(LOSSES))}")
    special = [name for name in losses if LOSSES[name].needs_scores or LOSSES[name].needs_guide]
    if special:
        parser.error(f"{special} need scored pairs or a guide model, which this comparison on plain sentences "
                     "does not provide; leave them out of --losses")
    data = str(resolve_data_dir(args.senteval_data))
    out = Path(args.output_dir)
    os.makedirs(out, exist_ok=True)

    rows = []
    for loss in losses:
        print(f"=== {loss} {loss_kwargs_of(loss)}", flush=True)
        rows.append(run_one(loss, args, data))
        (out / "compare_losses.json").write_text(json.dumps(rows, indent=2) + "\n")  # partial results survive
    table = markdown(rows, args)
    (out / "compare_losses.md").write_text(table)
    pngs = plot(rows, out)
    print(table)
    print("wrote", out / "compare_losses.md", *pngs)
    return rows


if __name__ == "__main__":
    main()
