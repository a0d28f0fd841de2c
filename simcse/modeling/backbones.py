"""Any Hugging Face ``AutoModel`` as the backbone: the wrapper class of a checkpoint, decided by its config.

BERT, RoBERTa and GPT-2 keep their hand-written wrappers (:mod:`simcse.modeling.models`: the original
SimCSE key names and MLM heads). Every other family gets one generated class, ``<Family>ForCL``: the
family's own ``PreTrainedModel`` base (so its weight init, attention settings and ``base_model_prefix``
apply, and a plain checkpoint of the family, or of its causal-LM / masked-LM variant, loads under that
prefix as Hugging Face loads it), the family's ``AutoModel`` class built without its pooling layer as the
backbone, and the SimCSE heads and forward of :class:`~simcse.modeling.models.ContrastiveEncoderMixin`.
The class is made once per family and registered in this module under its name, so checkpoints name it in
``architectures`` and pickling finds it.

The auxiliary MLM head (``do_mlm``) of an encoder family is its own masked-LM class's head: the modules of
``<Family>ForMaskedLM`` other than the backbone, under the same names (so the MLM head of a pretrained
masked-LM checkpoint loads, and its decoder is tied to the input embeddings as that class ties it), applied
by that class's own forward with the backbone replaced by the states already computed (:class:`_Computed`).

Encoder or decoder is a fact of the family too: a model type with a causal-LM class and no masked-LM
class in transformers' auto mappings is a decoder (GPT-2, Llama, Mistral, Qwen2/3, Gemma, ...); one with a
masked-LM class (BERT, RoBERTa, XLM-R, MPNet, DeBERTa-v2, DistilBERT, ELECTRA, ModernBERT) is an encoder.
"""

from __future__ import annotations

import inspect
import sys

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.auto import modeling_auto

from simcse.errors import SimCSEError
from simcse.modeling.models import MODEL_CLASSES, ContrastiveEncoderMixin
from simcse.modeling.poolers import is_decoder

_GENERATED: dict[str, type] = {}


def _transformers_class(name: str | tuple | list, model_type: str) -> type:
    import transformers

    cls = getattr(transformers, name if isinstance(name, str) else name[0], None)
    if cls is None:
        raise SimCSEError(f"transformers names {name!r} for model type {model_type!r} but cannot import it; "
                          "upgrade transformers")
    return cls


def backbone_class(model_type: str) -> type:
    """The family's ``AutoModel`` class (e.g. ``Qwen2Model``) for a ``config.model_type``."""
    name = modeling_auto.MODEL_MAPPING_NAMES.get(model_type)
    if name is None:
        raise SimCSEError(f"model type {model_type!r} has no AutoModel class in transformers; a sentence encoder "
                          "needs a backbone that returns token states (last_hidden_state)")
    return _transformers_class(name, model_type)


def masked_lm_class(model_type: str) -> type | None:
    """The family's masked-LM class (``MPNetForMaskedLM``), or None where it has none (decoders)."""
    name = modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES.get(model_type)
    return None if name is None else _transformers_class(name, model_type)


class _Computed(nn.Module):
    """Stands in for the backbone inside a masked-LM class's forward: returns the states given (1, M, H) and
    lends every other attribute (``embeddings``, which DeBERTa-v2's head reads) to the real backbone."""

    def __init__(self, owner: nn.Module, states: torch.Tensor):
        super().__init__()
        self.__dict__["_owner"], self.__dict__["_states"] = owner, states  # not registered: no parameters

    def forward(self, *args, **kwargs) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=self.__dict__["_states"])

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_owner"].backbone, name)


def _build_family_mlm_head(self, config) -> None:
    """The family's masked-LM head, built from its ``ForMaskedLM`` class (on the meta device, then the head's
    own modules materialised here; ``post_init`` initialises them and ties the decoder)."""
    masked_lm = masked_lm_class(config.model_type)
    if masked_lm is None:
        raise SimCSEError(f"`do_mlm` needs a masked-LM head, which {config.model_type} (a decoder) has none of "
                          "in transformers; drop the flag")
    with torch.device("meta"):
        shell = masked_lm(config)
    names = [name for name in shell._modules if name != self.backbone_attr]
    for name in names:
        module = shell._modules[name].to_empty(device="cpu")
        self._modules[name] = module  # the masked-LM class's names, even where a property shadows one (head)
        shell._modules[name] = module
    self._mlm_names = tuple(names)
    self._tied_weights_keys = dict(shell._tied_weights_keys or {})
    self.__dict__["_mlm_shell"] = shell  # not a submodule: its modules are ours, registered above


