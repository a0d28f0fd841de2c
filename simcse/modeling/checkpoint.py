"""Reading what a checkpoint says about itself: the pooler of a train.py checkpoint (its config), of a
sentence-transformers folder (its ``modules.json`` and pooling config), or the rule when neither says
(:func:`resolve_pooler`). One home for the tool, the export and the multi-seed runner.

Imports: the foundation only (and the pooler records beside it).
"""

from __future__ import annotations

import json
import os
import warnings

import torch

from simcse.errors import SimCSEError
from simcse.modeling.poolers import ST_LEGACY_MODE_KEYS, ST_POOLING_TO_POOLER


def pooler_from_config(config) -> str | None:
    """The inference pooler recorded in a SimCSE checkpoint's config (rule 2), or None when absent."""
    pooler_type = getattr(config, "pooler_type", None)
    if pooler_type is None:
        return None
    if pooler_type == "cls" and getattr(config, "mlp_only_train", False):
        return "cls_before_pooler"
    return pooler_type


def _model_file(model_name_or_path: str, filename: str) -> str | None:
    """Path of ``filename`` in a local model directory or a (cached) hub repository, None if absent."""
    local = os.path.join(os.path.expanduser(model_name_or_path), filename)
    if os.path.isdir(os.path.expanduser(model_name_or_path)):
        return local if os.path.isfile(local) else None
    from transformers.utils import cached_file

    try:
        return cached_file(model_name_or_path, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except OSError:
        return None


def _read_json(path: str) -> object:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def pooler_from_sentence_transformers(model_name_or_path: str) -> str | None:
    """The pooler of a sentence-transformers layout (rule 3), None when there is no ``modules.json``."""
    modules_file = _model_file(model_name_or_path, "modules.json")
    if modules_file is None:
        return None
    modules = _read_json(modules_file)
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    others = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if others or kinds.count("Pooling") != 1:
        raise SimCSEError(
            f"{model_name_or_path!r} is a sentence-transformers pipeline with modules {kinds}; the tool reproduces "
            "only Transformer + Pooling (+ Normalize). Pass pooler= to embed without the other modules, or use "
            "sentence_transformers.SentenceTransformer for this model"
        )
    folder = modules[kinds.index("Pooling")]["path"]
    config_file = _model_file(model_name_or_path, f"{folder}/config.json")
    if config_file is None:
        raise SimCSEError(f"{model_name_or_path!r}: modules.json names {folder!r} but {folder}/config.json is missing")
    config = _read_json(config_file)
    mode = config.get("pooling_mode")
    if mode is None:  # the long-standing format: one boolean per mode
        mode = [mode for mode, key in ST_LEGACY_MODE_KEYS.items() if config.get(key)] or ["mean"]
    modes = [mode] if isinstance(mode, str) else list(mode)
    if len(modes) != 1 or modes[0] not in ST_POOLING_TO_POOLER:
        raise SimCSEError(
            f"{model_name_or_path!r} pools with sentence-transformers mode(s) {modes}, which the tool does not "
            f"implement (supported: {', '.join(ST_POOLING_TO_POOLER)}); pass pooler= to choose one of ours"
        )
    return ST_POOLING_TO_POOLER[modes[0]]


def _weight_names(model_name_or_path: str) -> list[str]:
    """Parameter names stored in a checkpoint, read without loading the tensors ([] if unknown)."""
    from safetensors import safe_open

    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_file = _model_file(model_name_or_path, index_name)
        if index_file is not None:
            return list(_read_json(index_file).get("weight_map", {}))
    weights = _model_file(model_name_or_path, "model.safetensors")
    if weights is not None:
        with safe_open(weights, framework="pt") as handle:
            return list(handle.keys())
    weights = _model_file(model_name_or_path, "pytorch_model.bin")
    if weights is not None:
        try:
            return list(torch.load(weights, map_location="cpu", weights_only=True, mmap=True))
        except RuntimeError:  # a pre-1.6 (non-zip) .bin cannot be memory-mapped
            return list(torch.load(weights, map_location="cpu", weights_only=True))
    return []


def resolve_pooler(model_name_or_path: str, config, pooler: str | None) -> tuple[str, str]:
    """(pooler, source) by the rule in the module docstring."""
    if pooler is not None:
        return pooler, "argument"
    from_config = pooler_from_config(config)
    if from_config is not None:
        return from_config, "config"
    from_st = pooler_from_sentence_transformers(model_name_or_path)
    if from_st is not None:
        return from_st, "sentence-transformers"
    if any(name.endswith("pooler.dense.weight") for name in _weight_names(model_name_or_path)):
        warnings.warn(
            f"{model_name_or_path!r} records no pooler; using 'cls' (the [CLS] state through the model's trained "
            "pooling layer, right for supervised SimCSE models). Pass pooler='cls_before_pooler' for "
            "unsupervised SimCSE models, or pooler='avg' for mean-pooling encoders",
            UserWarning,
            stacklevel=3,
        )
        return "cls", "default"
    raise SimCSEError(
        f"{model_name_or_path!r} records no pooler and has no trained pooling layer, so none can be chosen "
        "safely; pass pooler= (e.g. pooler='avg' for mean-pooling encoders, 'cls_before_pooler' for [CLS])"
    )


