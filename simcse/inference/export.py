"""Lay a converted SimCSE model out as a sentence-transformers model (``--sentence_transformers``)::

    python simcse_to_huggingface.py --path result/my-sup-simcse --output_dir out --sentence_transformers

after which, in Python, ``SentenceTransformer("out").encode(sentences)`` equals
``SimCSE("result/my-sup-simcse").encode(sentences, normalize_to_unit=False)`` (``tests/test_export.py``
checks this for every pooler).

The pipeline reproduces the pooler SimCSE uses at inference (:func:`simcse.modeling.checkpoint.pooler_from_config`),
with no approximation. Checked against the sentence-transformers 6.2 source:

=====================  ==========================================================================
our pooler             sentence-transformers modules after the Transformer
=====================  ==========================================================================
cls                    Pooling(cls) + Dense(H, H, tanh) holding the MLP head (``mlp.dense``)
cls_before_pooler      Pooling(cls) (``cls`` with ``mlp_only_train`` exports as this)
avg                    Pooling(mean)
avg_top2               WeightedLayerPooling(layer_start=L-1, weights [1, 1]) + Pooling(mean):
                       Σ w_l h_l / Σ w_l = (h[-2] + h[-1]) / 2
avg_first_last         WeightedLayerPooling(layer_start=1, weights [1, 0, ..., 0, 1]) + Pooling(mean):
                       (h[1] + h[L]) / 2 (hidden_states index 1 = the first layer, as ours)
wavg                   Pooling(weightedmean): ST weights token t by its 1-based position counted
                       from the first non-padding token, times the mask, i.e. cumsum(m)·m as ours
last                   Pooling(lasttoken): the last position whose mask is 1
=====================  ==========================================================================

Pooling(cls) takes the first non-padding token, which is [CLS] / <s> under right padding. The two
layer-mixing poolers need ``output_hidden_states: true`` in config.json (ST only passes the hidden
states on when the config asks for them), which this export sets. No Normalize module: the exported
model returns the same vectors as the SimCSE tool with ``normalize_to_unit=False``; cosine scores are
unaffected, and ``encode(..., normalize_embeddings=True)`` gives unit vectors when wanted.

Config files use the long-standing format (``sentence_transformers.models.*`` module types,
``pooling_mode_*`` booleans, ``word_embedding_dimension``), which sentence-transformers 6.2 reads
without warnings (its ``Pooling.load_config`` and import shims translate them) and older releases read
as well. ``max_seq_length`` (default 128) is written to sentence_bert_config.json.
"""

from __future__ import annotations

import json
import os

from safetensors.torch import load_file, save_file

from simcse.errors import SimCSEError
from simcse.files import atomic_write_json
from simcse.modeling.checkpoint import pooler_from_config
from simcse.modeling.encoder import check_max_length
from simcse.modeling.poolers import ST_LEGACY_MODE_KEYS, ST_POOLING_MODE, layer_weights, uses_mlp_head

DEFAULT_MAX_SEQ_LENGTH = 128
SUPPORTED_POOLERS = tuple(ST_POOLING_MODE)


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def export_pooler(config, source: str) -> str:
    """The inference pooler of a checkpoint config (object or dict), or a SimCSEError saying why it
    cannot be exported. Call it before converting, so nothing is written for a model that would fail."""
    if isinstance(config, dict):
        from types import SimpleNamespace

        config = SimpleNamespace(**config)
    pooler = pooler_from_config(config)
    if pooler is None:
        raise SimCSEError(f"{source!r} records no pooler_type in config.json; export a checkpoint written by train.py")
    if pooler not in ST_POOLING_MODE:
        raise SimCSEError(f"pooler {pooler!r} of {source!r} has no sentence-transformers export; "
                          f"supported: {', '.join(SUPPORTED_POOLERS)}")
    return pooler


def check_max_seq_length(max_seq_length: int, config, source: str) -> None:
    """``--max_seq_length`` of the export, checked against the model's positions (``source``: for callers)."""
    check_max_length(max_seq_length, config)


def _pooling_config(hidden: int, mode: str) -> dict:
    config = {"word_embedding_dimension": hidden}
    config.update({key: name == mode for name, key in ST_LEGACY_MODE_KEYS.items()})
    config["include_prompt"] = True
    return config


