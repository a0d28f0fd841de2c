"""The Trainer subclass: contrastive ``compute_loss`` and a SentEval ``evaluate``.

The training loop, checkpointing, best-model tracking (``--metric_for_best_model stsb_spearman
--load_best_model_at_end``), logging and resuming are the standard Hugging Face ``Trainer``'s; the
small overrides around ``_save_checkpoint``, ``save_model`` and the loss add the guarantees of
:mod:`simcse.training.reliability` (complete-checkpoint markers, atomic final save) and of
:mod:`simcse.training.nonfinite` (non-finite steps, judged after backward: no host sync in the step).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer import SCHEDULER_NAME
from transformers.trainer_utils import rotate_checkpoints

from simcse.data.sampler import EpochDataLoader, NoDuplicatesBatchSampler, sentence_keys
from simcse.distributed import gather_no_grad, gather_with_grad, rank, scale_gradient, world_size
from simcse.errors import SimCSEError
from simcse.losses import ContrastiveLoss
from simcse.losses.diagnostics import alignment, positive_probability, uniformity
from simcse.losses.tiled import row_local_form
from simcse.training.gradcache import cached_step
from simcse.training.nonfinite import NonFiniteSteps, nan_gradient_if_nonfinite
from simcse.training.reliability import mark_complete, staged_directory, unmark
from simcse.training.sharding import (
    deferred_reduction,
    full_state_dict,
    has_sharded,
    is_sharded,
    load_sharded,
    save_sharded,
)

logger = logging.getLogger(__name__)

class _CollatorEpoch(TrainerCallback):
    """Tells the collator which epoch is starting (before its first batch is drawn; also on resuming)."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = int(state.epoch or 0)


