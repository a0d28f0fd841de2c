"""Convert a SimCSE training checkpoint into a plain Hugging Face model (the library side of
``simcse_to_huggingface.py``).

Key mapping is by prefix, never by substring (a substring rule corrupts GPT-2, whose blocks contain
``.mlp.``): ``<base_model_prefix>.X`` -> ``X``; ``mlp.dense.*`` -> ``pooler.dense.*`` for BERT/RoBERTa,
so ``BertModel(...).pooler_output`` equals the SimCSE ``cls`` embedding (a checkpoint of another pooler
has no MLP head and becomes a model without a pooling layer); MLM heads are dropped.
Checkpoints written by the original code (princeton-nlp/SimCSE on transformers 4.2.1) are first brought
to our key names by :func:`simcse.modeling.models.normalize_original_keys` (buffers dropped, the original BERT
MLM head renamed); any key still unknown is an error. Reads model.safetensors or pytorch_model.bin
(``weights_only``), checks the converted key set and every shape against the target architecture,
writes safetensors into a new directory (via a temporary directory and a rename) and never modifies
the input.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from inspect import signature

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from simcse.errors import SimCSEError
from simcse.modeling.backbones import backbone_class, mlm_module_names, wrapper_for_architectures
from simcse.modeling.lora import merge_lora
from simcse.modeling.models import normalize_original_keys

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model")
DROPPED_PREFIXES = ("cls.", "lm_head.")  # the original's MLM heads: not part of the base model


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors from model.safetensors or pytorch_model.bin (``weights_only``)."""
    safetensors_file = os.path.join(path, "model.safetensors")
    bin_file = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(safetensors_file):
        return load_file(safetensors_file)
    if os.path.isfile(bin_file):
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    if any(name.endswith(".index.json") for name in os.listdir(path)):
        raise SimCSEError(f"{path!r} holds a sharded checkpoint; re-save it unsharded (max_shard_size='100GB')")
    raise SimCSEError(f"{path!r} has neither model.safetensors nor pytorch_model.bin")


def convert_state_dict(state: dict[str, torch.Tensor], prefix: str, has_pooler: bool,
                       mlm_names: tuple[str, ...] = ()) -> tuple[dict, list[str]]:
    """Map wrapper keys (already in our names) to base-model keys; the MLM head's modules (``mlm_names``,
    besides the original's) are dropped. Returns (converted, dropped keys)."""
    dropped_prefixes = DROPPED_PREFIXES + tuple(name + "." for name in mlm_names)
    converted, dropped = {}, []
    for key, tensor in state.items():
        if key.startswith(prefix + "."):
            converted[key[len(prefix) + 1:]] = tensor
        elif key.startswith("mlp.dense.") and has_pooler:
            converted["pooler.dense." + key[len("mlp.dense."):]] = tensor
        elif key.startswith("mlp.") or key.startswith(dropped_prefixes):
            dropped.append(key)
        else:
            raise SimCSEError(f"unexpected key {key!r} in the checkpoint: it is neither backbone ({prefix}.*) "
                              "nor a head")
    return converted, dropped


def _tanh_pooler(base) -> bool:
    """The model has a pooling layer tanh(dense(h_cls)), the form of SimCSE's MLP head."""
    pooler = getattr(base, "pooler", None)
    return (pooler is not None and isinstance(getattr(pooler, "dense", None), torch.nn.Linear)
            and isinstance(getattr(pooler, "activation", None), torch.nn.Tanh))


def convert(path: str, output_dir: str, overwrite: bool = False) -> dict:
    """Write the plain Hugging Face model of the training checkpoint ``path`` into ``output_dir``.

    Returns a report: input, output_dir, architecture, keys (tensors written) and dropped (head
    tensors and the original code's buffers / tied decoders that are not part of the base model).
    """
    path = os.path.abspath(path)
    output_dir = os.path.abspath(output_dir)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise SimCSEError(f"`path` {path!r} has no config.json; give a checkpoint directory written by train.py")
    if output_dir == path:
        raise SimCSEError("`output_dir` equals `path`; the input would be overwritten. Choose another `output_dir`")
    if os.path.exists(output_dir) and os.listdir(output_dir) and not overwrite:
        raise SimCSEError(f"`output_dir` {output_dir!r} exists and is not empty; pass `overwrite` or choose another")

    config = AutoConfig.from_pretrained(path)
    wrapper = wrapper_for_architectures(config)
    if wrapper is None:
        raise SimCSEError(f"{path!r} is not a SimCSE training checkpoint (architectures={config.architectures}); "
                          "it can be evaluated or used as it is")
    if getattr(config, "simcse_lora", None):  # LoRA adapters folded into their base weights first
        model = wrapper.from_pretrained(path)
        merge_lora(model)
        state, dropped_original = model.state_dict(), []
        del config.simcse_lora  # the plain model holds no adapters
    else:
        state, dropped_original = normalize_original_keys(load_state_dict(path), wrapper.base_model_prefix)
    # The MLP head of a cls checkpoint becomes the backbone's own pooling layer where the family has one of
    # the same form (tanh(W h + b): BERT, RoBERTa, XLM-R, MPNet); a checkpoint without the head becomes a
    # model without a pooling layer.
    head = any(k.startswith("mlp.dense.") for k in state)
    pooling = {"add_pooling_layer": head} if "add_pooling_layer" in signature(
        backbone_class(config.model_type).__init__).parameters else {}
    base = AutoModel.from_config(config, **pooling)
    has_pooler = _tanh_pooler(base)
    if head and not has_pooler and not getattr(config, "mlp_only_train", False):
        raise SimCSEError(f"{path!r} embeds through its MLP head (pooler cls), which a plain "
                          f"{type(base).__name__} has no layer for; train with `mlp_only_train` (the head only "
                          "in training) or another pooler, or use the checkpoint as it is (the tool and the "
                          "sentence-transformers export read it)")
    converted, dropped = convert_state_dict(state, wrapper.base_model_prefix, has_pooler,
                                            mlm_module_names(config) if getattr(config, "do_mlm", False) else ())
    dropped = dropped_original + dropped

    expected = base.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise SimCSEError(f"converted keys do not match {type(base).__name__}: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    for key, tensor in converted.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise SimCSEError(f"shape mismatch for {key}: checkpoint {tuple(tensor.shape)}, "
                              f"{type(base).__name__} {tuple(expected[key].shape)}")
    base.load_state_dict(converted, strict=True)
    base.config.architectures = [type(base).__name__]

    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".converting-", dir=parent)
    try:
        base.save_pretrained(staging, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if os.path.isfile(os.path.join(path, name)):
                shutil.copy2(os.path.join(path, name), staging)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"input": path, "output_dir": output_dir, "architecture": type(base).__name__,
            "keys": len(converted), "dropped": dropped}
