"""Command-line arguments of ``train.py``: three dataclasses parsed by ``HfArgumentParser``.

Flag names and defaults follow the original SimCSE ``train.py`` (princeton-nlp/SimCSE ``train.py``) so
users' commands and scripts keep working; transformers 5 dropped ``--evaluation_strategy`` and
``--overwrite_output_dir``, which we accept again. Every choice is validated in ``__post_init__`` with an
error naming the value.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from senteval.custom import split_specs
from simcse.data import SUPPORTED_EXTENSIONS as TRAIN_EXTENSIONS
from simcse.data import check_mlm_probability
from simcse.encoder import check_max_length
from simcse.errors import SimCSEError
from simcse.evaluation.senteval_tasks import STSDevEvaluator
from simcse.poolers import ALL_POOLERS, POOLER_HELP

#: Loss hyperparameter flags of train.py -> the registry's constructor argument they set. Every one
#: defaults to None ("not given"), so a flag the chosen loss does not take is an error only when given.
LOSS_FLAGS = {
    "temp": "temp",
    "hard_negative_weight": "hard_negative_weight",
    "margin": "margin",
    "loss_lambda": "lam",
    "align_alpha": "alpha",
    "uniform_t": "t",
}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "BERT, RoBERTa or GPT-2 checkpoint: local directory or hub id"})
    config_name: str | None = field(default=None, metadata={"help": "config to use instead of the model's"})
    tokenizer_name: str | None = field(default=None, metadata={"help": "tokenizer to use instead of the model's"})
    cache_dir: str | None = field(default=None, metadata={"help": "where to cache hub downloads"})
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "use a fast (Rust) tokenizer"})
    model_revision: str = field(default="main", metadata={"help": "hub revision (branch, tag or commit)"})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "run Python code shipped with a hub model or tokenizer (off: only built-in classes load)"},
    )
    temp: float | None = field(
        default=None, metadata={"help": "temperature τ of the similarity (scale 1/τ); default: the loss's own (0.05)"}
    )
    pooler_type: str = field(
        default="cls",
        metadata={"help": POOLER_HELP},
    )
    hard_negative_weight: float | None = field(
        default=None, metadata={"help": "LOGIT added to each anchor's own hard negative(s) (default 0 = weight 1)"}
    )
    do_mlm: bool = field(default=False, metadata={"help": "add the auxiliary masked-LM loss"})
    mlm_weight: float = field(default=0.1, metadata={"help": "weight of the MLM loss"})
    mlp_only_train: bool = field(default=False, metadata={"help": "MLP head in training only (unsup recipe)"})
    loss_type: str = field(default="infonce", metadata={"help": "contrastive loss (registry name)"})
    margin: float | None = field(default=None, metadata={"help": "margin of met/mpt/mat (and arccon, degrees)"})
    loss_lambda: float | None = field(default=None, metadata={"help": "λ of align_uniform"})
    align_alpha: float | None = field(default=None, metadata={"help": "α of align_uniform (alignment exponent)"})
    uniform_t: float | None = field(default=None, metadata={"help": "t of align_uniform / kcl (kernel scale)"})
    matryoshka_dims: str | None = field(
        default=None,
        metadata={"help": "Matryoshka training (arXiv:2205.13147) of --loss_type at these nested widths, e.g. "
                  "384,128,64 (include the full width); evaluate a prefix with evaluation.py --truncate_dim"},
    )
    matryoshka_weights: str | None = field(
        default=None, metadata={"help": "weights of the --matryoshka_dims terms, e.g. 1,1,1 (default: 1 each)"}
    )
    matryoshka_layers: int | None = field(
        default=None,
        metadata={"help": "2D Matryoshka (arXiv:2402.14776): also train this many randomly chosen earlier layers "
                  "per step (-1: all) as embeddings, with a KL pull towards the last layer"},
    )
    matryoshka_2d_kwargs: str | None = field(
        default=None, metadata={"help": 'other 2D Matryoshka weights as JSON, e.g. \'{"kl_div_weight": 1.0, '
                                '"kl_temperature": 0.3, "last_layer_weight": 1.0, "prior_layers_weight": 1.0}\''})
    loss_kwargs: str | None = field(
        default=None, metadata={"help": 'any loss hyperparameters as JSON, e.g. \'{"symmetric": true}\''}
    )
    guide_model: str | None = field(
        default=None,
        metadata={"help": "frozen guide encoder of --loss_type gist (GISTEmbed, arXiv:2402.16829): a "
                  "sentence-transformers or Hugging Face/SimCSE model directory"},
    )
    guide_pooler: str = field(default="avg", metadata={"help": "pooling of a --guide_model that is not a "
                                                       "sentence-transformers model (cls, avg, ...)"})

    def __post_init__(self):
        if self.temp is not None and self.temp <= 0:
            raise SimCSEError(f"--temp must be > 0, got {self.temp}; the paper uses 0.05")
        if self.pooler_type not in ALL_POOLERS:
            raise SimCSEError(f"unknown --pooler_type {self.pooler_type!r}; choose one of {', '.join(ALL_POOLERS)}")
        if self.mlm_weight < 0:
            raise SimCSEError(f"--mlm_weight must be >= 0, got {self.mlm_weight}")
        from simcse.losses import LOSSES, build_loss

        if self.loss_type not in LOSSES:
            raise SimCSEError(f"unknown --loss_type {self.loss_type!r}; choose one of {', '.join(sorted(LOSSES))}")
        if self.margin is not None and self.margin < 0:
            raise SimCSEError(f"--margin must be >= 0, got {self.margin}")
        self.resolved_loss_kwargs()  # fail now, not after the model has loaded
        self.wrap_loss(build_loss(self.loss_type, **self.resolved_loss_kwargs()))
        needs_guide = LOSSES[self.loss_type].needs_guide
        if needs_guide and not self.guide_model:
            raise SimCSEError(f"--loss_type {self.loss_type} needs a frozen guide encoder: add --guide_model PATH "
                              "(e.g. a sentence-transformers model directory)")
        if self.guide_model and not needs_guide:
            guided = ", ".join(name for name, cls in LOSSES.items() if cls.needs_guide)
            raise SimCSEError(f"--guide_model is used by guided losses only ({guided}), not --loss_type "
                              f"{self.loss_type}; drop it or pick a guided loss")
        self.resolved_matryoshka()

    def resolved_loss_kwargs(self) -> dict:
        """The chosen loss's hyperparameters from the flags the user GAVE (--temp, --hard_negative_weight,
        --margin, --loss_lambda, --align_alpha, --uniform_t), then --loss_kwargs JSON on top; the others
        keep the loss's own defaults. A flag given for a loss that does not take it is an error (it would
        otherwise be silently ignored: e.g. --hard_negative_weight with dcl)."""
        from simcse.losses import loss_kwargs_of

        valid = loss_kwargs_of(self.loss_type)
        kwargs = {}
        for flag, key in LOSS_FLAGS.items():
            value = getattr(self, flag)
            if value is None:  # not given: the loss's default
                continue
            if key not in valid:
                raise SimCSEError(f"--{flag} does not apply to --loss_type {self.loss_type} "
                                  f"(its hyperparameters: {', '.join(valid) or 'none'}); drop the flag")
            kwargs[key] = value
        if self.loss_kwargs:
            try:
                extra = json.loads(self.loss_kwargs)
            except json.JSONDecodeError as err:
                raise SimCSEError(f"--loss_kwargs {self.loss_kwargs!r} is not valid JSON ({err.msg}); "
                                  'write it like \'{"temp": 0.1}\'') from None
            if not isinstance(extra, dict):
                raise SimCSEError(f"--loss_kwargs must be a JSON object, got {self.loss_kwargs!r}")
            unknown = sorted(set(extra) - set(valid))
            if unknown:
                raise SimCSEError(f"--loss_kwargs has {unknown} that --loss_type {self.loss_type} does not take; "
                                  f"valid: {', '.join(valid) or 'none'}")
            clash = sorted(set(extra) & set(kwargs))
            if clash:
                raise SimCSEError(f"--loss_kwargs sets {clash}, which a flag also sets; give each value once")
            kwargs.update(extra)
        return kwargs

    def resolved_matryoshka(self) -> tuple[list[int], list[float] | None] | None:
        """(dims, weights) of --matryoshka_dims / --matryoshka_weights, or None without Matryoshka."""
        if self.matryoshka_dims is None:
            if self.matryoshka_weights is not None:
                raise SimCSEError("--matryoshka_weights needs --matryoshka_dims (the widths they weight)")
            return None
        try:
            dims = [int(d) for d in str(self.matryoshka_dims).split(",") if d.strip()]
            weights = None if self.matryoshka_weights is None else [
                float(w) for w in str(self.matryoshka_weights).split(",") if w.strip()]
        except ValueError:
            raise SimCSEError(f"--matryoshka_dims {self.matryoshka_dims!r} / --matryoshka_weights "
                              f"{self.matryoshka_weights!r}: write comma-separated numbers, e.g. 384,128,64") from None
        from simcse.losses import build_loss
        from simcse.losses.matryoshka import MatryoshkaLoss

        MatryoshkaLoss(build_loss(self.loss_type, **self.resolved_loss_kwargs()), dims, weights)  # validates
        return dims, weights

    def wrap_loss(self, loss):
        """``loss`` inside the Matryoshka wrappers the flags ask for: widths (--matryoshka_dims), then layers
        (--matryoshka_layers, with --matryoshka_2d_kwargs)."""
        from simcse.losses.matryoshka import Matryoshka2dLoss, MatryoshkaLoss

        matryoshka = self.resolved_matryoshka()
        if matryoshka is not None:
            loss = MatryoshkaLoss(loss, *matryoshka)
        if self.matryoshka_layers is None:
            if self.matryoshka_2d_kwargs is not None:
                raise SimCSEError("--matryoshka_2d_kwargs needs --matryoshka_layers (2D Matryoshka over layers)")
            return loss
        try:
            extra = json.loads(self.matryoshka_2d_kwargs) if self.matryoshka_2d_kwargs else {}
        except json.JSONDecodeError as err:
            raise SimCSEError(f"--matryoshka_2d_kwargs {self.matryoshka_2d_kwargs!r} is not valid JSON "
                              f"({err.msg})") from None
        valid = ("last_layer_weight", "prior_layers_weight", "kl_div_weight", "kl_temperature")
        if not isinstance(extra, dict) or set(extra) - set(valid):
            raise SimCSEError(f"--matryoshka_2d_kwargs must be a JSON object with keys among {', '.join(valid)}; "
                              f"got {self.matryoshka_2d_kwargs!r}")
        return Matryoshka2dLoss(loss, n_layers_per_step=self.matryoshka_layers, **extra)

    def model_temp(self) -> float:
        """The temperature saved in the model config: the loss's τ when it has one, else SimCSE's 0.05."""
        from simcse.losses import loss_kwargs_of

        return float(self.resolved_loss_kwargs().get("temp", loss_kwargs_of(self.loss_type).get("temp", 0.05)))


@dataclass
class DataTrainingArguments:
    train_file: str | None = field(default=None, metadata={"help": ".txt (1 sentence a line), .csv or .json"})
    train_columns: str | None = field(
        default=None,
        metadata={"help": "roles of the training file's columns by position, overriding its header, e.g. "
                  "sent0,sent1,score (graded pairs for cosent/angle) or sent0,sent1,hard_neg; default: the header "
                  "decides (a column named 'score' is a similarity score, the others are sentences)"},
    )
    max_seq_length: int = field(default=32, metadata={"help": "truncation length for training"})
    pad_to_max_length: bool = field(default=False, metadata={"help": "pad to max_seq_length instead of per batch"})
    mlm_probability: float = field(default=0.15, metadata={"help": "masking rate of the MLM objective"})
    overwrite_cache: bool = field(default=False, metadata={"help": "ignore the datasets cache"})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "processes for tokenization"})
    senteval_data: str | None = field(default=None, metadata={"help": "SentEval data dir (contains downstream/)"})
    eval_custom_sts: list[str] | None = field(
        default=None,
        metadata={"help": "your own pair file(s) FILE[:NAME[:S1,S2,SCORE]] (.tsv/.txt/.csv/.jsonl, "
                  "float score or 0/1 label), "
                  "repeatable or comma-separated: each evaluation logs eval_<name>_spearman, which "
                  "--metric_for_best_model <name>_spearman can select on", "action": "extend"},
    )
    eval_custom_retrieval: list[str] | None = field(
        default=None,
        metadata={"help": "BEIR-layout folder(s) DIR[:NAME] (corpus.jsonl, queries.jsonl, qrels/test.tsv), "
                  "repeatable: each evaluation logs eval_<name>_ndcg@10, _mrr@10, _map@100, _recall@k, "
                  "_accuracy@k, which --metric_for_best_model (e.g. <name>_ndcg@10) can select on",
                  "action": "extend"},
    )
    query_prompt: str = field(default="", metadata={"help": "text put before every query of the "
                                                          "--eval_custom_retrieval sets, e.g. 'query: '"})
    document_prompt: str = field(default="", metadata={"help": "text put before every document of the "
                                                             "--eval_custom_retrieval sets, e.g. 'passage: '"})

    def __post_init__(self):
        if not self.train_file:
            raise SimCSEError("--train_file is required (a .txt, .csv or .json file)")
        if not os.path.isfile(self.train_file):
            raise SimCSEError(f"--train_file {self.train_file!r} does not exist")
        if not self.train_file.endswith(TRAIN_EXTENSIONS):
            raise SimCSEError(f"--train_file {self.train_file!r}: use one of {', '.join(TRAIN_EXTENSIONS)}")
        check_max_length(self.max_seq_length, None)
        check_mlm_probability(self.mlm_probability)
        if isinstance(self.eval_custom_sts, str):  # a JSON config may give one string
            self.eval_custom_sts = [self.eval_custom_sts]
        self.eval_custom_sts = [spec for item in self.eval_custom_sts or [] for spec in split_specs(item)]
        if isinstance(self.eval_custom_retrieval, str):
            self.eval_custom_retrieval = [self.eval_custom_retrieval]
        self.eval_custom_retrieval = list(self.eval_custom_retrieval or [])


def _zero_stage(deepspeed) -> int | None:
    """The ZeRO stage of a --deepspeed config (a JSON file path or a dict), None when unreadable."""
    config = deepspeed
    if isinstance(deepspeed, str):
        try:
            with open(deepspeed, encoding="utf-8") as handle:
                config = json.load(handle)
        except (OSError, ValueError):
            return None
    stage = (config.get("zero_optimization") or {}).get("stage") if isinstance(config, dict) else None
    return stage if isinstance(stage, int) else None


def _value(choice) -> str:
    """An interval/save strategy as its string, whether still the flag's text or already an enum."""
    return str(getattr(choice, "value", choice))


