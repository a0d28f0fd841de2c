"""The contrastive encoder wrapper: hand-written for BERT, RoBERTa and GPT-2 (any other family:
:mod:`simcse.modeling.backbones`) (princeton-nlp/SimCSE ``simcse/models.py``;
Gao et al. 2021, arXiv:2104.08821).

One implementation (:class:`ContrastiveEncoderMixin`) with one thin class per backbone, because Hugging
Face keys a checkpoint's parameter names on the class's ``base_model_prefix``. Keeping the original
SimCSE key names means checkpoints of the original code load here unchanged::

    bert.* / roberta.* / transformer.*     the backbone, built without its own pooling layer
    mlp.dense.weight, mlp.dense.bias       the MLP head (Linear(H, H) + tanh), built for the cls pooler only
    cls.predictions.* (BERT), lm_head.* (RoBERTa)   the MLM head, when --do_mlm (other encoders: the names
                                           of the family's own masked-LM class, simcse.modeling.backbones)

Checkpoints written by the original code (transformers 4.2.1) differ in three ways, which
:func:`normalize_original_keys` undoes when they load: the buffers ``*.embeddings.position_ids`` (BERT,
RoBERTa) and ``transformer.h.N.attn.bias`` / ``attn.masked_bias`` (GPT-2) are dropped; the original
BERT MLM head ``lm_head.transform.*`` / ``lm_head.bias`` (``BertLMPredictionHead``) becomes
``cls.predictions.*``; the decoders ``lm_head.decoder.weight`` / ``.bias`` (copies of the word
embeddings and of ``lm_head.bias``, tied) are dropped after checking that they are those copies.

The settings needed at inference (``pooler_type``, ``mlp_only_train``, ``temp``) are written into the
saved ``config.json``, so ``AutoSimCSE.from_pretrained(path)`` (or the class itself) needs no arguments.

Training forward: ``input_ids`` (B, N, L) with N = 2 or 3 sentences per example; the B·N sentences go
through the encoder in one batch (so dropout gives the two views of unsupervised SimCSE) and the model
returns ``embeddings`` (B, N, H). The loss lives in the trainer, on embeddings only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, GPT2Model, PretrainedConfig, RobertaModel
from transformers import initialization as hf_init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import ModelOutput
from transformers.models.bert.modeling_bert import BertPreTrainedModel
from transformers.models.gpt2.modeling_gpt2 import GPT2PreTrainedModel
from transformers.models.roberta.modeling_roberta import RobertaPreTrainedModel

from simcse.errors import SimCSEError
from simcse.modeling.lora import rebuild_adapters
from simcse.modeling.poolers import NEEDS_HIDDEN_STATES, check_pooler, pool, uses_mlp_head

# Settings stored in config.json next to the backbone's own.
SIMCSE_CONFIG_DEFAULTS = {"pooler_type": "cls", "mlp_only_train": False, "temp": 0.05, "do_mlm": False}


@dataclass
class ContrastiveOutput(ModelOutput):
    embeddings: torch.Tensor | None = None  # (B, N, H) pooled (and MLP-projected) sentence vectors
    mlm_loss: torch.Tensor | None = None
    # (B, N, L, H): the same pooling of the L earlier layers' states (embedding output, layers 1..L-1), with
    # ``all_layers=True`` (2D Matryoshka, simcse.losses.matryoshka.Matryoshka2dLoss)
    layer_embeddings: torch.Tensor | None = None


class MLPHead(nn.Module):
    """SimCSE's projection on top of the [CLS] state: tanh(W h + b), W fresh with std 0.02."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(features))


class _MLMTransform(nn.Module):
    def __init__(self, config, norm_name: str):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act] if isinstance(config.hidden_act, str) else config.hidden_act
        setattr(self, norm_name, nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps))
        self._norm = norm_name

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return getattr(self, self._norm)(self.act(self.dense(h)))


class _BertPredictions(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.transform = _MLMTransform(config, "LayerNorm")
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))


class BertMLMHead(nn.Module):
    """BERT's MLM head, parameter names as in BERT checkpoints (``cls.predictions.transform.*``,
    ``cls.predictions.bias``). The decoder is the word-embedding matrix itself (tied by construction)."""

    def __init__(self, config):
        super().__init__()
        self.predictions = _BertPredictions(config)

    def forward(self, h: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.predictions.transform(h), word_embeddings, self.predictions.bias)


