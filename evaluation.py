"""Evaluate a sentence encoder on the STS and transfer tasks with our SentEval package.

    python evaluation.py --model_name_or_path DIR_OR_HUB_ID --pooler cls_before_pooler \
        --task_set sts --mode test

Prints the same tables as the original SimCSE evaluation.py (STS: Spearman ×100, the ``all``
aggregation by default; transfer: accuracy ×100), names the STS aggregation, and with
``--output_json`` writes every printed figure plus the raw SentEval results.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from prettytable import PrettyTable
from tqdm.auto import tqdm
from transformers.utils import logging as transformers_logging

from senteval.datapath import resolve_data_dir
from senteval.engine import SE
from senteval.registry import STS_TASKS, TASKS, TRANSFER_TASKS
from senteval.sts import AGGREGATIONS
from senteval.utils import FAST_CLASSIFIER, TEST_CLASSIFIER
from simcse.cli import OneLineArgumentParser, run_cli
from simcse.encoder import build_encoder
from simcse.errors import SimCSEError
from simcse.poolers import ALL_POOLERS

TASK_SETS = {"sts": STS_TASKS, "transfer": TRANSFER_TASKS, "full": STS_TASKS + TRANSFER_TASKS}
DEV_STS_TASKS = ["STSBenchmark", "SICKRelatedness"]  # the only STS tasks with a dev split
AGG_HELP = {
    "all": "one Spearman over the concatenation of all subsets, as in the SimCSE paper",
    "mean": "plain mean of the per-subset Spearman",
    "wmean": "per-subset Spearman weighted by subset size",
}
# Sentences handed to the batcher per call: large, so the encoder can sort them by token length.
SENTEVAL_CHUNK = 4096


def parse_args(argv: list[str] | None):
    parser = OneLineArgumentParser(prog="evaluation.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", required=True, help="local model directory or hub id")
    parser.add_argument("--pooler", default="cls", choices=ALL_POOLERS, help="pooling method (default: cls)")
    parser.add_argument(
        "--mode",
        default="test",
        choices=["dev", "test", "fasttest"],
        help="dev: STS-B/SICK-R dev and transfer dev accuracy (fast probes); test: the paper's protocol; "
        "fasttest: test splits with the fast probes",
    )
    parser.add_argument("--task_set", default="sts", choices=["sts", "transfer", "full", "na"], help="overrides --tasks unless na")
    parser.add_argument("--tasks", nargs="+", default=STS_TASKS, choices=list(TASKS), metavar="TASK", help="tasks for --task_set na")
    parser.add_argument("--sts_agg", default="all", choices=AGGREGATIONS, help="aggregation of STS12-16 subsets")
    parser.add_argument("--batch_size", type=int, default=64, help="sentences per forward pass")
    parser.add_argument("--max_seq_length", type=int, default=None, help="truncate to this many tokens (default: model limit)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    parser.add_argument("--senteval_data", default=None, help="directory containing downstream/ (see README)")
    parser.add_argument("--output_json", default=None, help="also write every printed figure to this JSON file")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"argument --batch_size: must be positive, got {args.batch_size}")
    if args.max_seq_length is not None and args.max_seq_length < 2:
        parser.error(f"argument --max_seq_length: must be at least 2, got {args.max_seq_length}")
    return args


def select_tasks(task_set: str, tasks: list[str], mode: str) -> list[str]:
    if task_set == "na":
        return list(dict.fromkeys(tasks))
    selected = TASK_SETS[task_set]
    if mode == "dev":  # STS12-16 have no dev split
        selected = [t for t in selected if t not in STS_TASKS or t in DEV_STS_TASKS]
    return list(selected)


def senteval_params(mode: str, data_dir: str | None, device: str | None) -> dict:
    test = mode == "test"
    return {
        "task_path": data_dir,
        "usepytorch": True,
        "kfold": 10 if test else 5,
        "classifier": dict(TEST_CLASSIFIER if test else FAST_CLASSIFIER),
        "batch_size": SENTEVAL_CHUNK,
        "device": device,
        "sts_splits": ["dev"] if mode == "dev" else ["test"],
    }


def fmt(value: float) -> str:
    return f"{value:.2f}"


def with_average(names: list[str], scores: list[str]) -> tuple[list[str], list[str]]:
    # As the original: the average of the printed (rounded) numbers.
    return names + ["Avg."], scores + [fmt(sum(float(s) for s in scores) / len(scores))]


def sts_row(results: dict, mode: str, agg: str) -> tuple[list[str], list[str]]:
    if mode == "dev":
        names = [t for t in DEV_STS_TASKS if t in results]
        return names, [fmt(results[t]["dev"]["spearman"] * 100) for t in names]
    names = [t for t in STS_TASKS if t in results]
    scores = []
    for task in names:
        if task in DEV_STS_TASKS:
            scores.append(fmt(results[task]["test"]["spearman"] * 100))
        else:
            scores.append(fmt(results[task]["all"]["spearman"][agg] * 100))
    return with_average(names, scores)


def transfer_row(results: dict, mode: str) -> tuple[list[str], list[str]]:
    key = "devacc" if mode == "dev" else "acc"
    names = [t for t in TRANSFER_TASKS if t in results]
    return with_average(names, [fmt(results[t][key]) for t in names])


def render_table(names: list[str], scores: list[str]) -> str:
    table = PrettyTable()
    table.field_names = names
    table.add_row(scores)
    return table.get_string()


def aggregation_note(mode: str, agg: str) -> str:
    if mode == "dev":
        return f"STS aggregation: {agg} (no effect in dev mode: STS-B and SICK-R dev are single splits)"
    return f"STS aggregation: {agg} ({AGG_HELP[agg]}; STSBenchmark and SICKRelatedness: test split)"


def write_json_atomic(path: str, payload: dict) -> None:
    """Write to a temporary file beside ``path`` and rename, so a crash never leaves half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def evaluate(args, out=None) -> dict:
    out = out if out is not None else sys.stdout
    tasks = select_tasks(args.task_set, args.tasks, args.mode)
    data_dir = resolve_data_dir(args.senteval_data)  # fail before loading the model, not after
    encoder = build_encoder(
        args.model_name_or_path,
        args.pooler,
        device=args.device,
        batch_size=args.batch_size,
        max_length=args.max_seq_length,
        show_progress=sys.stderr.isatty(),
    )

    def batcher(params, batch):
        sentences = [" ".join(w.decode("utf-8") if isinstance(w, bytes) else w for w in s) for s in batch]
        return encoder.encode(sentences).numpy()

    se = SE(senteval_params(args.mode, str(data_dir), args.device), batcher)
    started = time.perf_counter()
    results = {}
    for task in tqdm(tasks, desc="SentEval", unit="task", disable=not sys.stderr.isatty()):
        results[task] = se.eval(task)
    seconds = time.perf_counter() - started

    tables: dict[str, dict[str, float]] = {}
    print(f"------ {args.mode} ------", file=out)
    if any(t in STS_TASKS for t in results):
        names, scores = sts_row(results, args.mode, args.sts_agg)
        print(render_table(names, scores), file=out)
        print(aggregation_note(args.mode, args.sts_agg), file=out)
        tables["sts"] = {n: float(s) for n, s in zip(names, scores)}
    if any(t in TRANSFER_TASKS for t in results):
        names, scores = transfer_row(results, args.mode)
        print(render_table(names, scores), file=out)
        tables["transfer"] = {n: float(s) for n, s in zip(names, scores)}
    return {
        "model_name_or_path": args.model_name_or_path,
        "pooler": args.pooler,
        "mode": args.mode,
        "task_set": args.task_set,
        "tasks": tasks,
        "sts_agg": args.sts_agg,
        "tables": tables,
        "results": results,
        "sentences_encoded": encoder.sentences_encoded,
        "seconds": round(seconds, 3),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    transformers_logging.disable_progress_bar()  # the per-tensor "Loading weights" bar is noise here
    if args.output_json and os.path.isdir(args.output_json):
        raise SimCSEError(f"--output_json {args.output_json!r} is a directory; give a file path such as result.json")
    payload = evaluate(args)
    if args.output_json:
        write_json_atomic(args.output_json, payload)
    return payload


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="evaluation.py"))