@dataclass
class SimCSETrainingArguments(TrainingArguments):
    """Standard ``TrainingArguments`` plus SimCSE's flags and two aliases transformers 5 removed."""

    eval_transfer: bool = field(default=False, metadata={"help": "also evaluate the 7 transfer tasks (dev)"})
    evaluation_strategy: str | None = field(default=None, metadata={"help": "old name of --eval_strategy"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "allow writing into a non-empty output_dir"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep the tokenized columns as they are"})
    grad_cache_mini_batch: int | None = field(
        default=None, metadata={"help": "gradient caching: encode the batch K examples at a time (memory of K)"}
    )
    no_duplicates_in_batch: bool = field(
        default=False, metadata={"help": "never put two identical sentences in one batch (false negatives)"}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "continue a stopped run: a checkpoint-N directory, or 'last' for the newest COMPLETE "
                  "checkpoint in --output_dir (one cut off by a crash is skipped)"},
    )
    skip_nonfinite: bool = field(
        default=False,
        metadata={"help": "skip a step whose loss is NaN/inf (no update, a warning with the count) instead of "
                  "stopping with an error naming the last good checkpoint"},
    )
    # Defaults that differ from TrainingArguments' (None = "not given", resolved in __post_init__).
    save_strategy: str | None = field(
        default=None,
        metadata={"help": "no / steps / epoch / best. Default: 'best' when --metric_for_best_model is set and "
                  "evaluation is on (the original's behaviour: the best model is always on disk), else 'steps'"},
    )
    save_steps: float | None = field(default=None, metadata={"help": "save every N steps (default 500)"})
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "DDP's search for parameters without gradient (every parameter of the model is used "
                  "in training, so off by default; it costs a graph traversal per step)"},
    )

    def __post_init__(self):
        # The original's --do_eval ran the STS + transfer dev evaluation after training; transformers 5
        # sets do_eval itself whenever --eval_strategy is not "no", so the user's choice is kept here.
        self.final_transfer_eval = bool(self.do_eval)
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        self._resolve_best_model_saving()
        self._check_best_model_reachable()
        if (self.fp16 or self.bf16) and self.fp16 == self.bf16:
            raise SimCSEError("--fp16 and --bf16 are exclusive; pick one")
        if self.fp16 and not torch.cuda.is_available():
            raise SimCSEError("--fp16 needs a CUDA GPU and none is visible; drop --fp16 (use fp32 on CPU)")
        if self.grad_cache_mini_batch is not None and self.grad_cache_mini_batch < 1:
            raise SimCSEError(f"--grad_cache_mini_batch must be a positive number of examples, got "
                              f"{self.grad_cache_mini_batch}")
        self._check_engines()
        super().__post_init__()
        if self.n_gpu > 1:
            raise SimCSEError(
                f"{self.n_gpu} GPUs are visible but train.py runs as a single process, which would use "
                "DataParallel (unsupported: negatives would not be gathered); launch one process per GPU with "
                f"`torchrun --nproc_per_node {self.n_gpu} train.py ...`, or pick one GPU with CUDA_VISIBLE_DEVICES=0"
            )

    def _resolve_best_model_saving(self) -> None:
        """Fill --save_strategy / --save_steps when not given. The original evaluated every --eval_steps
        and saved only a new best, so ``--eval_steps 125 --metric_for_best_model stsb_spearman
        --load_best_model_at_end`` without save flags must not fall back to the Trainer's "save every 500
        steps", under which a best step such as 375 is recorded but never written."""
        if self.save_strategy is None:
            wants_best = self.metric_for_best_model is not None or self.load_best_model_at_end
            evaluating = _value(self.eval_strategy) != "no"
            self.save_strategy = "best" if wants_best and evaluating and self.save_steps is None else "steps"
        if self.save_steps is None:
            self.save_steps = 500

    def _check_best_model_reachable(self) -> None:
        """Refuse save/eval settings under which the best evaluated step can never be on disk."""
        save, evaluation = _value(self.save_strategy), _value(self.eval_strategy)
        if not (self.load_best_model_at_end or save == "best"):
            return
        if evaluation == "no":
            flag = "--load_best_model_at_end" if self.load_best_model_at_end else "--save_strategy best"
            raise SimCSEError(f"{flag} needs evaluations to find the best model, but --eval_strategy is no; add "
                              "--eval_strategy steps --eval_steps N (or drop the flag)")
        if self.metric_for_best_model is None:  # the dev evaluation's primary metric (its first evaluator's)
            self.metric_for_best_model = STSDevEvaluator.primary_metric
        if self.metric_for_best_model in ("loss", "eval_loss"):
            raise SimCSEError(f"--metric_for_best_model {self.metric_for_best_model}: the evaluation reports dev "
                              f"scores, no loss; use {STSDevEvaluator.primary_metric} or another metric it logs")
        if (self.load_best_model_at_end and save == "steps" and evaluation == "steps"
                and float(self.save_steps) != float(self.eval_steps or 0)):
            raise SimCSEError(
                f"--save_steps {float(self.save_steps):g} differs from --eval_steps {float(self.eval_steps or 0):g}: "
                "a best model found at an evaluation that is not a save step would never be written, and "
                "--load_best_model_at_end would load a worse one; drop --save_steps/--save_strategy (the "
                "default then saves each new best) or set --save_steps equal to --eval_steps")

    def _check_engines(self) -> None:
        """Engines other than DDP, refused at parse time with the fix, not after the model has loaded.

        FSDP / DeepSpeed ZeRO-3 shard the parameters: the dev evaluation (``encode`` on the unwrapped
        model, on one process) and gradient caching (which steps the engine once per chunk under
        DeepSpeed) would bypass or break the sharding. Neither is supported yet.
        """
        if self.fsdp:
            raise SimCSEError(f"--fsdp {self.fsdp!r} is not supported (evaluation and gradient caching would "
                              "bypass the sharding); train with DDP: `torchrun --nproc_per_node N train.py ...`, "
                              "and --grad_cache_mini_batch K for large batches in small memory")
        if self.deepspeed:
            if _zero_stage(self.deepspeed) == 3:
                raise SimCSEError(f"--deepspeed {self.deepspeed!r} uses ZeRO stage 3, which shards the parameters: "
                                  "the dev evaluation and gradient caching would bypass the sharding; use ZeRO "
                                  "stage 1 or 2, or DDP (torchrun)")
            if not torch.cuda.is_available():
                raise SimCSEError(f"--deepspeed {self.deepspeed!r} needs a CUDA GPU and none is visible; drop "
                                  "the flag (use torchrun for several processes)")
            if self.grad_cache_mini_batch is not None:
                raise SimCSEError("--grad_cache_mini_batch cannot be combined with --deepspeed (DeepSpeed steps "
                                  "the optimizer at every backward, i.e. once per chunk); drop one of the two")


