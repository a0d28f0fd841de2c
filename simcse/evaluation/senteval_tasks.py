"""The SentEval-based evaluators (STS-B / SICK-R dev, the transfer tasks' dev accuracy, your own STS
pairs) as :class:`~simcse.evaluation.base.Evaluator` objects, with the one batcher every SentEval run
here uses (:func:`senteval_hooks`) and the one parameter set per mode (:func:`senteval_params`).

The dev protocol is princeton-nlp/SimCSE ``evaluation.py --mode dev`` (and its trainer's in-training
evaluation): STS-B and SICK-R dev Spearman, the fast probes (``FAST_CLASSIFIER``, 5-fold) for the
transfer tasks. Values are in 0..1 (Spearman) or percent (transfer accuracies, as SentEval reports them).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from senteval.custom import CustomSTSEval, metric_name, parse_spec
from senteval.custom import evaluate as evaluate_custom
from senteval.engine import SE
from senteval.registry import TRANSFER_TASKS, build_task
from senteval.utils import FAST_CLASSIFIER, TEST_CLASSIFIER
from simcse.evaluation.base import Evaluator
from simcse.losses.diagnostics import alignment, uniformity

# Sentences handed to the batcher per call: large, so the encoder can sort them by token length.
SENTEVAL_CHUNK = 4096
# metric name (without the eval_ prefix) -> SentEval task whose dev Spearman it is
STS_DEV_METRICS = {"stsb_spearman": "STSBenchmark", "sickr_spearman": "SICKRelatedness"}


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


def _text(tokens: Iterable) -> str:
    return " ".join(w.decode("utf-8") if isinstance(w, bytes) else w for w in tokens)


def senteval_hooks(encoder):
    """SentEval's ``(batcher, prepare)`` over ``encoder``: the batcher joins each tokenised sentence with
    spaces and encodes it; ``prepare`` (called as each task starts) keeps only that task's cached
    embeddings, so memory does not grow with the number of tasks."""

    def batcher(params, batch):
        return encoder.encode([_text(s) for s in batch]).cpu().numpy()

    def prepare(params, samples):
        encoder.retain(_text(s) for s in samples)

    return batcher, prepare


class _SentEvalDev(Evaluator):
    """Shared by the dev evaluators: the SentEval tasks are built (files read) at the first use only."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = str(data_dir)
        self._tasks: dict[str, object] = {}

    def task(self, name: str):
        """The SentEval task ``name``, its files read at the first call only (STS tasks: dev split only)."""
        if name not in self._tasks:
            task = build_task(name, Path(self.data_dir) / "downstream")
            if name in STS_DEV_METRICS.values():
                task.keep_only(["dev"])
            self._tasks[name] = task
        return self._tasks[name]

    def engine(self, encoder) -> SE:
        return SE(senteval_params("dev", self.data_dir), *senteval_hooks(encoder))


class STSDevEvaluator(_SentEvalDev):
    """STS-B and SICK-R dev Spearman, their mean ``avg_sts``, and the alignment / uniformity of STS-B dev
    (the SimCSE paper's protocol, arXiv:2104.08821, after Wang and Isola 2020, arXiv:2005.10242:
    alignment over pairs with gold score > 4, uniformity over all its sentences). Selects on STS-B."""

    name = "sts_dev"
    primary_metric = "stsb_spearman"

    def metric_names(self) -> list[str]:
        return [*STS_DEV_METRICS, "avg_sts", "stsb_uniform", "stsb_align"]

    def __call__(self, encoder) -> dict[str, float]:
        se = self.engine(encoder)
        metrics = {}
        for name, task in STS_DEV_METRICS.items():
            metrics[name] = se.run(self.task(task))["dev"]["spearman"]
            if task == "STSBenchmark":  # while the encoder still holds STS-B's embeddings
                geometry = self.alignment_uniformity(encoder)
        metrics["avg_sts"] = sum(metrics.values()) / len(STS_DEV_METRICS)
        metrics.update(geometry)
        return metrics

    def alignment_uniformity(self, encoder) -> dict[str, float]:
        sent_a, sent_b, gold = self.task("STSBenchmark").data["dev"]
        a, b = [_text(t) for t in sent_a], [_text(t) for t in sent_b]
        metrics = {"stsb_uniform": uniformity(encoder.encode(list(dict.fromkeys(a + b)))).item()}
        positives = [i for i, score in enumerate(gold) if score > 4]
        if positives:  # always on the real STS-B dev (hundreds of pairs); tiny test sets may have none
            x = encoder.encode([a[i] for i in positives])
            y = encoder.encode([b[i] for i in positives])
            metrics["stsb_align"] = alignment(x, y).item()
        return metrics


class TransferDevEvaluator(_SentEvalDev):
    """The 7 transfer tasks' dev accuracy (percent, the fast probes) and their mean ``avg_transfer``."""

    name = "transfer_dev"
    primary_metric = "avg_transfer"

    def metric_names(self) -> list[str]:
        return [*TRANSFER_TASKS, "avg_transfer"]

    def __call__(self, encoder) -> dict[str, float]:
        se = self.engine(encoder)
        accuracies = {task: se.run(self.task(task))["devacc"] for task in TRANSFER_TASKS}
        return {**accuracies, "avg_transfer": sum(accuracies.values()) / len(accuracies)}


class CustomSTSEvaluator(Evaluator):
    """Your own sentence pairs, ``FILE[:NAME[:S1,S2,SCORE]]`` (see :mod:`senteval.custom`): Spearman of the
    cosine against the gold score or 0/1 label, reported as ``<name>_spearman`` (NAME or the file stem,
    reduced to [a-z0-9_]). The file is read here, so a bad file fails before any model loads."""

    def __init__(self, spec: str, flag: str = "`eval_custom_sts`", columns: str | None = None,
                 columns_flag: str | None = None):
        """flag: the option the spec came from, named in errors; columns: the columns of every such file
        (set by ``columns_flag``), overridden by the spec's own."""
        path, name, own_columns = parse_spec(spec)
        named = f"{flag} {spec!r}" if own_columns or columns_flag is None else columns_flag
        self.task = CustomSTSEval(path, name=name, columns=own_columns or columns, flag=named)
        self.name = self.task.name

    @property
    def primary_metric(self) -> str:
        """``<name>_spearman``, the name reduced to [a-z0-9_] (an error when nothing is left of it)."""
        return f"{metric_name(self.name)}_spearman"

    def metric_names(self) -> list[str]:
        return [self.primary_metric]

    def result(self, encoder) -> dict:
        """SentEval's full result of the task (Spearman, Pearson, pair count)."""
        return evaluate_custom(self.task, senteval_params("dev", None), *senteval_hooks(encoder))

    def __call__(self, encoder) -> dict[str, float]:
        return {self.primary_metric: self.result(encoder)["spearman"]}
