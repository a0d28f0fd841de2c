"""Evaluation runs and their tables: the library side of ``evaluation.py``.

:func:`evaluate` takes an :class:`EvaluationConfig` (the fields of ``evaluation.py``'s flags), prints the
tables of princeton-nlp/SimCSE ``evaluation.py`` (STS Spearman x100 with the "all" aggregation by
default; transfer accuracy x100) and returns them with the raw SentEval results. The SentEval
parameters and the batcher are those of :mod:`simcse.evaluation.senteval_tasks`, shared with the
evaluation during training (:mod:`simcse.evaluation.dev`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

from prettytable import PrettyTable
from tqdm.auto import tqdm

from senteval.custom import CustomClassificationEval, parse_spec
from senteval.custom import evaluate as evaluate_custom
from senteval.datapath import resolve_data_dir
from senteval.engine import SE
from senteval.registry import STS_TASKS, TRANSFER_TASKS
from simcse.errors import SimCSEError
from simcse.evaluation.dev import build_evaluators
from simcse.evaluation.retrieval import retrieval_table
from simcse.evaluation.senteval_tasks import STS_DEV_METRICS, CustomSTSEvaluator, senteval_hooks, senteval_params
from simcse.modeling.encoder import build_encoder
from simcse.modeling.models import is_simcse_checkpoint
from simcse.modeling.poolers import inference_pooler

TASK_SETS = {"sts": STS_TASKS, "transfer": TRANSFER_TASKS, "full": STS_TASKS + TRANSFER_TASKS, "custom": []}
DEV_STS_TASKS = list(STS_DEV_METRICS.values())  # the only STS tasks with a dev split
AGG_HELP = {
    "all": "one Spearman over the concatenation of all subsets, as in the SimCSE paper",
    "mean": "plain mean of the per-subset Spearman",
    "wmean": "per-subset Spearman weighted by subset size",
}


@dataclass
class EvaluationConfig:
    """What to evaluate and how: the flags of ``evaluation.py`` as typed fields (same defaults)."""

    model_name_or_path: str
    pooler: str = "cls"
    mode: str = "test"  # dev | test | fasttest
    task_set: str = "sts"  # sts | transfer | full | na | custom
    tasks: list[str] = field(default_factory=lambda: list(STS_TASKS))
    sts_agg: str = "all"
    batch_size: int = 64
    max_seq_length: int | None = None
    truncate_dim: int | None = None
    device: str | None = None
    senteval_data: str | None = None
    trust_remote_code: bool = False
    custom_sts: list[str] = field(default_factory=list)
    custom_columns: str | None = None
    custom_classification: list[str] = field(default_factory=list)
    custom_classification_columns: str | None = None
    custom_retrieval: list[str] = field(default_factory=list)
    query_prompt: str | None = None  # None: the checkpoint's own (train.py --query_prompt), else none
    document_prompt: str | None = None


def select_tasks(task_set: str, tasks: list[str], mode: str) -> list[str]:
    if task_set == "na":
        return list(dict.fromkeys(tasks))
    selected = TASK_SETS[task_set]
    if mode == "dev":  # STS12-16 have no dev split
        selected = [t for t in selected if t not in STS_TASKS or t in DEV_STS_TASKS]
    return list(selected)


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


def load_custom_tasks(args: EvaluationConfig) -> tuple[list[CustomSTSEvaluator], list[CustomClassificationEval]]:
    """Read every --custom_* file now, so a bad file fails before the model is loaded."""
    sts = [CustomSTSEvaluator(spec, flag="`custom_sts`", columns=args.custom_columns, columns_flag="`custom_columns`")
           for spec in args.custom_sts]
    classification = []
    for spec in args.custom_classification:
        body, name, columns = parse_spec(spec)
        files = body.split(",")
        if len(files) not in (2, 3) or not all(files):
            raise SimCSEError(f"`custom_classification` {spec!r}: give TRAIN,TEST or TRAIN,DEV,TEST "
                              "(comma-separated files), optionally followed by :NAME and :TEXT,LABEL")
        train, dev, test = (files[0], None, files[1]) if len(files) == 2 else files
        classification.append(CustomClassificationEval(
            train, test, dev=dev, name=name, columns=columns or args.custom_classification_columns,
            flag=f"`custom_classification` {spec!r}" if columns else "`custom_classification_columns`"))
    for evaluator in sts:
        print(f"custom STS {evaluator.task.name}: {evaluator.task.layout}", file=sys.stderr)
    for task in classification:
        for split, layout in task.layout.items():
            print(f"custom classification {task.name} ({split}): {layout}", file=sys.stderr)
    for kind, tasks in (("`custom_sts`", sts), ("`custom_classification`", classification)):
        names = [getattr(t, "task", t).name for t in tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise SimCSEError(f"{kind}: the name {twice[0]!r} is used twice; tell the sets apart with FILE:NAME")
    return sts, classification


def stored_prompts(model_name_or_path: str) -> dict[str, str]:
    """The ``simcse_prompts`` a train.py run saved in a local checkpoint's config.json ({} otherwise)."""
    path = os.path.join(model_name_or_path, "config.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            prompts = json.load(handle).get("simcse_prompts") or {}
    except (OSError, ValueError, AttributeError):
        return {}  # build_encoder reports an unreadable checkpoint
    return {name: text for name, text in prompts.items() if isinstance(text, str)}


def load_retrieval_sets(args: EvaluationConfig) -> list:
    """The --custom_retrieval folders as retrieval evaluators, read now (before the model loads)."""
    if not args.custom_retrieval:
        return []
    stored = stored_prompts(args.model_name_or_path)
    query = stored.get("query", "") if args.query_prompt is None else args.query_prompt
    document = stored.get("document", "") if args.document_prompt is None else args.document_prompt
    if (query, document) != ("", "") and args.query_prompt is None and args.document_prompt is None:
        print(f"custom retrieval: the checkpoint's prompts: query {query!r}, document {document!r}", file=sys.stderr)
    sequence = build_evaluators(sts_dev=False, custom_retrieval=args.custom_retrieval,
                                retrieval_flag="`custom_retrieval`", query_prompt=query, document_prompt=document)
    for evaluator in sequence.evaluators:
        print(f"custom retrieval {evaluator.name}: {len(evaluator.query_ids)} judged queries, "
              f"{len(evaluator.doc_ids)} documents", file=sys.stderr)
    return sequence.evaluators


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


def pooler_notice(config, pooler: str, model_name_or_path: str) -> str | None:
    """One line when ``pooler`` differs from the pooler a train.py checkpoint's dev scores were computed
    with (e.g. the default ``cls`` on a ``--mlp_only_train`` checkpoint applies an MLP head training never
    scored with); None for other checkpoints or when they agree. ``config``: the checkpoint's config."""
    if config is None or not is_simcse_checkpoint(config) or getattr(config, "pooler_type", None) is None:
        return None
    trained = inference_pooler(config.pooler_type, bool(getattr(config, "mlp_only_train", False)))
    if trained == pooler:
        return None
    how = f"--pooler_type {config.pooler_type}" + (" --mlp_only_train" if config.mlp_only_train else "")
    return (f"{model_name_or_path} was trained with {how}, whose dev scores were computed as --pooler {trained}; "
            f"this evaluation uses --pooler {pooler}")


def evaluate(args: EvaluationConfig, out=None) -> dict:
    """Evaluate ``args.model_name_or_path`` on the selected tasks; print the tables (as the original
    evaluation.py) to ``out`` (default stdout) and return every printed figure plus the raw results."""
    out = out if out is not None else sys.stdout
    tasks = select_tasks(args.task_set, args.tasks, args.mode)
    # fail before loading the model, not after; custom-only runs need no SentEval data
    data_dir = resolve_data_dir(args.senteval_data) if tasks else None
    custom_sts, custom_classification = load_custom_tasks(args)
    retrieval = load_retrieval_sets(args)
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

    model = getattr(encoder, "model", None)
    notice = pooler_notice(getattr(model, "config", None), args.pooler, args.model_name_or_path)
    batcher, prepare = senteval_hooks(encoder)
    params = senteval_params(args.mode, str(data_dir) if data_dir else None, args.device)
    started = time.perf_counter()
    results = {}
    if tasks:
        se = SE(params, batcher, prepare)
        for task in tqdm(tasks, desc="SentEval", unit="task", disable=not sys.stderr.isatty()):
            results[task] = se.eval(task)
    custom_results = {"custom_sts": {}, "custom_classification": {}}
    for evaluator in custom_sts:
        custom_results["custom_sts"][evaluator.task.name] = evaluator.result(encoder)
    for task in custom_classification:
        custom_results["custom_classification"][task.name] = evaluate_custom(task, params, batcher, prepare)
    retrieval_results = {evaluator.name: evaluator(encoder) for evaluator in retrieval}
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
    if retrieval:
        summaries = {evaluator.name: evaluator.last_summary for evaluator in retrieval}
        print(retrieval_table(summaries), file=out)
        tables["custom_retrieval"] = {name: {k: round(v * 100, 2) for k, v in summary.items()
                                             if k not in ("queries", "documents", "unjudged_queries")}
                                      for name, summary in summaries.items()}
        custom_results["custom_retrieval"] = {name: {"metrics": retrieval_results[name], "summary": summaries[name]}
                                              for name in summaries}
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
        "notices": [notice] if notice else [],
        "sentences_encoded": encoder.sentences_encoded,
        "seconds": round(seconds, 3),
    }