# ----- the original train.py's flags -------------------------------------------------------------------
# princeton-nlp/SimCSE train.py parsed ModelArguments / DataTrainingArguments / OurTrainingArguments on
# top of transformers 4.2.1's TrainingArguments. Every flag of those that our parser does not know is
# listed here with what it becomes; the others keep their meaning (tests/test_legacy_flags.py checks all).


@dataclass(frozen=True)
class LegacyFlag:
    """What an original flag becomes. action: "ignore" (dropped with a notice: it has no effect here),
    "rename" (rewritten as ``replacement``, with a notice) or "refuse" (an error naming the replacement).
    boolean: the flag is a switch (``--flag`` or ``--flag true``), otherwise it takes one value."""

    action: str
    why: str
    replacement: str = ""
    boolean: bool = False


LEGACY_FLAGS: dict[str, LegacyFlag] = {
    "model_type": LegacyFlag("ignore", "the model class comes from the checkpoint's config.model_type"),
    "use_auth_token": LegacyFlag("ignore", "a saved login (`hf auth login`) or $HF_TOKEN is used automatically",
                                 boolean=True),
    "validation_split_percentage": LegacyFlag("ignore", "no validation split is taken from the training file; "
                                              "evaluation uses the SentEval dev sets"),
    "fp16_opt_level": LegacyFlag("ignore", "apex is not used; --fp16 is PyTorch's native AMP"),
    "fp16_backend": LegacyFlag("ignore", "--fp16 is always PyTorch's native AMP"),
    "past_index": LegacyFlag("ignore", "no model here returns past states"),
    "tpu_metrics_debug": LegacyFlag("ignore", "TPUs are not supported", boolean=True),
    "per_gpu_train_batch_size": LegacyFlag("rename", "the flag was renamed", "--per_device_train_batch_size"),
    "per_gpu_eval_batch_size": LegacyFlag("rename", "the flag was renamed", "--per_device_eval_batch_size"),
    "no_cuda": LegacyFlag("rename", "the flag was renamed", "--use_cpu", boolean=True),
    "adafactor": LegacyFlag("rename", "the optimizer is chosen with --optim", "--optim adafactor", boolean=True),
    "logging_dir": LegacyFlag("rename", "TensorBoard's directory is an environment variable now",
                              "$TENSORBOARD_LOGGING_DIR"),
    "dataset_name": LegacyFlag("refuse", "training reads a local file", "--train_file (export a hub dataset "
                               "with datasets' to_csv / to_json first)"),
    "dataset_config_name": LegacyFlag("refuse", "training reads a local file", "--train_file"),
    "model_parallel": LegacyFlag("refuse", "naive model parallelism was removed from transformers",
                                 "torchrun with one process per GPU", boolean=True),
    "sharded_ddp": LegacyFlag("refuse", "fairscale sharding was removed from transformers",
                              "torchrun (DDP) with --grad_cache_mini_batch for large batches"),
    "tpu_num_cores": LegacyFlag("refuse", "TPUs are not supported", "a GPU or CPU run"),
    "group_by_length": LegacyFlag("refuse", "length-grouped batches are not supported (they would also bias "
                                  "the in-batch negatives)", "plain shuffled batches (drop the flag)", boolean=True),
}
_TRUE, _FALSE = {"true", "yes", "1", "y", "t"}, {"false", "no", "0", "n", "f"}


