"""The evaluation engine: ``SE(params, batcher, prepare).eval(task_or_tasks)``.

``batcher(params, batch)`` receives a list of sentences, each a list of whitespace-split tokens, and
returns an array-like of shape (len(batch), dim). ``prepare(params, samples)`` (optional) is called once
per task with every sentence of the task before any batcher call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from senteval.classifier import OPTIMIZERS
from senteval.datapath import resolve_data_dir
from senteval.errors import SentEvalError
from senteval.registry import TASKS, build_task
from senteval.utils import Params, make_params

Batcher = Callable[[Params, list[list[str]]], Any]
Prepare = Callable[[Params, list[list[str]]], Any]

VALID_OPTIMS = tuple(OPTIMIZERS)


class SE:
    """SentEval engine.

    params: the SentEval parameter dict (``task_path``, ``usepytorch``, ``seed``, ``batch_size``,
    ``kfold``, ``classifier`` = {nhid, optim, batch_size, tenacity, epoch_size}, plus ours: ``device``
    and ``sts_splits``). Missing keys take the defaults of :data:`senteval.utils.DEFAULT_PARAMS`.
    """

    def __init__(self, params: dict[str, Any] | None, batcher: Batcher, prepare: Prepare | None = None):
        self.params = make_params(params)
        self._validate(self.params)
        self.params.task_path = resolve_data_dir(self.params.task_path)
        self.batcher = batcher
        self.prepare = prepare if prepare is not None else (lambda params, samples: None)
        self.list_tasks = list(TASKS)

    @staticmethod
    def _validate(params: Params) -> None:
        if not isinstance(params.batch_size, int) or params.batch_size < 1:
            raise SentEvalError(f"params['batch_size'] must be a positive integer, got {params.batch_size!r}")
        if not isinstance(params.kfold, int) or params.kfold < 2:
            raise SentEvalError(f"params['kfold'] must be an integer >= 2, got {params.kfold!r}")
        clf = params.classifier
        optim = str(clf.get("optim", "")).split(",")[0]
        if optim not in VALID_OPTIMS:
            raise SentEvalError(f"classifier optim {clf.get('optim')!r} is not one of {VALID_OPTIMS}")
        for key in ("batch_size", "tenacity", "epoch_size"):
            if not isinstance(clf.get(key), int) or clf[key] < 1:
                raise SentEvalError(f"classifier[{key!r}] must be a positive integer, got {clf.get(key)!r}")

    def eval(self, name: str | Sequence[str]) -> dict[str, Any]:
        """Evaluate one task (returns its result dict) or a list of tasks (returns {task: result})."""
        if isinstance(name, (list, tuple)):
            return {task: self.eval(task) for task in name}
        return self.run(build_task(name, self.params.task_path / "downstream", seed=self.params.seed))

    def run(self, task) -> dict[str, Any]:
        """Evaluate a task object that is already built (its data read), e.g. one kept across several
        evaluations so that its files are read once: ``SE.eval(name)`` is ``SE.run(build_task(name, ...))``."""
        self.params.current_task = task.name
        task.do_prepare(self.params, self.prepare)
        return task.run(self.params, self.batcher)
