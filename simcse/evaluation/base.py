"""The evaluator protocol: every evaluation (STS dev, custom STS, transfer, retrieval, ...) is an object
with a name, the metrics it reports and the one metric that selects checkpoints, called on an encoder.

An encoder is anything with ``encode(sentences: Sequence[str]) -> torch.Tensor`` of shape (N, D) (the
raw, unnormalised embeddings, float32 on any device); :class:`simcse.modeling.encoder.SentenceEncoder` is the one
used everywhere. It may also have ``retain(sentences)``, which drops every cached embedding except those
of ``sentences``; an evaluator that encodes a large collection calls ``encoder.retain(())`` after each
chunk, so memory stays bounded.

Metric keys are ``<name>_<metric>`` (``nfproxy_ndcg@10``), values in 0..1 (the tables print x100); the
trainer logs them as ``eval_<key>`` and ``--metric_for_best_model`` names a key (without ``eval_``).
:class:`EvaluatorSequence` runs several evaluators and merges their metrics; its primary metric is the
first evaluator's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from simcse.errors import SimCSEError


class Evaluator(ABC):
    """One evaluation. Subclasses set ``name`` and ``primary_metric`` (a key of ``metric_names()``)."""

    name: str
    primary_metric: str

    @abstractmethod
    def metric_names(self) -> list[str]:
        """Every key ``__call__`` returns, in table order."""

    @abstractmethod
    def __call__(self, encoder) -> dict[str, float]:
        """Score ``encoder``: ``{key: value}`` with the keys of :meth:`metric_names`."""


class EvaluatorSequence(Evaluator):
    """Run evaluators in order and merge their metrics (a key reported twice is an error at build time)."""

    def __init__(self, evaluators: Sequence[Evaluator]):
        if not evaluators:
            raise SimCSEError("EvaluatorSequence needs at least one evaluator")
        self.evaluators = list(evaluators)
        seen: dict[str, str] = {}
        for evaluator in self.evaluators:
            for key in evaluator.metric_names():
                if key in seen:
                    raise SimCSEError(f"the metric {key!r} is reported by both {seen[key]!r} and {evaluator.name!r}; "
                                      "give one of them another name")
                seen[key] = evaluator.name
        self.name = self.evaluators[0].name
        self.primary_metric = self.evaluators[0].primary_metric

    def metric_names(self) -> list[str]:
        return [key for evaluator in self.evaluators for key in evaluator.metric_names()]

    def __call__(self, encoder) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for evaluator in self.evaluators:
            metrics.update(evaluator(encoder))
        return metrics
