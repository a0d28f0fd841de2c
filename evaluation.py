"""Evaluate a sentence encoder on the STS and transfer tasks with our SentEval package.

    python evaluation.py --model_name_or_path DIR_OR_HUB_ID --pooler cls_before_pooler \
        --task_set sts --mode test

Prints the same tables as the original SimCSE evaluation.py (STS: Spearman ×100, the ``all``
aggregation by default; transfer: accuracy ×100), names the STS aggregation, and with
``--output_json`` writes every printed figure plus the raw SentEval results.

Your own data (:mod:`senteval.custom`): ``--custom_sts FILE[:NAME]`` scores sentence pairs against their
gold score or 0/1 label (Spearman and Pearson ×100) and ``--custom_classification TRAIN[,DEV],TEST[:NAME]``
fits the transfer tasks' linear probe (accuracy and macro-F1 ×100); each kind gets its own table after
the standard ones. ``--custom_retrieval DIR[:NAME[:SPLIT]]`` ranks a BEIR-layout folder's corpus for each query
(exact cosine search) and prints nDCG@10, MRR@10, MAP@100, Recall@1/10/100 and Accuracy@1/10 ×100
(:mod:`simcse.evaluation.retrieval`). ``--task_set custom`` runs only these.

The work is :func:`simcse.evaluation.report.evaluate`; this script parses, calls it and writes the JSON.
"""

from __future__ import annotations

import os
import sys

from transformers.utils import logging as transformers_logging

from senteval.registry import STS_TASKS, TASKS
from senteval.sts import AGGREGATIONS
from simcse.cli import OneLineArgumentParser, run_cli
from simcse.errors import SimCSEError
from simcse.evaluation.report import EvaluationConfig, evaluate
from simcse.files import atomic_write_json as write_json_atomic
from simcse.modeling.encoder import check_max_length
from simcse.modeling.poolers import ALL_POOLERS, POOLER_HELP


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
    parser.add_argument("--tasks", nargs="+", default=STS_TASKS, choices=list(TASKS), metavar="TASK",
                        help="tasks for --task_set na")
    parser.add_argument("--sts_agg", default="all", choices=AGGREGATIONS, help="aggregation of STS12-16 subsets")
    parser.add_argument("--batch_size", type=int, default=64, help="sentences per forward pass")
    parser.add_argument("--max_seq_length", type=int, default=None,
                        help="truncate to this many tokens (default: model limit)")
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
    retrieval = parser.add_argument_group("retrieval on your own data (BEIR layout, see simcse/evaluation/beir.py)")
    retrieval.add_argument("--custom_retrieval", nargs="+", action="extend", default=[],
                           metavar="DIR[:NAME[:SPLIT]]",
                           help="folder with corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv (default test); prints "
                           "nDCG@10, MRR@10, MAP@100, Recall@1/10/100, Accuracy@1/10 (x100); repeatable; NAME "
                           "defaults to the folder")
    retrieval.add_argument("--query_prompt", default=None,
                           help="text put before every query (e.g. 'query: '; default: the checkpoint's own, from "
                           "train.py --query_prompt, else none)")
    retrieval.add_argument("--document_prompt", default=None,
                           help="text put before every document (e.g. 'passage: '; default: the checkpoint's own)")
    args = parser.parse_args(argv)
    if args.task_set == "custom" and not (args.custom_sts or args.custom_classification or args.custom_retrieval):
        parser.error("--task_set custom needs --custom_sts, --custom_classification or --custom_retrieval")
    if (args.query_prompt is not None or args.document_prompt is not None) and not args.custom_retrieval:
        parser.error("--query_prompt / --document_prompt apply to --custom_retrieval sets, but none was given")
    for columns, files in (("--custom_columns", "--custom_sts"),
                           ("--custom_classification_columns", "--custom_classification")):
        if getattr(args, columns[2:]) and not getattr(args, files[2:]):
            parser.error(f"{columns} describes {files} files, but none was given")
    if args.batch_size < 1:
        parser.error(f"argument --batch_size: must be positive, got {args.batch_size}")
    check_max_length(args.max_seq_length, None)  # the model's own limit is checked once it is loaded
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    transformers_logging.disable_progress_bar()  # the per-tensor "Loading weights" bar is noise here
    if args.output_json and os.path.isdir(args.output_json):
        raise SimCSEError(f"--output_json {args.output_json!r} is a directory; give a file path such as result.json")
    config = EvaluationConfig(**{k: v for k, v in vars(args).items() if k != "output_json"})
    payload = evaluate(config)
    for notice in payload["notices"]:  # e.g. a pooler other than the one training scored with
        print(f"evaluation.py: notice: {notice}", file=sys.stderr)
    if args.output_json:
        write_json_atomic(args.output_json, payload)
    return payload


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="evaluation.py"))
