"""Evaluation runs and their tables (the library side of ``evaluation.py``) and the dev evaluator used
during training: one home for the SentEval parameters, the batcher and the dev tasks.

:func:`evaluate` takes an :class:`EvaluationConfig` (the fields of ``evaluation.py``'s flags), prints the
tables of princeton-nlp/SimCSE ``evaluation.py`` (STS Spearman x100 with the "all" aggregation by
default; transfer accuracy x100) and returns them with the raw SentEval results.
:class:`SentEvalDevEvaluator` scores a model during training on STS-B / SICK-R dev (and the transfer
tasks' dev accuracy) with the same :func:`senteval_params` as ``evaluation.py --mode dev``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prettytable import PrettyTable
from tqdm.auto import tqdm

from senteval.custom import CustomClassificationEval, CustomSTSEval, metric_name, parse_spec
from senteval.custom import evaluate as evaluate_custom
from senteval.datapath import resolve_data_dir
from senteval.engine import SE
from senteval.errors import SentEvalError
from senteval.registry import STS_TASKS, TRANSFER_TASKS, build_task
from senteval.utils import FAST_CLASSIFIER, TEST_CLASSIFIER
from simcse.encoder import SentenceEncoder, build_encoder
from simcse.errors import SimCSEError
from simcse.losses.diagnostics import alignment, uniformity

TASK_SETS = {"sts": STS_TASKS, "transfer": TRANSFER_TASKS, "full": STS_TASKS + TRANSFER_TASKS, "custom": []}
DEV_STS_TASKS = ["STSBenchmark", "SICKRelatedness"]  # the only STS tasks with a dev split
AGG_HELP = {
    "all": "one Spearman over the concatenation of all subsets, as in the SimCSE paper",
    "mean": "plain mean of the per-subset Spearman",
    "wmean": "per-subset Spearman weighted by subset size",
}
# Sentences handed to the batcher per call: large, so the encoder can sort them by token length.
SENTEVAL_CHUNK = 4096


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


def select_tasks(task_set: str, tasks: list[str], mode: str) -> list[str]:
    if task_set == "na":
        return list(dict.fromkeys(tasks))
    selected = TASK_SETS[task_set]
    if mode == "dev":  # STS12-16 have no dev split
        selected = [t for t in selected if t not in STS_TASKS or t in DEV_STS_TASKS]
    return list(selected)


def senteval_params(mode: str, data_dir: str | None, device: str | None = None) -> dict:
    """SentEval parameters of a mode: ``test`` the paper's probes (10-fold, Adam), ``dev`` / ``fasttest``
    the fast ones (5-fold, RMSprop); STS scored on the dev split in ``dev`` mode, else on test."""
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


def load_custom_tasks(args: EvaluationConfig) -> tuple[list[CustomSTSEval], list[CustomClassificationEval]]:
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


def evaluate(args: EvaluationConfig, out=None) -> dict:
    """Evaluate ``args.model_name_or_path`` on the selected tasks; print the tables (as the original
    evaluation.py) to ``out`` (default stdout) and return every printed figure plus the raw results."""
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


# metric name (without the eval_ prefix) -> (SentEval task, split)
STS_DEV_METRICS = {"stsb_spearman": "STSBenchmark", "sickr_spearman": "SICKRelatedness"}


class SentEvalDevEvaluator:
    """STS-B and SICK-R dev Spearman (and the transfer tasks' dev accuracy) of a model, values in 0..1.

    Uses the fast SentEval parameters of SimCSE's dev evaluation (princeton-nlp/SimCSE
    ``evaluation.py`` ``--mode dev``; ``FAST_CLASSIFIER``) and the model's inference ``encode`` path (so an
    ``mlp_only_train`` model is scored without its MLP head, as it will be used).

    Once per training run, not once per evaluation: the SentEval files are read at the first evaluation
    (STS-B and SICK-R keep only their dev split) and every sentence is tokenized the first time it is
    encoded; later evaluations reuse both. Within an evaluation, embeddings are kept for one task at a
    time (:meth:`SentenceEncoder.retain`), so memory does not grow with the number of tasks.

    custom_sts: pair files given as ``FILE[:NAME[:COLUMNS]]`` (see :mod:`senteval.custom`); each adds the metric
    ``<name>_spearman`` (NAME or the file stem, reduced to [a-z0-9_]), which ``metric_for_best_model`` can
    select on. They are read here, so a bad file fails before training starts; ``avg_sts`` stays the
    STS-B / SICK-R mean.
    """

    def __init__(self, tokenizer, data_dir: str, eval_transfer: bool = False, batch_size: int = 128,
                 max_length: int | None = None, custom_sts: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.data_dir = data_dir
        self.eval_transfer = eval_transfer
        self.batch_size = batch_size
        self.max_length = max_length
        self.custom_sts: dict[str, CustomSTSEval] = {}
        for spec in custom_sts:
            path, name, columns = parse_spec(spec)
            task = CustomSTSEval(path, name=name, columns=columns, flag=f"--eval_custom_sts {spec!r}")
            metric = f"{metric_name(task.name)}_spearman"
            if metric in STS_DEV_METRICS or metric in self.custom_sts:
                raise SentEvalError(f"--eval_custom_sts {spec!r}: the metric name {metric!r} is already taken; "
                                    "choose another name with FILE:NAME")
            self.custom_sts[metric] = task
        self._tasks: dict[str, object] = {}  # SentEval tasks, built (files read) at first use
        self._token_ids: dict[str, np.ndarray] = {}  # sentence -> token ids, shared by every evaluation's encoder

    def task(self, name: str):
        """The SentEval task ``name``, its files read at the first call only (STS tasks: dev split only)."""
        if name not in self._tasks:
            task = build_task(name, Path(self.data_dir) / "downstream")
            if name in STS_DEV_METRICS.values():
                task.keep_only(["dev"])
            self._tasks[name] = task
        return self._tasks[name]

    def __call__(self, model) -> dict[str, float]:
        device = next(model.parameters()).device
        encoder = SentenceEncoder(model.encode, self.tokenizer, device, batch_size=self.batch_size,
                                  max_length=self.max_length, token_cache=self._token_ids)

        def batcher(params, batch):
            return encoder.encode([" ".join(tokens) for tokens in batch]).numpy()

        def prepare(params, samples):
            encoder.retain(" ".join(tokens) for tokens in samples)

        se = SE(senteval_params("dev", self.data_dir), batcher, prepare)
        was_training = model.training
        model.eval()
        try:
            metrics = {}
            for name, task in STS_DEV_METRICS.items():
                metrics[name] = se.run(self.task(task))["dev"]["spearman"]
                if task == "STSBenchmark":  # while the encoder still holds STS-B's embeddings
                    geometry = self.alignment_uniformity(encoder)
            metrics["avg_sts"] = sum(metrics.values()) / len(STS_DEV_METRICS)
            for metric, task in self.custom_sts.items():
                metrics[metric] = evaluate_custom(task, se.params, batcher, prepare)["spearman"]
            metrics.update(geometry)
            if self.eval_transfer:
                accuracies = {task: se.run(self.task(task))["devacc"] for task in TRANSFER_TASKS}
                metrics.update(accuracies)
                metrics["avg_transfer"] = sum(accuracies.values()) / len(accuracies)
        finally:
            model.train(was_training)
        return metrics

    def alignment_uniformity(self, encoder: SentenceEncoder) -> dict[str, float]:
        """The SimCSE paper's protocol (arXiv:2104.08821, after Wang and Isola 2020, arXiv:2005.10242) on
        STS-B dev: alignment over pairs with gold score > 4, uniformity over all its sentences (the
        encoder's cache makes this nearly free right after the STS-B run)."""
        sent_a, sent_b, gold = self.task("STSBenchmark").data["dev"]
        a = [" ".join(t) for t in sent_a]
        b = [" ".join(t) for t in sent_b]
        everything = encoder.encode(list(dict.fromkeys(a + b)))
        metrics = {"stsb_uniform": uniformity(everything).item()}
        positives = [i for i, score in enumerate(gold) if score > 4]
        if positives:  # always on the real STS-B dev (hundreds of pairs); tiny test sets may have none
            x = encoder.encode([a[i] for i in positives])
            y = encoder.encode([b[i] for i in positives])
            metrics["stsb_align"] = alignment(x, y).item()
        return metrics