def _legacy_value(argv: list[str], i: int, inline: str | None, flag: LegacyFlag) -> tuple[str | None, int]:
    """(value, index of the next token) of the legacy flag at argv[i]."""
    if inline is not None:
        return inline, i + 1
    nxt = argv[i + 1] if i + 1 < len(argv) else None
    if flag.boolean:
        if nxt is not None and nxt.lower() in _TRUE | _FALSE:
            return nxt, i + 2
        return "true", i + 1
    if nxt is None or nxt.startswith("--"):
        raise SimCSEError(f"--{argv[i].lstrip('-').split('=')[0]} expects a value")
    return nxt, i + 2


def _apply_legacy(name: str, value: str, notices: list[str]) -> list[str]:
    """The modern tokens for one legacy flag (raising for refused ones); appends a one-line notice."""
    flag = LEGACY_FLAGS[name]
    on = value.lower() not in _FALSE
    if flag.action == "refuse":
        raise SimCSEError(f"--{name} (a flag of the original train.py) is not supported: {flag.why}; "
                          f"use {flag.replacement}")
    if flag.action == "ignore":
        notices.append(f"--{name} ignored: {flag.why}")
        return []
    if name == "logging_dir":
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", value)
        notices.append(f"--logging_dir {value} -> TENSORBOARD_LOGGING_DIR={value} ({flag.why})")
        return []
    if flag.boolean:
        if not on:
            notices.append(f"--{name} {value} ignored (off)")
            return []
        notices.append(f"--{name} -> {flag.replacement} ({flag.why})")
        return flag.replacement.split()
    notices.append(f"--{name} {value} -> {flag.replacement} {value} ({flag.why})")
    return [flag.replacement, value]


