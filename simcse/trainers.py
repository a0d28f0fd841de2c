"""The Trainer subclass: contrastive ``compute_loss`` and a SentEval ``evaluate``; nothing else.

The training loop, checkpointing, best-model tracking (``--metric_for_best_model stsb_spearman
--load_best_model_at_end``), logging and resuming are the standard Hugging Face ``Trainer``'s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import Trainer

from senteval.engine import SE
from senteval.registry import TRANSFER_TASKS
from senteval.utils import FAST_CLASSIFIER
from simcse.distributed import gather_with_grad
from simcse.encoder import SentenceEncoder
from simcse.losses import ContrastiveLoss

# metric name (without the eval_ prefix) -> (SentEval task, split)
STS_DEV_METRICS = {"stsb_spearman": "STSBenchmark", "sickr_spearman": "SICKRelatedness"}


class SentEvalDevEvaluator:
    """STS-B and SICK-R dev Spearman (and the transfer tasks' dev accuracy) of a model, values in 0..1.

    Uses the fast SentEval parameters (REFERENCE §5) and the model's inference ``encode`` path (so an
    ``mlp_only_train`` model is scored without its MLP head, as it will be used).
    """

    def __init__(self, tokenizer, data_dir: str, eval_transfer: bool = False, batch_size: int = 128,
                 max_length: int | None = None):
        self.tokenizer = tokenizer
        self.data_dir = data_dir
        self.eval_transfer = eval_transfer
        self.batch_size = batch_size
        self.max_length = max_length

    def __call__(self, model) -> dict[str, float]:
        device = next(model.parameters()).device
        encoder = SentenceEncoder(model.encode, self.tokenizer, device, batch_size=self.batch_size,
                                  max_length=self.max_length)

        def batcher(params, batch):
            return encoder.encode([" ".join(tokens) for tokens in batch]).numpy()

        params = {"task_path": self.data_dir, "usepytorch": True, "kfold": 5, "classifier": dict(FAST_CLASSIFIER),
                  "batch_size": 4096, "sts_splits": ["dev"]}
        se = SE(params, batcher)
        was_training = model.training
        model.eval()
        try:
            metrics = {name: se.eval(task)["dev"]["spearman"] for name, task in STS_DEV_METRICS.items()}
            metrics["avg_sts"] = sum(metrics.values()) / len(STS_DEV_METRICS)
            if self.eval_transfer:
                accuracies = {task: se.eval(task)["devacc"] for task in TRANSFER_TASKS}
                metrics.update(accuracies)
                metrics["avg_transfer"] = sum(accuracies.values()) / len(accuracies)
        finally:
            model.train(was_training)
        return metrics


class SimCSETrainer(Trainer):
    """``Trainer`` with a pluggable contrastive loss on the model's embeddings and SentEval evaluation.

    loss_fn: a :class:`~simcse.losses.ContrastiveLoss`, called as ``loss_fn(z1, z2, z3)`` in fp32.
    evaluator: ``evaluator(model) -> {metric: value}`` (e.g. :class:`SentEvalDevEvaluator`); the metrics
    are logged with the ``eval_`` prefix and drive ``metric_for_best_model``.
    mlm_weight: weight of the auxiliary MLM loss when the batch carries MLM inputs.
    """

    def __init__(self, *args, loss_fn: ContrastiveLoss, evaluator: Callable | None = None, mlm_weight: float = 0.1,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.evaluator = evaluator
        self.mlm_weight = mlm_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        z = gather_with_grad(outputs.embeddings.float())  # (B, N, H), N = 2 or 3; global batch under DDP
        z1, z2 = z[:, 0], z[:, 1]
        z3 = z[:, 2] if z.shape[1] == 3 else None
        loss = self.loss_fn(z1, z2, z3)
        if outputs.mlm_loss is not None:
            loss = loss + self.mlm_weight * outputs.mlm_loss
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if self.evaluator is None:
            return {}
        model = self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model
        with torch.no_grad():
            raw = self.evaluator(model)
        metrics = {f"{metric_key_prefix}_{key}": float(value) for key, value in raw.items()}
        metrics["epoch"] = self.state.epoch if self.state.epoch is not None else 0.0
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
