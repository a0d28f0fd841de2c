"""Poolers: turn token states into one sentence vector. The single implementation used by training,
``evaluation.py`` and the :class:`simcse.SimCSE` tool. The encoder poolers are those of princeton-nlp/SimCSE
``simcse/models.py`` (``Pooler``); ``wavg`` is the weighted mean of SGPT (Muennighoff 2022, arXiv:2202.08904).

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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

ENCODER_POOLERS = ("cls", "cls_before_pooler", "avg", "avg_top2", "avg_first_last")
DECODER_POOLERS = ("avg", "wavg", "last")
ALL_POOLERS = tuple(dict.fromkeys(ENCODER_POOLERS + DECODER_POOLERS))
# Poolers that read intermediate layers: the encoder must run with output_hidden_states=True.
NEEDS_HIDDEN_STATES = frozenset({"avg_top2", "avg_first_last"})
# Causal language models: no [CLS] token, right padding with pad = eos.
DECODER_MODEL_TYPES = frozenset({"gpt2", "gpt_neo", "gptj", "gpt_neox", "opt", "llama", "mistral", "qwen2"})


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of states (B, T, H) over the positions where mask (B, T) is 1 -> (B, H)."""
    weights = mask.to(states.dtype).unsqueeze(-1)  # (B, T, 1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _cls(mask, last, hidden_states):
    return last[:, 0]


def _avg(mask, last, hidden_states):
    return masked_mean(last, mask)


def _avg_top2(mask, last, hidden_states):
    return masked_mean((hidden_states[-1] + hidden_states[-2]) / 2.0, mask)


def _avg_first_last(mask, last, hidden_states):
    return masked_mean((hidden_states[1] + hidden_states[-1]) / 2.0, mask)


def _wavg(mask, last, hidden_states):
    m = mask.to(last.dtype)  # (B, T)
    weights = (torch.cumsum(m, dim=1) * m).unsqueeze(-1)  # (B, T, 1): 1, 2, ..., len, 0 on padding
    return (last * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _last(mask, last, hidden_states):
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)  # (1, T)
    index = (positions * mask.long()).argmax(dim=1)  # (B,): last position holding a token
    return last[torch.arange(last.shape[0], device=last.device), index]


PoolFn = Callable[[torch.Tensor, torch.Tensor, Sequence[torch.Tensor] | None], torch.Tensor]
POOLERS: dict[str, PoolFn] = {
    "cls": _cls,
    "cls_before_pooler": _cls,
    "avg": _avg,
    "avg_top2": _avg_top2,
    "avg_first_last": _avg_first_last,
    "wavg": _wavg,
    "last": _last,
}


def is_decoder(model_type: str) -> bool:
    return model_type in DECODER_MODEL_TYPES


def valid_poolers(model_type: str) -> tuple[str, ...]:
    return DECODER_POOLERS if is_decoder(model_type) else ENCODER_POOLERS


def check_pooler(pooler_type: str, model_type: str) -> None:
    """Raise ValueError naming the pooler and the valid choices when it does not fit the architecture."""
    if pooler_type not in POOLERS:
        raise ValueError(f"unknown pooler {pooler_type!r}; choose one of {', '.join(ALL_POOLERS)}")
    allowed = valid_poolers(model_type)
    if pooler_type not in allowed:
        kind = "a decoder without a [CLS] token" if is_decoder(model_type) else "an encoder"
        raise ValueError(
            f"pooler {pooler_type!r} does not fit model type {model_type!r} ({kind}); "
            f"use one of {', '.join(allowed)}"
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