class RobertaMLMHead(nn.Module):
    """RoBERTa's MLM head (``lm_head.dense``, ``lm_head.layer_norm``, ``lm_head.bias``), tied decoder."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.layer_norm(F.gelu(self.dense(h))), word_embeddings, self.bias)


def pool_then_head(pooler_type: str, attention_mask: torch.Tensor, outputs, mlp: nn.Module | None) -> torch.Tensor:
    """The sentence vectors of a backbone's ``outputs`` (B, H): the pooler over the last layer (or the hidden
    states it averages), then ``mlp`` on top when the pooler has a head (``cls``) and ``mlp`` is given.
    The one rule for training (head always), inference (head unless ``mlp_only_train``) and the tool."""
    hidden = outputs.hidden_states if pooler_type in NEEDS_HIDDEN_STATES else None
    pooled = pool(pooler_type, attention_mask, outputs.last_hidden_state, hidden)
    return mlp(pooled) if mlp is not None and uses_mlp_head(pooler_type) else pooled


def configure(config: PretrainedConfig, **settings) -> PretrainedConfig:
    """Write the SimCSE settings into a backbone config; settings not given keep the config's value
    (a saved checkpoint's) or the default."""
    unknown = set(settings) - set(SIMCSE_CONFIG_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown SimCSE setting(s) {sorted(unknown)}")
    for key, default in SIMCSE_CONFIG_DEFAULTS.items():
        if key in settings:
            setattr(config, key, settings[key])
        elif not hasattr(config, key):
            setattr(config, key, default)
    if config.temp <= 0:
        raise SimCSEError(f"`temp` must be > 0, got {config.temp}")
    check_pooler(config.pooler_type, config.model_type)
    return config


# Per backbone prefix: keys of original checkpoints that are buffers (recomputed, never learned), and
# renames of the original's MLM head names to ours (the keys each backbone's wrapper uses).
_ORIGINAL_BUFFERS = {
    "bert": re.compile(r"^bert\.embeddings\.position_ids$"),
    "roberta": re.compile(r"^roberta\.embeddings\.position_ids$"),
    "transformer": re.compile(r"^transformer\.h\.\d+\.attn\.(bias|masked_bias)$"),
}
_ORIGINAL_RENAMES = {
    "bert": ((re.compile(r"^lm_head\.(transform\.|bias$)"), r"cls.predictions.\1"),),
    "roberta": (),
    "transformer": (),
}


def normalize_original_keys(state: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Bring a state dict written by the original SimCSE code to our key names.

    ``prefix`` is the wrapper's ``base_model_prefix`` (bert / roberta / transformer). Returns (state,
    dropped keys). Keys it does not know pass through unchanged, so the caller's own check still
    rejects anything unexpected. A tied decoder that is not a copy of what it should be tied to is an
    error: dropping it would change the model.
    """
    if prefix not in _ORIGINAL_BUFFERS:
        return dict(state), []
    out, dropped = {}, []
    tied = {"lm_head.decoder.weight": f"{prefix}.embeddings.word_embeddings.weight",
            "lm_head.decoder.bias": "lm_head.bias"}
    for key, tensor in state.items():
        if _ORIGINAL_BUFFERS[prefix].match(key):
            dropped.append(key)
            continue
        if key in tied and prefix in ("bert", "roberta"):
            source = state.get(tied[key])
            if source is None or source.shape != tensor.shape or not torch.equal(source, tensor):
                raise SimCSEError(f"{key} in the checkpoint is not a copy of {tied[key]} (an untied MLM decoder); "
                                  "this layout is not supported, re-save the model with tied word embeddings")
            dropped.append(key)
            continue
        for pattern, replacement in _ORIGINAL_RENAMES[prefix]:
            key = pattern.sub(replacement, key)
        out[key] = tensor
    return out, dropped


def _original_layout_state(path: str, prefix: str) -> dict[str, torch.Tensor] | None:
    """The normalized state dict of a local ``pytorch_model.bin`` written by the original code, or
    ``None`` when the directory is in our layout (then Hugging Face loads it as usual)."""
    bin_file = os.path.join(path, "pytorch_model.bin")
    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "model.safetensors")) \
            or not os.path.isfile(bin_file):
        return None
    state = torch.load(bin_file, map_location="cpu", weights_only=True)
    normalized, dropped = normalize_original_keys(state, prefix)
    return normalized if dropped or normalized.keys() != state.keys() else None


class ContrastiveEncoderMixin:
    """Shared body of the wrappers: subclasses set ``backbone_attr`` and build the backbone."""

    backbone_attr = ""
    mlm_attr: str | None = None
    takes_token_types = True  # the backbone's forward takes token_type_ids
    is_decoder_family = False  # causal LM: positions counted from the attention mask (left padding works)
    # The contrastive loss is a per-batch mean computed by the trainer, not a sum over tokens: tell the
    # Trainer so it divides by the gradient-accumulation steps itself.
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Hugging Face's ``from_pretrained``; a local checkpoint of the original code is normalized
        first (:func:`normalize_original_keys`), so its MLM head loads instead of being re-initialised."""
        path = pretrained_model_name_or_path
        state = None
        if path is not None and kwargs.get("state_dict") is None:
            state = _original_layout_state(str(path), cls.base_model_prefix)
        if state is None:
            return super().from_pretrained(path, *model_args, **kwargs)
        if kwargs.get("config") is None:
            kwargs["config"] = cls.config_class.from_pretrained(path)
        return super().from_pretrained(None, *model_args, state_dict=state, **kwargs)

    def _build_heads(self, config) -> None:
        configure(config)
        # Only the cls pooler uses the MLP head. A head built for the other poolers would get no gradient:
        # DDP would then need find_unused_parameters (a graph traversal every step) and crash at step 2
        # under --gradient_checkpointing or with it off. The original built it for every pooler; its
        # unused weights in such a checkpoint are dropped when it loads.
        if uses_mlp_head(config.pooler_type):
            self.mlp = MLPHead(config.hidden_size)
        if not is_simcse_checkpoint(config):
            # Starting from a plain backbone (bert-base-uncased, ...): a fresh MLP head and an unused pooling
            # layer are the SimCSE recipe, not a broken checkpoint, so transformers' load report leaves them
            # out (train.py says so in one line); anything else missing or unexpected is still reported.
            self._keys_to_ignore_on_load_missing = [r"^mlp\.dense\."]
            self._keys_to_ignore_on_load_unexpected = [r"(^|\.)pooler\.dense\.", r"^cls\.seq_relationship\."]
        if config.do_mlm:
            self._build_mlm_head(config)
        rebuild_adapters(self)  # a LoRA checkpoint's adapters, before its weights load

    def _build_mlm_head(self, config) -> None:
        """The auxiliary MLM head (``do_mlm``): BERT's and RoBERTa's hand-written ones here; a decoder has none."""
        if self.mlm_attr is None:
            raise SimCSEError(f"`do_mlm` needs a masked-LM head, which {config.model_type} (a decoder) has none of "
                              "in transformers; drop the flag")
        setattr(self, self.mlm_attr, self._mlm_head_class(config))

    def _mlm_loss(self, hidden: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        """Mean cross-entropy over the masked positions (``labels`` (B, N, L) != -100) of the MLM pass's
        last-layer states (B*N, L, H); 0, with zero gradient, when none is masked. Nothing is read back to
        the host: ``positions`` (B, K), each example's masked positions in its N*L tokens padded with -1
        (:class:`simcse.data.SimCSECollator` adds them), pick B*K rows whose number the shape gives,
        so the head scores about the masked share of the positions (a boolean mask would ask the device
        how many). Without ``positions`` every position is scored, as the original did."""
        hidden = hidden.reshape(-1, hidden.shape[-1])  # (B*N*L, H)
        labels = labels.reshape(-1)
        if positions is not None:
            valid = positions >= 0  # (B, K)
            offsets = torch.arange(positions.shape[0], device=positions.device).unsqueeze(1) * (
                labels.shape[0] // max(positions.shape[0], 1))
            rows = (positions.clamp_min(0) + offsets).reshape(-1)  # (B*K,) rows of hidden
            hidden = hidden.index_select(0, rows)
            labels = labels.index_select(0, rows).masked_fill(~valid.reshape(-1), -100)
        logits = self._mlm_logits(hidden)  # (B*K or B*N*L, V)
        total = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")
        return total / (labels != -100).sum().clamp_min(1)

    def _mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (M, V) of the masked positions' last-layer states (M, H)."""
        return getattr(self, self.mlm_attr)(hidden, self.backbone.get_input_embeddings().weight)

    def _init_weights(self, module: nn.Module) -> None:
        """Backbone init from the parent class; the MLM biases start at zero (the heads' Linear and
        LayerNorm layers get the standard std-0.02 / unit init from the parent)."""
        super()._init_weights(module)
        if isinstance(module, RobertaMLMHead):
            hf_init.zeros_(module.bias)
        elif isinstance(module, _BertPredictions):
            hf_init.zeros_(module.bias)

    @property
    def backbone(self) -> nn.Module:
        return getattr(self, self.backbone_attr)

    def _run_backbone(self, input_ids, attention_mask, token_type_ids=None, output_hidden_states=False):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "return_dict": True,
                  "output_hidden_states": output_hidden_states}
        if token_type_ids is not None and self.takes_token_types:
            kwargs["token_type_ids"] = token_type_ids
        if self.is_decoder_family:
            # Each token's position inside its own sentence, so a left-padded row embeds as a right-padded one
            # (under right padding this is 0, 1, ..., n-1 on the tokens, what the model would use anyway).
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.backbone(**kwargs)

    @property
    def mlp_head(self) -> nn.Module | None:
        """The MLP head (``mlp``), which exists only for a pooler that has one (``cls``)."""
        return getattr(self, "mlp", None)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids=None) -> torch.Tensor:
        """Inference embeddings (B, H): the pooled vector, through the MLP head only for ``cls`` when the
        head is not training-only."""
        want_hidden = self.config.pooler_type in NEEDS_HIDDEN_STATES
        outputs = self._run_backbone(input_ids, attention_mask, token_type_ids, output_hidden_states=want_hidden)
        return pool_then_head(self.config.pooler_type, attention_mask, outputs,
                              None if self.config.mlp_only_train else self.mlp_head)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        mlm_positions: torch.Tensor | None = None,
        all_layers: bool = False,
        **unused,
    ) -> ContrastiveOutput:
        if input_ids.dim() == 2:  # (B, L): plain sentence embeddings, as at inference
            return ContrastiveOutput(embeddings=self.encode(input_ids, attention_mask, token_type_ids).unsqueeze(1))
        batch, num_sent, length = input_ids.shape
        flat = lambda t: None if t is None else t.reshape(batch * num_sent, -1)  # noqa: E731  (B*N, L)
        want_hidden = self.config.pooler_type in NEEDS_HIDDEN_STATES
        if all_layers and want_hidden:
            raise SimCSEError(f"2D Matryoshka pools every layer alone, which pooler {self.config.pooler_type!r} "
                              "(built from several layers) cannot; use cls, cls_before_pooler or avg")
        flat_mask = flat(attention_mask)
        outputs = self._run_backbone(flat(input_ids), flat_mask, flat(token_type_ids),
                                     output_hidden_states=want_hidden or all_layers)
        pooled = pool_then_head(self.config.pooler_type, flat_mask, outputs, self.mlp_head)  # (B*N, H); head: always
        embeddings = pooled.view(batch, num_sent, -1)  # (B, N, H)
        layer_embeddings = None
        if all_layers:
            earlier = [pool(self.config.pooler_type, flat_mask, h) for h in outputs.hidden_states[:-1]]
            stacked = torch.stack(earlier, dim=1)  # (B*N, L, H)
            if uses_mlp_head(self.config.pooler_type):
                stacked = self.mlp(stacked)
            layer_embeddings = stacked.view(batch, num_sent, len(earlier), -1)  # (B, N, L, H)

        mlm_loss = None
        if mlm_input_ids is not None and mlm_labels is not None and self.config.do_mlm:
            mlm_out = self._run_backbone(flat(mlm_input_ids), flat_mask, flat(token_type_ids))
            mlm_loss = self._mlm_loss(mlm_out.last_hidden_state, mlm_labels, mlm_positions)
        return ContrastiveOutput(embeddings=embeddings, mlm_loss=mlm_loss, layer_embeddings=layer_embeddings)


class BertForCL(ContrastiveEncoderMixin, BertPreTrainedModel):
    backbone_attr, mlm_attr, _mlm_head_class = "bert", "cls", BertMLMHead

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self._build_heads(config)
        self.post_init()


class RobertaForCL(ContrastiveEncoderMixin, RobertaPreTrainedModel):
    backbone_attr, mlm_attr, _mlm_head_class = "roberta", "lm_head", RobertaMLMHead

    def __init__(self, config):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self._build_heads(config)
        self.post_init()


class GPT2ForCL(ContrastiveEncoderMixin, GPT2PreTrainedModel):
    """Decoder: avg / wavg / last poolers only; pad = eos with right padding (set on the tokenizer)."""

    backbone_attr, mlm_attr, is_decoder_family = "transformer", None, True

    def __init__(self, config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self._build_heads(config)
        self.post_init()


MODEL_CLASSES: dict[str, type] = {"bert": BertForCL, "roberta": RobertaForCL, "gpt2": GPT2ForCL}


def is_simcse_checkpoint(config: PretrainedConfig) -> bool:
    """True for a checkpoint saved by our trainer (or the original code): architectures name a *ForCL."""
    return any(str(arch).endswith("ForCL") for arch in (getattr(config, "architectures", None) or []))