def _family_mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
    """The masked-LM class's own forward over the masked positions' states (M, H) -> logits (M, V)."""
    shell = self.__dict__["_mlm_shell"]
    states = hidden.unsqueeze(0)  # one "sentence" of the M masked positions: the head is position-wise
    ones = torch.ones(states.shape[:2], dtype=torch.long, device=hidden.device)
    shell._modules[self.backbone_attr] = _Computed(self, states)
    try:
        return shell(input_ids=ones, attention_mask=ones, return_dict=True).logits[0]
    finally:
        shell._modules[self.backbone_attr] = None  # no reference to the states or the model kept


def mlm_module_names(config: PretrainedConfig) -> tuple[str, ...]:
    """The top-level module names of the family's MLM head (``cls`` for BERT, ``lm_head`` for RoBERTa /
    MPNet / XLM-R, ``vocab_*`` for DistilBERT, ...); empty for a decoder. Conversion drops them."""
    wrapper = model_class_for(config.model_type)
    if wrapper.mlm_attr:
        return (wrapper.mlm_attr,)
    masked_lm = masked_lm_class(config.model_type)
    if masked_lm is None:
        return ()
    with torch.device("meta"):
        shell = masked_lm(config)
    return tuple(name for name in shell._modules if name != wrapper.backbone_attr)


def _family_base(backbone: type) -> type:
    """The family's ``PreTrainedModel`` subclass (``Qwen2PreTrainedModel``), parent of its AutoModel class."""
    for parent in backbone.__mro__[1:]:
        if issubclass(parent, PreTrainedModel) and parent is not PreTrainedModel:
            return parent
    raise SimCSEError(f"{backbone.__name__} has no family PreTrainedModel base class; it cannot be wrapped")


def _accepts(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.__init__).parameters


def _generated_class(model_type: str) -> type:
    backbone = backbone_class(model_type)
    name = backbone.__name__.removesuffix("Model") + "ForCL"
    if name in _GENERATED:
        return _GENERATED[name]
    base = _family_base(backbone)
    prefix = base.base_model_prefix
    no_pooler = {"add_pooling_layer": False} if _accepts(backbone, "add_pooling_layer") else {}

    def __init__(self, config):
        base.__init__(self, config)
        setattr(self, prefix, backbone(config, **no_pooler))
        self._build_heads(config)
        self.post_init()

    # token_type_ids only where the backbone's forward takes them (DistilBERT, ModernBERT, decoders do not)
    takes_token_types = "token_type_ids" in inspect.signature(backbone.forward).parameters
    cls = type(name, (ContrastiveEncoderMixin, base), {
        "__init__": __init__, "__module__": __name__, "__qualname__": name,
        "backbone_attr": prefix, "mlm_attr": None, "takes_token_types": takes_token_types,
        "is_decoder_family": is_decoder(model_type),
        "_build_mlm_head": _build_family_mlm_head, "_mlm_logits": _family_mlm_logits,
        "__doc__": f"SimCSE wrapper over {backbone.__name__} (generated by simcse.modeling.backbones).",
    })
    _GENERATED[name] = cls
    setattr(sys.modules[__name__], name, cls)  # importable by name: pickling, architectures
    return cls


def model_class_for(model_type: str) -> type:
    """The wrapper class for a ``config.model_type`` (never guessed from the path): the original's three
    hand-written wrappers, or the generated one of any other family."""
    if model_type in MODEL_CLASSES:
        return MODEL_CLASSES[model_type]
    return _generated_class(model_type)


def wrapper_for_architectures(config: PretrainedConfig) -> type | None:
    """The wrapper class a checkpoint's ``architectures`` names (``*ForCL``), or None for a plain model."""
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("ForCL"):
            cls = model_class_for(config.model_type)
            if cls.__name__ == arch:
                return cls
    return None


def make_bidirectional(config: PretrainedConfig) -> None:
    """Let a decoder attend in both directions (LLM2Vec's first step, arXiv:2404.05961): ``is_causal = False``
    in its config, which transformers' mask builder reads (and which is saved with the model, so inference
    attends the same way). An encoder already does: refused."""
    if not is_decoder(config.model_type):
        raise SimCSEError(f"`bidirectional` applies to decoders; {config.model_type!r} is an encoder, whose "
                          "attention is bidirectional already: drop the flag")
    config.is_causal = False


@torch.no_grad()
def check_bidirectional(model) -> None:
    """Refuse a model whose attention ignores ``is_causal = False``: the first token's state must change when
    the last token changes (two 4-token forward passes)."""
    device = next(model.parameters()).device
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 5]], device=device) % model.config.vocab_size
    mask = torch.ones_like(ids)
    was_training = model.training
    model.eval()
    states = model._run_backbone(ids, mask).last_hidden_state
    model.train(was_training)
    if torch.allclose(states[0, 0], states[1, 0]):
        raise SimCSEError(f"`bidirectional`: the attention of this {model.config.model_type} model "
                          f"({getattr(model.config, '_attn_implementation', '?')}) stays causal; run it with "
                          "attn_implementation sdpa or eager, or drop the flag")
