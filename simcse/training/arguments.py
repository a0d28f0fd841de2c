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
from simcse.errors import SimCSEError
from simcse.evaluation.senteval_tasks import STSDevEvaluator
from simcse.modeling.encoder import check_max_length
from simcse.modeling.poolers import ALL_POOLERS, POOLER_HELP
from simcse.training.legacy_flags import translate_legacy_argv, translate_legacy_config
from simcse.training.loss_flags import build_training_loss
from simcse.training.sharding import check_engines


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "any Hugging Face encoder or decoder (AutoModel) checkpoint, "
                                              "e.g. BERT, RoBERTa, MPNet, Qwen2, Llama: local directory or hub id"})
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
    loss_tile_size: int | None = field(
        default=None,
        metadata={"help": "compute the loss in (N x N) blocks of similarities with a running log-sum-exp (Inf-CL, "
                  "arXiv:2410.17243): memory O(batch x N), never the (batch x batch) matrix; for batches beyond "
                  "~16k. Same value and gradient; InfoNCE's family only (infonce, nt_xent, dcl, dcl_pos, arccon, "
                  "dhel, kcl, align_uniform, met, mpt, mat)"},
    )
    guide_model: str | None = field(
        default=None,
        metadata={"help": "frozen guide encoder of --loss_type gist (GISTEmbed, arXiv:2402.16829): a "
                  "sentence-transformers or Hugging Face/SimCSE model directory"},
    )
    guide_pooler: str = field(default="avg", metadata={"help": "pooling of a --guide_model that is not a "
                                                       "sentence-transformers model (cls, avg, ...)"})
    bidirectional: bool = field(default=False, metadata={
        "help": "decoders: attend in both directions (LLM2Vec, arXiv:2404.05961; saved with the model)"})
    lora_r: int | None = field(default=None, metadata={
        "help": "train LoRA adapters of this rank (arXiv:2106.09685, via peft) instead of every backbone weight"})
    lora_alpha: float | None = field(default=None, metadata={
        "help": "LoRA scale alpha (the update is alpha / r x B A); default 2 x lora_r"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch's input"})
    lora_target_modules: str | None = field(default=None, metadata={
        "help": "comma-separated names of the Linear layers to adapt; default: the family's attention query/value"})

    def __post_init__(self):
        if self.temp is not None and self.temp <= 0:
            raise SimCSEError(f"`temp` must be > 0, got {self.temp}; the paper uses 0.05")
        if self.pooler_type not in ALL_POOLERS:
            raise SimCSEError(f"unknown `pooler_type` {self.pooler_type!r}; choose one of {', '.join(ALL_POOLERS)}")
        if self.mlm_weight < 0:
            raise SimCSEError(f"`mlm_weight` must be >= 0, got {self.mlm_weight}")
        from simcse.losses import LOSSES

        if self.loss_type not in LOSSES:
            raise SimCSEError(f"unknown `loss_type` {self.loss_type!r}; choose one of {', '.join(sorted(LOSSES))}")
        if self.margin is not None and self.margin < 0:
            raise SimCSEError(f"`margin` must be >= 0, got {self.margin}")
        # Built once, here (a bad hyperparameter fails now, not after the model has loaded), and passed on.
        self.loss = build_training_loss(self)
        needs_guide = LOSSES[self.loss_type].needs_guide
        if needs_guide and not self.guide_model:
            raise SimCSEError(f"`loss_type` {self.loss_type} needs a frozen guide encoder: add `guide_model` PATH "
                              "(e.g. a sentence-transformers model directory)")
        if self.guide_model and not needs_guide:
            guided = ", ".join(name for name, cls in LOSSES.items() if cls.needs_guide)
            raise SimCSEError(f"`guide_model` is used by guided losses only ({guided}), not `loss_type` "
                              f"{self.loss_type}; drop it or pick a guided loss")


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
        metadata={"help": "BEIR-layout folder(s) DIR[:NAME[:SPLIT]] (corpus.jsonl, queries.jsonl, "
                  "qrels/SPLIT.tsv, default split test: choose on a dev split), "
                  "repeatable: each evaluation logs eval_<name>_ndcg@10, _mrr@10, _map@100, _recall@k, "
                  "_accuracy@k, which --metric_for_best_model (e.g. <name>_ndcg@10) can select on",
                  "action": "extend"},
    )
    query_prompt: str = field(default="", metadata={"help": "text before every anchor in training and every "
                                                          "query of --eval_custom_retrieval (saved with the model)"})
    document_prompt: str = field(default="", metadata={"help": "text before every positive / hard negative and "
                                                             "retrieval document (saved with the model)"})

    def __post_init__(self):
        if not self.train_file:
            raise SimCSEError("`train_file` is required (a .txt, .csv or .json file)")
        if not os.path.isfile(self.train_file):
            raise SimCSEError(f"`train_file` {self.train_file!r} does not exist")
        if not self.train_file.endswith(TRAIN_EXTENSIONS):
            raise SimCSEError(f"`train_file` {self.train_file!r}: use one of {', '.join(TRAIN_EXTENSIONS)}")
        check_max_length(self.max_seq_length, None)
        check_mlm_probability(self.mlm_probability)
        if isinstance(self.eval_custom_sts, str):  # a JSON config may give one string
            self.eval_custom_sts = [self.eval_custom_sts]
        self.eval_custom_sts = [spec for item in self.eval_custom_sts or [] for spec in split_specs(item)]
        if isinstance(self.eval_custom_retrieval, str):
            self.eval_custom_retrieval = [self.eval_custom_retrieval]
        self.eval_custom_retrieval = list(self.eval_custom_retrieval or [])


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
        default=False, metadata={"help": "never put two identical sentences in one batch (false negatives): the "
                                 "sampler defers an example whose sentences are already in the batch"}
    )
    mask_duplicate_texts: bool = field(
        default=False,
        metadata={"help": "keep shuffled batches and remove false negatives from the loss instead: a candidate with "
                  "the text (token ids) of a row's anchor or positive leaves that row's negatives (losses with "
                  "in-batch negatives; keys gathered under DDP). Does the job of --no_duplicates_in_batch, so "
                  "the two together are an error"},
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "continue a stopped run: a checkpoint-N directory, or 'last' for the newest COMPLETE "
                  "checkpoint in --output_dir (one cut off by a crash is skipped)"},
    )
    ddp_original_gradient_scale: bool = field(
        default=False,
        metadata={"help": "under torchrun, scale the contrastive gradient by 1/W and take the MLM term per process "
                  "as princeton-nlp/SimCSE did, to reproduce its multi-GPU runs (clipping at W x --max_grad_norm "
                  "in effect, the MLM term W times heavier); off: the exact gradient of the global-batch loss"},
    )
    skip_nonfinite: bool = field(
        default=False,
        metadata={"help": "skip an optimizer step whose loss or gradient is NaN/inf (no update: weights, optimizer "
                  "state and scheduler untouched; a warning with the count; one host read of the gradient norm "
                  "per step) instead of stopping with an error naming the last good checkpoint"},
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
            raise SimCSEError("`fp16` and `bf16` are exclusive; pick one")
        if self.fp16 and not torch.cuda.is_available():
            raise SimCSEError("`fp16` needs a CUDA GPU and none is visible; drop `fp16` (use fp32 on CPU)")
        if self.grad_cache_mini_batch is not None and self.grad_cache_mini_batch < 1:
            raise SimCSEError(f"`grad_cache_mini_batch` must be a positive number of examples, got "
                              f"{self.grad_cache_mini_batch}")
        if self.mask_duplicate_texts and self.no_duplicates_in_batch:
            raise SimCSEError("`mask_duplicate_texts` and `no_duplicates_in_batch` both keep duplicate texts from "
                              "being negatives (the mask in the loss, the sampler by deferring examples): with the "
                              "sampler there is nothing left to mask; drop one of them")
        check_engines(self)
        super().__post_init__()
        if self.n_gpu > 1:
            raise SimCSEError(
                f"{self.n_gpu} GPUs are visible but train.py runs as a single process, which would use "
                "DataParallel (unsupported: negatives would not be gathered); launch one process per GPU with "
                f"torchrun --nproc_per_node {self.n_gpu} train.py ..., or pick one GPU with CUDA_VISIBLE_DEVICES=0"
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
            flag = "`load_best_model_at_end`" if self.load_best_model_at_end else "`save_strategy` best"
            raise SimCSEError(f"{flag} needs evaluations to find the best model, but `eval_strategy` is no; add "
                              "`eval_strategy` steps `eval_steps` N (or drop the flag)")
        if self.metric_for_best_model is None:  # the dev evaluation's primary metric (its first evaluator's)
            self.metric_for_best_model = STSDevEvaluator.primary_metric
        if self.metric_for_best_model in ("loss", "eval_loss"):
            raise SimCSEError(f"`metric_for_best_model` {self.metric_for_best_model}: the evaluation reports dev "
                              f"scores, no loss; use {STSDevEvaluator.primary_metric} or another metric it logs")
        if (self.load_best_model_at_end and save == "steps" and evaluation == "steps"
                and float(self.save_steps) != float(self.eval_steps or 0)):
            raise SimCSEError(
                f"`save_steps` {float(self.save_steps):g} differs from `eval_steps` {float(self.eval_steps or 0):g}: "
                "a best model found at an evaluation that is not a save step would never be written, and "
                "`load_best_model_at_end` would load a worse one; drop `save_steps`/`save_strategy` (the "
                "default then saves each new best) or set `save_steps` equal to `eval_steps`")


def read_config(path: str) -> tuple[dict, dict | None]:
    """(train.py keys, the ``"recipe"`` object or None) of the JSON config at ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except json.JSONDecodeError as err:
        raise SimCSEError(f"{path} is not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(config, dict):
        raise SimCSEError(f"{path} must hold a JSON object of train.py keys, got {type(config).__name__}")
    recipe = config.pop("recipe", None)
    if recipe is not None and not isinstance(recipe, dict):
        raise SimCSEError(f"{path}: \"recipe\" must be an object (paper, reported, hardware, data)")
    return config, recipe


def parse_train_args(argv: list[str]):
    """train.py's arguments from ``argv`` (flags; or a ``.json`` file of the same keys, optionally followed
    by flags, which win), the original's flags translated: (model, data, training arguments, notices to
    show the user, one line each). A file's ``"recipe"`` object is documentation, never parsed; a key that
    is no flag is an error naming the file and the key."""
    from dataclasses import fields

    from transformers import HfArgumentParser

    groups = (ModelArguments, DataTrainingArguments, SimCSETrainingArguments)
    parser = HfArgumentParser(groups)
    try:
        config, notices = {}, []
        if argv and argv[0].endswith(".json") and not argv[0].startswith("-"):
            config, notices = translate_legacy_config(read_config(argv[0])[0])
            known = {f.name for cls in groups for f in fields(cls) if f.init}
            unknown = sorted(set(config) - known)
            if unknown:
                raise SimCSEError(f"{argv[0]}: unknown key(s) {unknown}: not train.py flags (see python train.py "
                                  "--help; the \"recipe\" object is the place for notes)")
            for action in parser._actions:  # the file's values become defaults; flags after it override them
                if action.dest in config:
                    action.required = False
            parser.set_defaults(**config)
            argv = argv[1:]
        argv, flag_notices = translate_legacy_argv(argv)
        return (*parser.parse_args_into_dataclasses(args=argv), notices + flag_notices)
    except ValueError as err:  # TrainingArguments' own checks of flag combinations; one line, no traceback
        raise SimCSEError(" ".join(str(err).split())) from None


def make_train_args(**values) -> tuple[ModelArguments, DataTrainingArguments, SimCSETrainingArguments]:
    """The three argument dataclasses from keyword arguments named like train.py's flags, each value of
    its field's type (``make_train_args(model_name_or_path=..., train_file=..., output_dir=...,
    learning_rate=3e-5, eval_strategy="steps", ...)``): the typed way to call
    :func:`simcse.training.run.train_model` from Python. An unknown name is an error naming it."""
    from dataclasses import fields

    groups = (ModelArguments, DataTrainingArguments, SimCSETrainingArguments)
    names = [{f.name for f in fields(cls) if f.init} for cls in groups]
    unknown = sorted(set(values) - set().union(*names))
    if unknown:
        raise SimCSEError(f"unknown training argument(s) {unknown}; see python train.py --help for the names")
    return tuple(cls(**{k: v for k, v in values.items() if k in keys}) for cls, keys in zip(groups, names))