class SimCSETrainer(NonFiniteSteps, Trainer):
    """``Trainer`` with a pluggable contrastive loss on the model's embeddings and SentEval evaluation.

    loss_fn: a :class:`~simcse.losses.ContrastiveLoss`, called as ``loss_fn(z1, z2, z3)`` in fp32.
    evaluator: ``evaluator(model) -> {metric: value}`` (e.g. :class:`simcse.evaluation.dev.ModelEvaluation`);
    the metrics are logged with the ``eval_`` prefix and drive ``metric_for_best_model``.
    final_evaluator: the evaluator of the evaluation after training (default: ``evaluator``).
    mlm_weight: weight of the auxiliary MLM loss when the batch carries MLM inputs.
    guide: for guided losses, ``guide(inputs) -> (B, N, G)`` embeddings of the batch's sentences by a frozen
    encoder (:class:`simcse.modeling.guide.GuideEncoder`), computed once per batch without gradient.
    run_record: :func:`simcse.training.reliability.run_record` of this run, stored in every checkpoint's marker so
    that ``--resume_from_checkpoint last`` resumes only checkpoints of the same run.

    Under DDP the embeddings of the global batch are gathered with gradient (:mod:`simcse.distributed`), and
    each process computes only its own rows of the loss (its anchors against every gathered candidate:
    :func:`~simcse.losses.tiled.row_local_form`) times W, so that DDP's average over the W processes is the
    gradient of the global-batch loss; the value logged is the global loss (one all-reduce of a scalar per
    micro-step). Losses whose terms are not a sum over rows (align_uniform, vicreg, cosent, angle, gist, the
    Matryoshka wrappers, and with ``mask_duplicate_texts`` kcl and the margin losses) are computed whole on
    every process, as one process would.
    """

    def __init__(self, *args, loss_fn: ContrastiveLoss, evaluator: Callable | None = None,
                 final_evaluator: Callable | None = None, mlm_weight: float = 0.1, guide: Callable | None = None,
                 run_record: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_record = run_record
        self.loss_fn = loss_fn
        self.guide = guide
        self.evaluator = evaluator
        self.final_evaluator = final_evaluator if final_evaluator is not None else evaluator
        self.mlm_weight = mlm_weight
        self.grad_cache_chunk = self.args.grad_cache_mini_batch  # a SimCSETrainingArguments (its fields)
        self.no_duplicates = self.args.no_duplicates_in_batch
        self._init_nonfinite(skip=self.args.skip_nonfinite)
        if hasattr(self.data_collator, "epoch"):  # keyed MLM masks differ per epoch
            self.add_callback(_CollatorEpoch(self.data_collator))
        self._diagnostics: dict[str, tuple[torch.Tensor, int]] = {}  # name -> (sum, steps)
        self._local_loss = row_local_form(loss_fn, keys=bool(self.args.mask_duplicate_texts))
        self.sharded = is_sharded(self.model)  # FSDP2 (simcse.training.sharding): checkpoints, evaluation differ

    @torch.no_grad()
    def _record_diagnostics(self, z1: torch.Tensor, z2: torch.Tensor) -> None:
        """Alignment, uniformity and (losses with a temperature) InfoNCE's mean positive probability
        p_ii of the batch the loss saw (the global batch under DDP, with or without gradient caching),
        averaged over the steps between two logging steps. Kept on the device: nothing here waits for
        the GPU; :meth:`log` reads the sums once per logging step. A batch of one row has no pairs:
        it is left out (a diagnostic never stops training)."""
        if z1.shape[0] < 2:
            return
        values = {"align": alignment(z1, z2), "uniform": uniformity(z1)}
        temp = self.loss_fn.hparams().get("temp")
        if temp is not None:
            values["p_pos"] = positive_probability(z1, z2, temp=temp)
        for key, value in values.items():
            total, count = self._diagnostics.get(key, (0.0, 0))
            self._diagnostics[key] = (total + value.detach().float(), count + 1)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._diagnostics:  # a training log line: add the diagnostics, one transfer
            means = torch.stack([total / count for total, count in self._diagnostics.values()]).tolist()
            logs.update(zip(self._diagnostics, means))
            self._diagnostics = {}
        if "train_runtime" in logs:  # the end-of-training summary
            self._check_nonfinite()
            if self.skipped_nonfinite:
                logs["skipped_nonfinite_steps"] = self.skipped_nonfinite
        super().log(logs, start_time)

    def _loss_of_embeddings(self, z: torch.Tensor, extras: dict | None = None) -> torch.Tensor:
        """The contrastive loss of (B, N, H) embeddings; N = 2 + K carries K hard negatives per anchor.
        ``extras``: ``scores`` (B,) of graded pairs, ``guide`` (B, N, G) embeddings and/or text ``keys``
        (B, N), gathered like ``z``."""
        z1, z2, z3 = z[:, 0], z[:, 1], (z[:, 2:] if z.shape[1] > 2 else None)
        if self._local_rows:  # this process's rows of the global batch: its share of the loss, times W
            first = rank() * (z.shape[0] // world_size())
            rows = (first, first + z.shape[0] // world_size())
            loss = self._local_loss(z1, z2, z3, rows=rows, **(extras or {})) * world_size()
        else:
            loss = self.loss_fn(z1, z2, z3, **(extras or {}))
        if self._original_scale:  # princeton-nlp/SimCSE's 1/W (simcse.distributed)
            loss = scale_gradient(loss, 1.0 / world_size())
        return loss

    def _loss_extras(self, inputs: dict) -> dict:
        """What the loss takes beyond the embeddings, for the global batch: the pairs' scores (from
        SimCSECollator for data with a score column; the model ignores them), the guide's embeddings and,
        with ``mask_duplicate_texts``, the sentences' text keys (the collator's ``text_keys``), gathered
        in the embeddings' order so that a duplicate on another process is masked too."""
        extras = {}
        if inputs.get("scores") is not None:
            extras["scores"] = gather_no_grad(inputs["scores"].float())
        if self.guide is not None:
            extras["guide"] = gather_no_grad(self.guide(inputs))
        if self.args.mask_duplicate_texts:
            if inputs.get("text_keys") is None:
                raise SimCSEError("`mask_duplicate_texts` needs the batch's text keys, and the collator gave none; "
                                  "use SimCSECollator(text_keys=True)")
            extras["keys"] = gather_no_grad(inputs["text_keys"])
        return extras

    @property
    def _local_rows(self) -> bool:
        """Whether each process computes its own rows of the loss (DDP, and a loss whose terms are per row)."""
        return self._local_loss is not None and world_size() > 1

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.grad_cache_chunk:
            loss = self._cached_training_step(model, inputs)
        else:
            loss = super().training_step(model, inputs, num_items_in_batch)
        if self._local_rows:  # W x this process's share -> the global loss, the same on every process
            loss = loss.clone()
            torch.distributed.all_reduce(loss)
            loss = loss / world_size()
        return self._after_micro_step(loss)  # nothing here reads a value back: no host sync (nonfinite)

    @property
    def _original_scale(self) -> bool:
        """princeton-nlp/SimCSE's DDP scaling (``ddp_original_gradient_scale``) in a run of several processes."""
        return bool(self.args.ddp_original_gradient_scale) and world_size() > 1

    def _mlm_share(self, labels: torch.Tensor) -> torch.Tensor | float:
        """W · (this process's masked tokens) / (all processes' masked tokens): the factor that turns the
        local MLM mean into this process's part of the global-batch mean once DDP averages gradients
        over the W processes (1 in one process). One all-reduce of a count, only with --do_mlm under DDP.
        With the original's scaling, 1: its MLM term was each process's own mean, averaged by DDP."""
        if world_size() == 1 or self._original_scale:
            return 1.0
        local = (labels != -100).sum().to(torch.float32).reshape(1)
        total = local.clone()
        torch.distributed.all_reduce(total)
        return world_size() * local[0] / total[0].clamp_min(1)

    def _cached_training_step(self, model, inputs):
        model.train()
        inputs = self._prepare_inputs(inputs)
        extras = self._loss_extras(inputs)
        loss, seen = cached_step(
            model, inputs, self.grad_cache_chunk,
            lambda z: nan_gradient_if_nonfinite(self._loss_of_embeddings(z, extras)),
            backward=self.accelerator.backward,
            forward_context=self.compute_loss_context_manager,
            no_sync=self._no_sync(model),
            mlm_weight=self.mlm_weight if getattr(self.model.config, "do_mlm", False) else 0.0,
            scale=1.0 / self.current_gradient_accumulation_steps,
            mlm_over_processes=not self._original_scale,
            local_rows=self._local_rows,
        )
        self._record_diagnostics(seen[:, 0], seen[:, 1])
        return loss

    def _no_sync(self, model):
        """The context that defers the gradient reduction of one backward (None in one process)."""
        if self.sharded:
            return lambda: deferred_reduction(self.model)
        return (lambda: self.accelerator.no_sync(model)) if world_size() > 1 else None

    def _defer_fsdp_gradient_reduction(self):  # the Trainer's no_sync for a model that reduces its own gradients
        return deferred_reduction(self.model)

    def get_train_dataloader(self):
        if not self.no_duplicates:
            return self._standard_train_dataloader()
        sampler = NoDuplicatesBatchSampler(
            sentence_keys(self.train_dataset), self.args.per_device_train_batch_size, seed=self.args.seed,
            drop_last=self.args.dataloader_drop_last, num_replicas=world_size(), rank=rank(),
        )
        # Not passed through accelerator.prepare: the sampler already gives each process its own slice
        # of every duplicate-free global batch; _prepare_inputs moves the tensors to the device.
        return EpochDataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                          num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)

    def _standard_train_dataloader(self):
        """The Trainer's shuffled loader, except that a last batch of ONE example (dataset size mod the
        global batch size = 1) is dropped: no in-batch loss is defined on one pair, and without this the
        run would crash at the end of every epoch (and again on resuming). A smaller tail is kept."""
        batch = self._train_batch_size * max(1, self.args.world_size)
        lone_tail = (batch > 1 and not self.args.dataloader_drop_last and self.train_dataset is not None
                     and len(self.train_dataset) % batch == 1)
        if not lone_tail:
            return super().get_train_dataloader()
        logger.info("%d examples = k x %d + 1: the last batch of each epoch would hold one example and is "
                    "dropped (a contrastive loss needs two)", len(self.train_dataset), batch)
        self.args.dataloader_drop_last = True
        try:
            return super().get_train_dataloader()
        finally:
            self.args.dataloader_drop_last = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        layered = self.loss_fn.needs_layers  # 2D Matryoshka: every layer's pooled output
        outputs = model(**inputs, all_layers=True) if layered else model(**inputs)
        z = gather_with_grad(outputs.embeddings.float())  # (B, N, H), N = 2 or 3; global batch under DDP
        extras = self._loss_extras(inputs)
        if layered:
            extras["layers"] = gather_with_grad(outputs.layer_embeddings.float())  # (B, N, L, H)
        loss = self._loss_of_embeddings(z, extras)
        if model.training:
            self._record_diagnostics(z[:, 0].detach(), z[:, 1].detach())
        share = self._mlm_share(inputs["mlm_labels"]) if "mlm_labels" in inputs else 1.0  # on every rank
        if outputs.mlm_loss is not None:
            loss = loss + self.mlm_weight * outputs.mlm_loss * share
        if model.training:  # a non-finite loss on any process gives a non-finite gradient norm on every one
            loss = nan_gradient_if_nonfinite(loss)
        return (loss, outputs) if return_outputs else loss

    def _save_checkpoint(self, model, trial) -> None:
        # checkpoint-N is written in place: it is complete only once its marker is written, last.
        folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        if self.args.should_save:
            unmark(folder)
        # The Trainer rotates (deletes old checkpoints) at the end of _save_checkpoint, before our marker
        # exists: a kill in that window with --save_total_limit 1 would leave no complete checkpoint.
        # Rotation is therefore switched off for the call and run here, after the marker.
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if self.sharded:  # the weights and optimizer state as shards (the Trainer saved the rest)
            save_sharded(folder, self.model, self.optimizer)
            self._save_rng_state(folder)
            if self.args.should_save:
                torch.save(self.lr_scheduler.state_dict(), os.path.join(folder, SCHEDULER_NAME))
        # Every rank writes its own rng_state_{rank}.pth: mark only once all of them have written.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if self.args.should_save:
            mark_complete(folder, self.state.global_step, run=self.run_record)
            rotate_checkpoints(output_dir=self._get_output_dir(trial=trial), save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if _internal_call and self.sharded:  # a checkpoint: _save_checkpoint writes the shards
            os.makedirs(output_dir, exist_ok=True)
            if self.args.should_save:  # what reading the shards back into a model needs beside them
                self.model.config.save_pretrained(output_dir)
                if self.processing_class is not None:
                    self.processing_class.save_pretrained(output_dir)
            return None
        if _internal_call:  # inside a checkpoint folder, which has its own completeness marker
            return super().save_model(output_dir, _internal_call=True)
        # The final model: write to a scratch directory, then replace the files of output_dir one by one.
        weights = full_state_dict(self.model) if self.sharded else None  # gathered on rank 0, by every rank
        with staged_directory(output_dir or self.args.output_dir, write=self.args.should_save) as staging:
            if weights is None:
                super().save_model(staging, _internal_call=True)
            elif self.args.should_save:
                self._save(staging, state_dict=weights)  # the Trainer's writer, given the gathered weights
        if self.args.push_to_hub:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if self.sharded != has_sharded(resume_from_checkpoint):
            raise SimCSEError(f"checkpoint {resume_from_checkpoint} holds {'sharded' if not self.sharded else 'whole'} "
                              f"weights and this run is {'sharded' if self.sharded else 'not sharded'}: resume it "
                              f"{'with' if not self.sharded else 'without'} `fsdp`, as it was trained")
        if self.sharded:
            return load_sharded(resume_from_checkpoint, self.model)
        return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(self, checkpoint):
        if not (self.sharded and checkpoint is not None and has_sharded(checkpoint)):
            return super()._load_optimizer_and_scheduler(checkpoint)
        load_sharded(checkpoint, self.model, self.optimizer, weights=False)  # the weights are loaded already
        self.lr_scheduler.load_state_dict(torch.load(os.path.join(checkpoint, SCHEDULER_NAME), weights_only=True))

    def _load_best_model(self):
        if not self.sharded:
            return super()._load_best_model()
        logger.info("Loading best model from %s (score: %s).", self.state.best_model_checkpoint, self.state.best_metric)
        load_sharded(self.state.best_model_checkpoint, self.model)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if self.evaluator is None:
            return {}
        model = self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model
        started = time.perf_counter()
        raw = None
        # One process evaluates (the unwrapped model needs no collective); a sharded model's forward gathers
        # its weights from every process, so then every process runs the same evaluation.
        if rank() == 0 or self.sharded:
            with torch.no_grad():
                raw = self.evaluator(model)
        if world_size() > 1:  # ... and the others receive rank 0's metrics, so every rank decides the same
            shared = [raw]
            torch.distributed.broadcast_object_list(shared, src=0)
            raw = shared[0]
        metrics = {f"{metric_key_prefix}_{key}": float(value) for key, value in raw.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - started, 3)
        metrics["epoch"] = self.state.epoch if self.state.epoch is not None else 0.0
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
