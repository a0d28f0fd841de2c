"""Evaluate a sentence encoder on the STS and transfer tasks with our SentEval package.

    python evaluation.py --model_name_or_path DIR_OR_HUB_ID --pooler cls_before_pooler \
        --task_set sts --mode test

Prints the same tables as the original SimCSE evaluation.py (STS: Spearman ×100, the ``all``
aggregation by default; transfer: accuracy ×100), names the STS aggregation, and with
``--output_json`` writes every printed figure plus the raw SentEval results.

Your own data (:mod:`senteval.custom`): ``--custom_sts FILE[:NAME]`` scores sentence pairs against their
gold score or 0/1 label (Spearman and Pearson ×100) and ``--custom_classification TRAIN[,DEV],TEST[:NAME]``
fits the transfer tasks' linear probe (accuracy and macro-F1 ×100); each kind gets its own table after
the standard ones. ``--task_set custom`` runs only these.
"""

from __future__ import annotations

import os
import sys
import time

from prettytable import PrettyTable
from tqdm.auto import tqdm
from transformers.utils import logging as transformers_logging

from senteval.custom import CustomClassificationEval, CustomSTSEval, parse_spec
from senteval.custom import evaluate as evaluate_custom
from senteval.datapath import resolve_data_dir
from senteval.engine import SE
from senteval.registry import STS_TASKS, TASKS, TRANSFER_TASKS
from senteval.sts import AGGREGATIONS
from senteval.utils import FAST_CLASSIFIER, TEST_CLASSIFIER
from simcse.cli import OneLineArgumentParser, run_cli
from simcse.encoder import build_encoder
from simcse.errors import SimCSEError
from simcse.files import atomic_write_json as write_json_atomic
from simcse.poolers import ALL_POOLERS, POOLER_HELP

TASK_SETS = {"sts": STS_TASKS, "transfer": TRANSFER_TASKS, "full": STS_TASKS + TRANSFER_TASKS, "custom": []}
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
    parser.add_argument("--pooler", default="cls", choices=ALL_POOLERS, help=f"{POOLER_HELP} (default: cls)")
    parser.add_argument(
        "--mode",
        default="test",
        choices=["dev", "test", "fasttest"],
        help="dev: STS-B/SICK-R dev and transfer dev accuracy (fast probes); test: the paper's protocol; "
        "fasttest: test splits with the fast probes",
    )
    parser.add_argument("--task_set", default="sts", choices=["sts", "transfer", "full", "na", "custom"],
                        help="overrides --tasks unless na; custom: only the --custom_* sets")
    parser.add_argument("--tasks", nargs="+", default=STS_TASKS, choices=list(TASKS), metavar="TASK", help="tasks for --task_set na")
    parser.add_argument("--sts_agg", default="all", choices=AGGREGATIONS, help="aggregation of STS12-16 subsets")
    parser.add_argument("--batch_size", type=int, default=64, help="sentences per forward pass")
    parser.add_argument("--max_seq_length", type=int, default=None, help="truncate to this many tokens (default: model limit)")
    parser.add_argument("--truncate_dim", type=int, default=None, metavar="D",
                        help="evaluate only the first D coordinates of each embedding (Matryoshka models)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    parser.add_argument("--senteval_data", default=None, help="directory containing downstream/ (see README)")
    parser.add_argument("--output_json", default=None, help="also write every printed figure to this JSON file")
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="run Python code shipped with a hub model (off: only built-in model classes load)")
    custom = parser.add_argument_group("your own data (see senteval/custom.py for the file layouts)")
    custom.add_argument("--custom_sts", nargs="+", action="extend", default=[], metavar="FILE[:NAME[:S1,S2,SCORE]]",
                        help="sentence-pair file (.tsv/.txt, .csv, .jsonl) with a float score or a 0/1 label; "
                        "repeatable; NAME defaults to the file stem; columns given here override --custom_columns")
    custom.add_argument("--custom_columns", default=None, metavar="S1,S2,SCORE",
                        help="columns of the --custom_sts files, by header name or 0-based index "
                        "(default: a header naming sentence1, sentence2 and label/score, or 3 columns)")
    custom.add_argument("--custom_classification", nargs="+", action="extend", default=[],
                        metavar="TRAIN[,DEV],TEST[:NAME[:TEXT,LABEL]]",
                        help="labelled text files for a linear probe on frozen embeddings; the penalty is chosen "
                        "on DEV when given, else by k-fold cross-validation on TRAIN; repeatable")
    custom.add_argument("--custom_classification_columns", default=None, metavar="TEXT,LABEL",
                        help="columns of the --custom_classification files, by header name or 0-based index "
                        "(default: a header naming text and label, or 2 columns)")
    args = parser.parse_args(argv)
    if args.task_set == "custom" and not (args.custom_sts or args.custom_classification):
        parser.error("--task_set custom needs --custom_sts or --custom_classification")
    for columns, files in (("--custom_columns", "--custom_sts"),
                           ("--custom_classification_columns", "--custom_classification")):
        if getattr(args, columns[2:]) and not getattr(args, files[2:]):
            parser.error(f"{columns} describes {files} files, but none was given")
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


