"""Poolers: turn token states into one sentence vector. The single implementation used by training,
``evaluation.py`` and the :class:`simcse.SimCSE` tool. The encoder poolers are those of princeton-nlp/SimCSE
``simcse/modeling/models.py`` (``Pooler``); ``wavg`` is the weighted mean of SGPT (Muennighoff 2022, arXiv:2202.08904).

Notation: h (B, T, H) token states, m (B, T) attention mask (1 = token, 0 = padding).

* ``cls`` / ``cls_before_pooler``: h[:, 0]. For ``cls`` the caller applies the MLP head (our wrapper's
  ``mlp`` or BERT's own ``pooler``) on top; the token selection is the same.
* ``avg``: Σ_t h_t m_t / Σ_t m_t over the last layer.
* ``avg_top2``: the same over (h[-1] + h[-2]) / 2.
* ``avg_first_last``: the same over (h[1] + h[-1]) / 2. ``hidden_states[1]`` is the output of the first
  transformer layer; index 0 is the embedding layer (the 2021 SimCSE bug, fixed upstream in 2022).
* ``wavg`` (decoders): w_t = m_t · Σ_{s<=t} m_s, i.e. the 1-based position inside the sentence with
  zero weight on padding; pooled = Σ_t w_t h_t / Σ_t w_t. (The Jittor GPT-2 code forgot the ``· m_t``
  and gave right padding a weight; not reproduced.)
* ``last`` (decoders, ours): the state of the last non-padding token (works for left or right padding).

Each pooler is one :class:`Pooler` record in :data:`POOLER_RECORDS`, holding everything the code base
knows about it; the lists of encoder / decoder poolers, the poolers that need hidden states, the
sentence-transformers pooling modes of the export and the tool, and the help of ``--pooler_type`` are all
derived from the records. Adding a pooler is one record here plus its rows in ``tests/test_poolers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from simcse.errors import SimCSEError

PoolFn = Callable[[torch.Tensor, torch.Tensor, Sequence[torch.Tensor] | None], torch.Tensor]


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of states (B, T, H) over the positions where mask (B, T) is 1 -> (B, H)."""
    weights = mask.to(states.dtype).unsqueeze(-1)  # (B, T, 1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _cls(mask, last, hidden_states):
    return last[:, 0]


def _avg(mask, last, hidden_states):
    return masked_mean(last, mask)


def _layer_mean(layers: tuple[int, ...]) -> PoolFn:
    """Masked mean over the average of ``hidden_states[i]`` for i in ``layers`` (0 = embedding layer)."""
    def fn(mask, last, hidden_states):
        mixed = hidden_states[layers[0]]
        for index in layers[1:]:
            mixed = mixed + hidden_states[index]
        return masked_mean(mixed / float(len(layers)), mask)
    return fn


def _wavg(mask, last, hidden_states):
    m = mask.to(last.dtype)  # (B, T)
    weights = (torch.cumsum(m, dim=1) * m).unsqueeze(-1)  # (B, T, 1): 1, 2, ..., len, 0 on padding
    return (last * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _last(mask, last, hidden_states):
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)  # (1, T)
    index = (positions * mask.long()).argmax(dim=1)  # (B,): last position holding a token
    return last[torch.arange(last.shape[0], device=last.device), index]


@dataclass(frozen=True)
class Pooler:
    """Everything known about one pooler.

    name: the ``--pooler_type`` / ``pooler=`` value. help: one line for ``--pooler_type``'s help.
    encoders / decoders: fits encoders with a [CLS] token (BERT, RoBERTa) / causal LMs (GPT-2, ...).
    layers: ``hidden_states`` indices averaged before the token mean (needs ``output_hidden_states``);
    empty = the last layer. mlp_head: the SimCSE MLP head goes on top (``cls`` only).
    st_mode: the sentence-transformers ``Pooling`` mode computing the same token pooling (after a
    ``WeightedLayerPooling`` when ``layers`` is set, and a Dense when ``mlp_head``); "" = no export.
    """

    name: str
    help: str
    fn: PoolFn | None = None  # (mask, last layer, hidden_states) -> (B, H); None: the mean over ``layers``
    encoders: bool = True
    decoders: bool = False
    layers: tuple[int, ...] = ()
    mlp_head: bool = False
    st_mode: str = ""

    @property
    def needs_hidden_states(self) -> bool:
        return bool(self.layers)

    @property
    def pool_fn(self) -> PoolFn:
        return _layer_mean(self.layers) if self.layers else self.fn


POOLER_RECORDS: dict[str, Pooler] = {record.name: record for record in (
    Pooler("cls", "[CLS] state through the MLP head", _cls, mlp_head=True, st_mode="cls"),
    Pooler("cls_before_pooler", "[CLS] state, no head", _cls, st_mode="cls"),
    Pooler("avg", "mean of the last layer", _avg, decoders=True, st_mode="mean"),
    Pooler("avg_top2", "mean of the last two layers' average", layers=(-1, -2), st_mode="mean"),
    Pooler("avg_first_last", "mean of the first and last layers' average", layers=(1, -1), st_mode="mean"),
    Pooler("wavg", "position-weighted mean (decoders)", _wavg, encoders=False, decoders=True,
           st_mode="weightedmean"),
    Pooler("last", "last non-padding token (decoders)", _last, encoders=False, decoders=True,
           st_mode="lasttoken"),
)}

