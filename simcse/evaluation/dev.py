"""The evaluation run at each ``--eval_steps`` during training, built from the flags in one place.

:func:`build_evaluators` turns the evaluation flags (STS dev, ``--eval_transfer``, ``--eval_custom_sts``,
``--eval_custom_retrieval`` for training; ``--custom_sts`` / ``--custom_retrieval`` for ``evaluation.py``)
into one :class:`~simcse.evaluation.base.EvaluatorSequence`, reading every file now so that a bad one
fails before the model loads. :class:`ModelEvaluation` is what the trainer calls: ``evaluation(model)``
wraps the model's inference ``encode`` (so an ``mlp_only_train`` model is scored without its MLP head, as
it will be used) in a :class:`~simcse.modeling.encoder.SentenceEncoder` and runs the evaluators on it.

Once per training run, not once per evaluation: the SentEval and custom files are read when the
evaluators are built, and every text is tokenized the first time it is encoded (a token cache kept
across evaluations); embeddings are recomputed each time (the model has changed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from simcse.errors import SimCSEError
from simcse.evaluation.base import Evaluator, EvaluatorSequence
from simcse.evaluation.senteval_tasks import CustomSTSEvaluator, STSDevEvaluator, TransferDevEvaluator
from simcse.modeling.encoder import SentenceEncoder

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def parse_retrieval_spec(spec: str, flag: str) -> tuple[str, str | None, str]:
    """``DIR``, ``DIR:NAME`` or ``DIR:NAME:SPLIT`` -> (folder, name or None, split; default ``test``). A
    folder whose own path contains ':' is taken whole when it exists."""
    if os.path.isdir(spec) or ":" not in spec:
        return spec, None, "test"
    folder, _, rest = spec.partition(":")
    while not os.path.isdir(folder) and ":" in rest:  # a folder whose name holds ':'
        head, _, rest = rest.partition(":")
        folder = f"{folder}:{head}"
    name, _, split = rest.partition(":")
    if not _NAME.fullmatch(name) or (split and not _NAME.fullmatch(split)):
        raise SimCSEError(f"{flag} {spec!r}: give DIR, DIR:NAME or DIR:NAME:SPLIT (NAME and SPLIT: letters, "
                          "digits, '_', '.' or '-')")
    return folder, name, split or "test"


def build_evaluators(data_dir: str | None = None, *, sts_dev: bool = True, transfer_dev: bool = False,
                     custom_sts: Sequence[str] = (), custom_retrieval: Sequence[str] = (),
                     sts_flag: str = "`eval_custom_sts`", retrieval_flag: str = "`eval_custom_retrieval`",
                     query_prompt: str = "", document_prompt: str = "") -> EvaluatorSequence:
    """The evaluators the flags ask for, in table order: STS dev (needs ``data_dir``, the folder holding
    SentEval's ``downstream/``), each custom STS file, each retrieval folder, then the transfer tasks' dev
    accuracy. The sequence's primary metric (the default ``--metric_for_best_model``) is the first one's."""
    evaluators: list[Evaluator] = []
    if (sts_dev or transfer_dev) and data_dir is None:
        raise SimCSEError("the STS / transfer dev evaluation needs the SentEval data; pass `senteval_data` DIR")
    if sts_dev:
        evaluators.append(STSDevEvaluator(data_dir))
    evaluators += [CustomSTSEvaluator(spec, flag=sts_flag) for spec in custom_sts]
    if custom_retrieval:
        from simcse.evaluation.retrieval import RetrievalEvaluator

        for spec in custom_retrieval:
            folder, name, split = parse_retrieval_spec(spec, retrieval_flag)
            evaluators.append(RetrievalEvaluator(folder, name=name, split=split, query_prompt=query_prompt,
                                                 document_prompt=document_prompt))
    if transfer_dev:
        evaluators.append(TransferDevEvaluator(data_dir))
    if not evaluators:
        raise SimCSEError("no evaluation was asked for")
    return EvaluatorSequence(evaluators)


class ModelEvaluation:
    """``evaluation(model) -> {metric: value}`` for the trainer: the evaluators run on the model's
    inference ``encode``, in eval mode, the model's mode restored afterwards."""

    def __init__(self, evaluator: Evaluator, tokenizer, batch_size: int = 128, max_length: int | None = None):
        self.evaluator = evaluator
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self._token_ids: dict[str, np.ndarray] = {}  # text -> token ids, shared by every evaluation

    @property
    def primary_metric(self) -> str:
        return self.evaluator.primary_metric

    def metric_names(self) -> list[str]:
        return self.evaluator.metric_names()

    def extended(self, extra: Evaluator) -> ModelEvaluation:
        """The same evaluation plus ``extra`` (e.g. the transfer tasks for the final evaluation only),
        sharing the token cache."""
        parts = self.evaluator.evaluators if isinstance(self.evaluator, EvaluatorSequence) else [self.evaluator]
        wider = ModelEvaluation(EvaluatorSequence([*parts, extra]), self.tokenizer, self.batch_size, self.max_length)
        wider._token_ids = self._token_ids
        return wider

    def __call__(self, model) -> dict[str, float]:
        device = next(model.parameters()).device
        encoder = SentenceEncoder(model.encode, self.tokenizer, device, batch_size=self.batch_size,
                                  max_length=self.max_length, token_cache=self._token_ids)
        was_training = model.training
        model.eval()
        try:
            return self.evaluator(encoder)
        finally:
            model.train(was_training)
