"""Assembling and running a training run: the library side of ``train.py``.

:func:`build_trainer` turns the three argument dataclasses (:mod:`simcse.training.arguments`) into a ready
:class:`~simcse.training.trainers.SimCSETrainer` (model, tokenizer, tokenized data, collator, loss, evaluator);
:func:`train_model` runs it, saves the final model and returns the metrics. Both take typed arguments,
so the demo, the multi-seed runner and the benches call them directly; ``train.py`` only parses the
command line, configures logging and prints. Make the arguments in Python with
:func:`simcse.training.arguments.make_train_args`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence

from transformers import AutoConfig, AutoTokenizer, TrainerCallback, set_seed

from senteval.datapath import resolve_data_dir
from senteval.registry import TRANSFER_TASKS
from simcse.data import SimCSECollator, column_roles, load_training_dataset, tokenize_dataset
from simcse.errors import SimCSEError
from simcse.evaluation.dev import ModelEvaluation, build_evaluators
from simcse.evaluation.senteval_tasks import STS_DEV_METRICS, TransferDevEvaluator
from simcse.files import atomic_write_json
from simcse.inference.card import RUN_FACTS
from simcse.losses.registry import check_inputs
from simcse.losses.tiled import check_tiled_masking
from simcse.modeling.backbones import check_bidirectional, make_bidirectional, model_class_for
from simcse.modeling.encoder import check_max_length, load_pretrained, prepare_tokenizer
from simcse.modeling.guide import GuideEncoder
from simcse.modeling.lora import apply_lora, count_parameters, lora_settings, saved_settings
from simcse.modeling.models import configure, is_simcse_checkpoint
from simcse.modeling.poolers import uses_mlp_head
from simcse.training.arguments import DataTrainingArguments, ModelArguments, SimCSETrainingArguments
from simcse.training.loss_flags import model_temp
from simcse.training.recipes import global_batch
from simcse.training.reliability import check_task_data, resolve_resume_checkpoint, run_record
from simcse.training.sharding import shard_model
from simcse.training.trainers import SimCSETrainer

logger = logging.getLogger(__name__)

__all__ = ["build_trainer", "check_output_dir", "train_model"]


def check_output_dir(training_args: SimCSETrainingArguments) -> None:
    """Refuse to write into a non-empty output_dir unless told to (or resuming)."""
    out = training_args.output_dir
    resuming = training_args.resume_from_checkpoint is not None
    if os.path.isdir(out) and os.listdir(out) and not training_args.overwrite_output_dir and not resuming:
        raise SimCSEError(
            f"output_dir {out!r} already exists and is not empty; pass `overwrite_output_dir` to write into it, "
            "`resume_from_checkpoint` to continue, or choose another `output_dir`"
        )


def _evaluating(training_args: SimCSETrainingArguments) -> bool:
    return (training_args.eval_strategy != "no" or training_args.eval_on_start
            or training_args.final_transfer_eval)


def build_trainer(model_args: ModelArguments, data_args: DataTrainingArguments,
                  training_args: SimCSETrainingArguments, *, evaluator: Callable | None = None,
                  callbacks: Sequence[TrainerCallback] = ()) -> SimCSETrainer:
    """The trainer of one run, everything checked before the model loads where possible.

    evaluator: ``evaluator(model) -> {metric: value}`` used at every evaluation; default (None): the
    evaluators the flags ask for (STS-B / SICK-R dev, ``--eval_custom_sts``, ``--eval_custom_retrieval``,
    ``--eval_transfer``; :func:`simcse.evaluation.dev.build_evaluators`) when evaluation is on
    (``--eval_strategy``, ``--eval_on_start`` or ``--do_eval``); ``--do_eval`` adds the transfer tasks
    to the final evaluation. ``training_args.resume_from_checkpoint``
    is resolved here ("last": the newest complete checkpoint of this run).
    """
    training_args.do_train = True
    check_output_dir(training_args)
    # recorded in each checkpoint's marker; the world size too: a run resumed on another number of
    # processes trains on other global batches, so `--resume_from_checkpoint last` refuses it, naming why
    run = run_record(model_args, data_args, training_args, {"world_size": training_args.world_size})
    evaluating = _evaluating(training_args)
    if evaluating and evaluator is None:  # missing SentEval files fail now, not after the model has loaded
        data_dir = resolve_data_dir(data_args.senteval_data)
        transfer = training_args.eval_transfer or training_args.final_transfer_eval
        check_task_data(data_dir, list(STS_DEV_METRICS.values()) + (TRANSFER_TASKS if transfer else []))
        evaluators = build_evaluators(str(data_dir), transfer_dev=training_args.eval_transfer,
                                      custom_sts=data_args.eval_custom_sts or (),
                                      custom_retrieval=data_args.eval_custom_retrieval or (),
                                      query_prompt=data_args.query_prompt, document_prompt=data_args.document_prompt)
    # "last" means the newest COMPLETE checkpoint of THIS run (same fingerprint); a checkpoint cut off by a
    # crash, or left by a run with other arguments, is never resumed from. The choice is logged.
    training_args.resume_from_checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint,
                                                                     training_args.output_dir, run=run)
    set_seed(training_args.seed)

    # 3. Model and tokenizer: the wrapper class comes from config.model_type, never from the path.
    config = load_pretrained(model_args.config_name or model_args.model_name_or_path,
                             lambda p: AutoConfig.from_pretrained(p, cache_dir=model_args.cache_dir,
                                                                  revision=model_args.model_revision,
                                                                  trust_remote_code=model_args.trust_remote_code))
    model_cls = model_class_for(config.model_type)
    configure(config, pooler_type=model_args.pooler_type, mlp_only_train=model_args.mlp_only_train,
              temp=model_temp(model_args), do_mlm=model_args.do_mlm)
    if model_args.bidirectional:
        make_bidirectional(config)
    lora = lora_settings(config.model_type, model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout,
                         model_args.lora_target_modules)
    tokenizer = load_pretrained(model_args.tokenizer_name or model_args.model_name_or_path,
                                lambda p: AutoTokenizer.from_pretrained(p, cache_dir=model_args.cache_dir,
                                                                        use_fast=model_args.use_fast_tokenizer,
                                                                        trust_remote_code=model_args.trust_remote_code),
                                what="tokenizer")
    tokenizer = prepare_tokenizer(tokenizer, config.model_type)
    check_max_length(data_args.max_seq_length, config)

    # 4. Data: the sentence columns decide unsupervised (1), pairs (2) or pairs + hard negatives (3+);
    # a 'score' column (or --train_columns) makes graded pairs.
    raw = load_training_dataset(data_args.train_file, cache_dir=model_args.cache_dir)
    roles = column_roles(raw, data_args.train_columns, where=f"training file {data_args.train_file}")
    num_columns = len(roles.sentences)
    # What the loss consumes against what the file holds, before the model loads (the registry's one rule).
    check_inputs(model_args.loss, hard_negatives=num_columns >= 3, scores=roles.score is not None,
                 guide=bool(model_args.guide_model), keys=training_args.mask_duplicate_texts,
                 source=f"{num_columns}-column {data_args.train_file!r}")
    if training_args.mask_duplicate_texts and model_args.loss_tile_size is not None:
        check_tiled_masking(model_args.loss_type)
    fresh_head = uses_mlp_head(config.pooler_type) and not is_simcse_checkpoint(config)
    model = load_pretrained(model_args.model_name_or_path,
                            lambda p: model_cls.from_pretrained(p, config=config, cache_dir=model_args.cache_dir,
                                                                revision=model_args.model_revision,
                                                                trust_remote_code=model_args.trust_remote_code))
    if model_args.bidirectional:
        check_bidirectional(model)
    lora = lora or saved_settings(model.config)  # a LoRA checkpoint goes on training its own adapters
    trainable, total = apply_lora(model, lora) if lora else count_parameters(model)
    logger.info("trains %s of %s parameters (%.2f%%)%s", f"{trainable:,}", f"{total:,}", 100 * trainable / total,
                f": LoRA r={lora.r}, alpha={lora.alpha:g} on {','.join(lora.target_modules)}" if lora else "")
    if training_args.fsdp_shard:  # FSDP2: each process keeps 1/W of every weight from here on
        blocks, held, total = shard_model(model, training_args.device)
        logger.info("FSDP2: %d blocks and the rest of the model sharded over %d processes: this one holds %s of "
                    "%s parameters", blocks, training_args.world_size, f"{held:,}", f"{total:,}")
    if fresh_head:
        logger.info("the MLP head (mlp.dense, tanh) starts fresh, as SimCSE's recipe does; the checkpoint's own "
                    "pooling layer is not used")

    # the anchors (the one column of unsupervised data) take the query prompt, the other columns the document's
    prompts = [data_args.query_prompt] + [data_args.document_prompt] * (num_columns - 1)
    # 5. Preprocessing: tokenize once; the collator pads per batch and builds the MLM inputs.
    with training_args.main_process_first(desc="tokenization"):
        train_dataset = tokenize_dataset(raw, tokenizer, max_seq_length=data_args.max_seq_length,
                                         num_proc=data_args.preprocessing_num_workers,
                                         overwrite_cache=data_args.overwrite_cache, roles=roles, prompts=prompts)
    collator = SimCSECollator(tokenizer, do_mlm=model_args.do_mlm, mlm_probability=data_args.mlm_probability,
                              pad_to_length=data_args.max_seq_length if data_args.pad_to_max_length else None,
                              mask_seed=training_args.seed, text_keys=training_args.mask_duplicate_texts)

    # 6. Loss and evaluation.
    loss_fn = model_args.loss  # built once, when the arguments were parsed
    if loss_fn.needs_layers and training_args.grad_cache_mini_batch:
        raise SimCSEError("`matryoshka_layers` cannot be combined with `grad_cache_mini_batch` (the cached step "
                          "embeds without the earlier layers); drop one of them")
    model.config.simcse_loss = {"name": loss_fn.name, **loss_fn.hparams()}  # saved with every checkpoint
    if data_args.query_prompt or data_args.document_prompt:  # read by the tool, evaluation.py and the export
        model.config.simcse_prompts = {"query": data_args.query_prompt, "document": data_args.document_prompt}
    guide = None
    if model_args.guide_model:  # GISTEmbed: frozen, run without gradient once per batch by the trainer
        guide = GuideEncoder(model_args.guide_model, tokenizer, device=training_args.device,
                             pooler_type=model_args.guide_pooler)
    if evaluating and evaluator is None:
        evaluator = ModelEvaluation(evaluators, tokenizer)
    elif not evaluating and (data_args.eval_custom_sts or data_args.eval_custom_retrieval):
        flag = "`eval_custom_sts`" if data_args.eval_custom_sts else "`eval_custom_retrieval`"
        raise SimCSEError(f"{flag} is scored at each evaluation, but evaluation is off; "
                          "add `eval_strategy` steps `eval_steps` N (or epoch)")
    final_evaluator = evaluator
    if (training_args.final_transfer_eval and not training_args.eval_transfer
            and isinstance(evaluator, ModelEvaluation)):
        final_evaluator = evaluator.extended(TransferDevEvaluator(data_dir))
    logger.info("%s", global_batch(training_args, world=training_args.world_size)[1])
    logger.info("mode: %s, %d examples; loss %s %s; pooler %s (mlp_only_train=%s)",
                roles.describe(), len(train_dataset), loss_fn.name,
                json.dumps(loss_fn.hparams()), config.pooler_type, config.mlp_only_train)

    return SimCSETrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=["STSBenchmark-dev"] if evaluator is not None else None,  # evaluate() ignores it
        data_collator=collator,
        processing_class=tokenizer,
        loss_fn=loss_fn,
        evaluator=evaluator,
        final_evaluator=final_evaluator,
        mlm_weight=model_args.mlm_weight,
        guide=guide,
        callbacks=list(callbacks),
        run_record=run,
    )


def run_facts(model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SimCSETrainingArguments,
              trainer: SimCSETrainer) -> dict:
    """What the final model was trained from, with and how, for its model card (simcse.inference.card):
    every value read from the arguments, the data and the trainer's state, none typed."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    libraries = ("simcse-modern", "torch", "transformers", "accelerate", "peft")
    return {"base_model": model_args.model_name_or_path, "train_file": data_args.train_file,
            "train_examples": len(trainer.train_dataset), "steps": trainer.state.global_step,
            "global_batch": global_batch(training_args, world=training_args.world_size)[0],
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "world_size": training_args.world_size,
            "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
            "learning_rate": training_args.learning_rate, "max_seq_length": data_args.max_seq_length,
            "seed": training_args.seed, "versions": {name: v for name in libraries if (v := installed(name))}}


def train_model(model_args: ModelArguments, data_args: DataTrainingArguments,
                training_args: SimCSETrainingArguments, *, evaluator: Callable | None = None,
                callbacks: Sequence[TrainerCallback] = ()) -> dict:
    """Build the trainer, train, save the final model (the best one with ``load_best_model_at_end``) and
    evaluate it on the dev sets (with ``--do_eval`` the transfer tasks too). Returns the metrics."""
    trainer = build_trainer(model_args, data_args, training_args, evaluator=evaluator, callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    if trainer.is_world_process_zero():
        atomic_write_json(os.path.join(training_args.output_dir, RUN_FACTS),
                          run_facts(model_args, data_args, training_args, trainer))
    metrics = dict(result.metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.evaluator is not None:
        trainer.evaluator = trainer.final_evaluator
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    if trainer.state.best_model_checkpoint:
        metrics["best_model_checkpoint"] = trainer.state.best_model_checkpoint
        metrics["best_metric"] = trainer.state.best_metric
    return metrics