def translate_legacy_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Rewrite the original train.py's flags in ``argv`` to ours: (new argv, one notice per change).

    Refused flags raise :class:`SimCSEError` naming the replacement. A bare ``--debug`` (a switch in
    transformers 4.2.1, a list of debug options now) is dropped with a notice.
    """
    out, notices, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        name, _, inline = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if name in LEGACY_FLAGS:
            value, i = _legacy_value(argv, i, inline if "=" in token else None, LEGACY_FLAGS[name])
            out.extend(_apply_legacy(name, value, notices))
            continue
        if token == "--debug" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            notices.append("--debug ignored: it takes debug options now (e.g. --debug underflow_overflow)")
            i += 1
            continue
        out.append(token)
        i += 1
    return out, notices


def translate_legacy_config(config: dict) -> tuple[dict, list[str]]:
    """The same for a JSON config (one ``train.py config.json`` argument): keys instead of flags."""
    out, notices = {}, []
    for key, value in config.items():
        if key not in LEGACY_FLAGS:
            out[key] = value
            continue
        tokens = _apply_legacy(key, str(value).lower() if isinstance(value, bool) else str(value), notices)
        if len(tokens) == 1:  # a switch turned on
            out[tokens[0].lstrip("-")] = True
        elif tokens:  # --new VALUE: the JSON value keeps its type
            out[tokens[0].lstrip("-")] = tokens[1] if LEGACY_FLAGS[key].boolean else value
    return out, notices


def parse_train_args(argv: list[str]):
    """train.py's arguments from ``argv`` (flags, or one ``.json`` file), the original's flags translated:
    (model, data, training arguments, notices to show the user, one line each)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, SimCSETrainingArguments))
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            with open(argv[0], encoding="utf-8") as handle:
                config, notices = translate_legacy_config(json.load(handle))
            return (*parser.parse_dict(config), notices)
        argv, notices = translate_legacy_argv(argv)
        return (*parser.parse_args_into_dataclasses(args=argv), notices)
    except ValueError as err:  # TrainingArguments' own checks of flag combinations; one line, no traceback
        raise SimCSEError(" ".join(str(err).split())) from None


def make_train_args(**values) -> tuple[ModelArguments, DataTrainingArguments, SimCSETrainingArguments]:
    """The three argument dataclasses from keyword arguments named like train.py's flags, each value of
    its field's type (``make_train_args(model_name_or_path=..., train_file=..., output_dir=...,
    learning_rate=3e-5, eval_strategy="steps", ...)``): the typed way to call
    :func:`simcse.training.train_model` from Python. An unknown name is an error naming it."""
    from dataclasses import fields

    groups = (ModelArguments, DataTrainingArguments, SimCSETrainingArguments)
    names = [{f.name for f in fields(cls) if f.init} for cls in groups]
    unknown = sorted(set(values) - set().union(*names))
    if unknown:
        raise SimCSEError(f"unknown training argument(s) {unknown}; see python train.py --help for the names")
    return tuple(cls(**{k: v for k, v in values.items() if k in keys}) for cls, keys in zip(groups, names))