POOLERS: dict[str, PoolFn] = {name: record.pool_fn for name, record in POOLER_RECORDS.items()}
ALL_POOLERS = tuple(POOLER_RECORDS)
ENCODER_POOLERS = tuple(name for name, record in POOLER_RECORDS.items() if record.encoders)
DECODER_POOLERS = tuple(name for name, record in POOLER_RECORDS.items() if record.decoders)
# Poolers that read intermediate layers: the encoder must run with output_hidden_states=True.
NEEDS_HIDDEN_STATES = frozenset(name for name, record in POOLER_RECORDS.items() if record.needs_hidden_states)
# Poolers with the SimCSE MLP head on top.
MLP_HEAD_POOLERS = frozenset(name for name, record in POOLER_RECORDS.items() if record.mlp_head)
#: our pooler -> the sentence-transformers Pooling mode of its export (poolers without one are not exported).
ST_POOLING_MODE = {name: record.st_mode for name, record in POOLER_RECORDS.items() if record.st_mode}
#: sentence-transformers Pooling mode -> the pooler reading a plain Transformer + Pooling pipeline: the one
#: pooling the last layer with no head.
#: sentence-transformers pooling mode -> the boolean key of its older Pooling config (``pooling_mode_*``),
#: written by the export and read back by the tool.
ST_LEGACY_MODE_KEYS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                       "max": "pooling_mode_max_tokens", "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
                       "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
ST_POOLING_TO_POOLER = {record.st_mode: name for name, record in POOLER_RECORDS.items()
                        if record.st_mode and not record.layers and not record.mlp_head}
POOLER_HELP = "; ".join(f"{name}: {record.help}" for name, record in POOLER_RECORDS.items())


def uses_mlp_head(pooler_type: str) -> bool:
    return pooler_type in MLP_HEAD_POOLERS


def inference_pooler(pooler_type: str, mlp_only_train: bool) -> str:
    """The ``evaluation.py --pooler`` equal to a training run's own dev scoring (the model's ``encode``):
    a training-only MLP head is dropped at inference (SimCSE's ``--mlp_only_train``), so ``cls`` with it
    is scored as ``cls_before_pooler``; every other pooler is itself."""
    return "cls_before_pooler" if uses_mlp_head(pooler_type) and mlp_only_train else pooler_type


def layer_weights(pooler_type: str, num_layers: int) -> tuple[int, torch.Tensor] | None:
    """(layer_start, weights over hidden_states[layer_start:]) whose weighted mean is the pooler's layer
    average (sentence-transformers' ``WeightedLayerPooling``), or None for a last-layer pooler."""
    layers = POOLER_RECORDS[pooler_type].layers
    if not layers:
        return None
    indices = [index if index >= 0 else num_layers + 1 + index for index in layers]  # hidden_states: L + 1
    start = min(indices)
    weights = torch.zeros(num_layers + 1 - start)
    for index in indices:
        weights[index - start] += 1.0
    return start, weights


def is_decoder(model_type: str) -> bool:
    """A causal language model (no [CLS] token): a model type with a causal-LM class and no masked-LM class
    in transformers' auto mappings (GPT-2, Llama, Mistral, Qwen2/3, Gemma, ...; BERT and RoBERTa have both)."""
    from transformers.models.auto import modeling_auto

    return (model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and model_type not in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def valid_poolers(model_type: str) -> tuple[str, ...]:
    return DECODER_POOLERS if is_decoder(model_type) else ENCODER_POOLERS


def check_pooler(pooler_type: str, model_type: str, origin: str = "") -> None:
    """Raise SimCSEError naming the pooler and the valid choices when it does not fit the architecture;
    ``origin`` (e.g. "pooler from config") is added to the message."""
    suffix = f" ({origin})" if origin else ""
    if pooler_type not in POOLER_RECORDS:
        raise SimCSEError(f"unknown pooler {pooler_type!r}; choose one of {', '.join(ALL_POOLERS)}{suffix}")
    allowed = valid_poolers(model_type)
    if pooler_type not in allowed:
        kind = "a decoder without a [CLS] token" if is_decoder(model_type) else "an encoder"
        raise SimCSEError(
            f"pooler {pooler_type!r} does not fit model type {model_type!r} ({kind}); "
            f"use one of {', '.join(allowed)}{suffix}"
        )


def pool(
    pooler_type: str,
    attention_mask: torch.Tensor,
    last_hidden_state: torch.Tensor,
    hidden_states: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Pool (B, T, H) token states into (B, H) sentence vectors (no MLP head; see module docstring)."""
    try:
        fn = POOLERS[pooler_type]
    except KeyError:
        raise ValueError(f"unknown pooler {pooler_type!r}; choose one of {', '.join(ALL_POOLERS)}") from None
    if pooler_type in NEEDS_HIDDEN_STATES and hidden_states is None:
        raise ValueError(f"pooler {pooler_type!r} needs the encoder's hidden_states (output_hidden_states=True)")
    return fn(attention_mask, last_hidden_state, hidden_states)