def load_custom_tasks(args) -> tuple[list[CustomSTSEval], list[CustomClassificationEval]]:
    """Read every --custom_* file now, so a bad file fails before the model is loaded."""
    sts = []
    for spec in args.custom_sts:
        path, name, columns = parse_spec(spec)
        sts.append(CustomSTSEval(path, name=name, columns=columns or args.custom_columns,
                                 flag=f"--custom_sts {spec!r}" if columns else "--custom_columns"))
    classification = []
    for spec in args.custom_classification:
        body, name, columns = parse_spec(spec)
        files = body.split(",")
        if len(files) not in (2, 3) or not all(files):
            raise SimCSEError(f"--custom_classification {spec!r}: give TRAIN,TEST or TRAIN,DEV,TEST "
                              "(comma-separated files), optionally followed by :NAME and :TEXT,LABEL")
        train, dev, test = (files[0], None, files[1]) if len(files) == 2 else files
        classification.append(CustomClassificationEval(
            train, test, dev=dev, name=name, columns=columns or args.custom_classification_columns,
            flag=f"--custom_classification {spec!r}" if columns else "--custom_classification_columns"))
    for task in sts:
        print(f"custom STS {task.name}: {task.layout}", file=sys.stderr)
    for task in classification:
        for split, layout in task.layout.items():
            print(f"custom classification {task.name} ({split}): {layout}", file=sys.stderr)
    for kind, tasks in (("--custom_sts", sts), ("--custom_classification", classification)):
        names = [t.name for t in tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise SimCSEError(f"{kind}: the name {twice[0]!r} is used twice; tell the sets apart with FILE:NAME")
    return sts, classification


def custom_sts_table(results: dict) -> tuple[str, dict]:
    table = PrettyTable()
    table.field_names = ["custom STS", "pairs", "Spearman", "Pearson"]
    table.align["custom STS"] = "l"
    figures = {}
    for name, r in results.items():
        figures[name] = {"spearman": float(fmt(r["spearman"] * 100)), "pearson": float(fmt(r["pearson"] * 100))}
        table.add_row([name, r["nsamples"], fmt(r["spearman"] * 100), fmt(r["pearson"] * 100)])
    return table.get_string(), figures


def custom_classification_table(results: dict, kfold: int) -> tuple[str, dict]:
    table = PrettyTable()
    table.field_names = ["custom classification", "train", "dev", "test", "classes", "penalty chosen on",
                         "dev acc", "test acc", "test macro-F1"]
    table.align["custom classification"] = "l"
    figures = {}
    for name, r in results.items():
        chosen_on = "dev" if r["selection"] == "dev" else f"{kfold}-fold CV on train"
        figures[name] = {"devacc": r["devacc"], "acc": r["acc"], "macro_f1": r["macro_f1"]}
        table.add_row([name, r["ntrain"], r["ndev"] or "-", r["ntest"], len(r["classes"]), chosen_on,
                       fmt(r["devacc"]), fmt(r["acc"]), fmt(r["macro_f1"])])
    return table.get_string(), figures


def evaluate(args, out=None) -> dict:
    out = out if out is not None else sys.stdout
    tasks = select_tasks(args.task_set, args.tasks, args.mode)
    # fail before loading the model, not after; custom-only runs need no SentEval data
    data_dir = resolve_data_dir(args.senteval_data) if tasks else None
    custom_sts, custom_classification = load_custom_tasks(args)
    encoder = build_encoder(
        args.model_name_or_path,
        args.pooler,
        device=args.device,
        batch_size=args.batch_size,
        max_length=args.max_seq_length,
        show_progress=sys.stderr.isatty(),
        trust_remote_code=args.trust_remote_code,
        truncate_dim=args.truncate_dim,
    )

    def text(tokens: list) -> str:
        return " ".join(w.decode("utf-8") if isinstance(w, bytes) else w for w in tokens)

    def batcher(params, batch):
        return encoder.encode([text(s) for s in batch]).numpy()

    def prepare(params, samples):  # each task starts: keep only its sentences' embeddings (bounded memory)
        encoder.retain(text(s) for s in samples)

    params = senteval_params(args.mode, str(data_dir) if data_dir else None, args.device)
    started = time.perf_counter()
    results = {}
    if tasks:
        se = SE(params, batcher, prepare)
        for task in tqdm(tasks, desc="SentEval", unit="task", disable=not sys.stderr.isatty()):
            results[task] = se.eval(task)
    custom_results = {"custom_sts": {}, "custom_classification": {}}
    for kind, custom_tasks in (("custom_sts", custom_sts), ("custom_classification", custom_classification)):
        for task in custom_tasks:
            custom_results[kind][task.name] = evaluate_custom(task, params, batcher, prepare)
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
    if custom_results["custom_sts"]:
        text, tables["custom_sts"] = custom_sts_table(custom_results["custom_sts"])
        print(text, file=out)
    if custom_results["custom_classification"]:
        text, tables["custom_classification"] = custom_classification_table(
            custom_results["custom_classification"], params["kfold"])
        print(text, file=out)
    results.update({kind: r for kind, r in custom_results.items() if r})
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