def write_sentence_transformers(model_dir: str, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH) -> dict:
    """Add the sentence-transformers files to a converted model directory (config.json carrying
    ``pooler_type``, model.safetensors, tokenizer). Returns {"pooler", "modules", "files"}."""
    config_file = os.path.join(model_dir, "config.json")
    config = _read_json(config_file)
    pooler = export_pooler(config, model_dir)
    check_max_seq_length(max_seq_length, config, model_dir)
    from transformers import AutoConfig

    hidden = AutoConfig.from_pretrained(model_dir).hidden_size  # every family's width (DistilBERT: dim, GPT-2: n_embd)
    written: list[str] = []

    def put(relative: str, payload) -> None:
        atomic_write_json(os.path.join(model_dir, relative), payload)
        written.append(relative)

    modules = [("Transformer", "")]
    num_layers = config.get("num_hidden_layers") or config.get("n_layer")
    mixing = layer_weights(pooler, num_layers)
    if mixing is not None:
        layer_start, weights = mixing
        folder = f"{len(modules)}_WeightedLayerPooling"
        put(f"{folder}/config.json", {"word_embedding_dimension": hidden, "layer_start": layer_start,
                                      "num_hidden_layers": num_layers})
        save_file({"layer_weights": weights.contiguous()}, os.path.join(model_dir, folder, "model.safetensors"))
        written.append(f"{folder}/model.safetensors")
        modules.append(("WeightedLayerPooling", folder))
        config["output_hidden_states"] = True  # ST hands hidden states on only when the config asks
        put("config.json", config)
    folder = f"{len(modules)}_Pooling"
    put(f"{folder}/config.json", _pooling_config(hidden, ST_POOLING_MODE[pooler]))
    modules.append(("Pooling", folder))
    if uses_mlp_head(pooler):
        state = load_file(os.path.join(model_dir, "model.safetensors"))
        if "pooler.dense.weight" not in state:
            raise SimCSEError(f"{model_dir!r} has no pooler.dense weights to hold the cls MLP head; "
                              "convert the checkpoint with simcse_to_huggingface.py first")
        folder = f"{len(modules)}_Dense"
        put(f"{folder}/config.json", {"in_features": hidden, "out_features": hidden, "bias": True,
                                      "activation_function": "torch.nn.modules.activation.Tanh"})
        dense = {"linear.weight": state["pooler.dense.weight"].contiguous(),
                 "linear.bias": state["pooler.dense.bias"].contiguous()}
        save_file(dense, os.path.join(model_dir, folder, "model.safetensors"))
        written.append(f"{folder}/model.safetensors")
        modules.append(("Dense", folder))

    put("modules.json", [{"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
                         for i, (kind, path) in enumerate(modules)])
    put("sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    # the run's --query_prompt / --document_prompt, by the names sentence-transformers' encode_query /
    # encode_document look up ("query", "document")
    prompts = {name: text for name, text in (config.get("simcse_prompts") or {}).items() if text}
    put("config_sentence_transformers.json", {"model_type": "SentenceTransformer", "prompts": prompts,
                                              "default_prompt_name": None, "similarity_fn_name": "cosine"})
    written += _ensure_padding_token(model_dir, config.get("model_type", ""))
    return {"pooler": pooler, "modules": [kind for kind, _ in modules], "files": written}


def _ensure_padding_token(model_dir: str, model_type: str) -> list[str]:
    """Decoders ship without a padding token (GPT-2) and, except GPT-2, embed with an end-of-sequence token
    appended (:func:`simcse.modeling.encoder.prepare_tokenizer`); ST pads batches and tokenizes with the saved
    tokenizer, so save it prepared as training and the tool use it."""
    from transformers import AutoTokenizer

    from simcse.modeling.encoder import prepare_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    before = (tokenizer.pad_token, tokenizer("a")["input_ids"])
    prepare_tokenizer(tokenizer, model_type)
    if (tokenizer.pad_token, tokenizer("a")["input_ids"]) == before:
        return []
    tokenizer.save_pretrained(model_dir)
    return ["tokenizer files (pad token = eos)" if before[0] is None else "tokenizer files (eos appended)"]
