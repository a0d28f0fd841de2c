"""The loss registry and the base class every contrastive loss derives from.

A loss is a :class:`ContrastiveLoss` subclass registered under a lower-case name::

    @register_loss("my_loss")
    class MyLoss(ContrastiveLoss):
        def __init__(self, temp: float = 0.05): ...
        def compute(self, z1, z2, z3): ...

and becomes available to ``build_loss("my_loss", temp=0.1)`` and to ``train.py --loss_type my_loss``.
Every constructor argument is a hyperparameter: it must be keyword-passable, have a default (so the
loss can be built from its name alone), and be stored on the instance under the same name (so
:meth:`ContrastiveLoss.hparams` can report it for logging and saving).
"""

from __future__ import annotations

import inspect
import re
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from simcse.errors import SimCSEError

__all__ = ["LOSSES", "ContrastiveLoss", "build_loss", "loss_kwargs_of", "register_loss"]

_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


class ContrastiveLoss(nn.Module):
    """Base class: a loss of sentence embeddings alone (no model, tokenizer or argument objects).

    ``forward(z1, z2, z3=None)`` takes anchors ``z1``, positives ``z2`` and optional hard negatives
    ``z3``, each (B, H) and not normalised, and returns a scalar. It checks the shapes, casts the
    embeddings to float32 and runs :meth:`compute` with autocast disabled, so every loss computes in
    fp32 even when the encoder ran under fp16/bf16 autocast (logits at τ = 0.05 reach 20, and e^20
    overflows fp16). Subclasses implement :meth:`compute` only.

    Subclasses that can use hard negatives set ``supports_hard_negatives = True``; the others reject a
    ``z3`` with a :class:`~simcse.errors.SimCSEError` instead of silently ignoring it.
    """

    #: The registry name, set by :func:`register_loss`.
    name: ClassVar[str] = ""
    #: Whether :meth:`compute` uses hard negatives ``z3`` (3-column training data).
    supports_hard_negatives: ClassVar[bool] = False

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None = None) -> torch.Tensor:
        _check_embeddings(z1, z2, z3)
        if z3 is not None and not self.supports_hard_negatives:
            raise SimCSEError(
                f"loss {self.name or type(self).__name__!r} cannot use hard negatives (z3), but got z3 of "
                f"shape {tuple(z3.shape)}; train on 1- or 2-column data or pick a loss that supports them "
                f"({', '.join(n for n, c in LOSSES.items() if c.supports_hard_negatives) or 'none registered'})"
            )
        with torch.autocast(device_type=z1.device.type, enabled=False):
            return self.compute(z1.float(), z2.float(), None if z3 is None else z3.float())

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None) -> torch.Tensor:
        """The loss on float32 embeddings (B, H); ``z3`` is None without hard negatives."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute(z1, z2, z3)")

    def hparams(self) -> dict[str, Any]:
        """The constructor hyperparameters and their current values, e.g. ``{"temp": 0.05, ...}``."""
        return {key: getattr(self, key) for key in _constructor_parameters(type(self))}

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.hparams().items())


LossT = TypeVar("LossT", bound=type[ContrastiveLoss])

#: Registered losses by name; filled by :func:`register_loss` when ``simcse.losses`` is imported.
LOSSES: dict[str, type[ContrastiveLoss]] = {}


def register_loss(name: str):
    """Class decorator adding a :class:`ContrastiveLoss` subclass to :data:`LOSSES` under ``name``.

    The name must be lower-case (``[a-z][a-z0-9_]*``) and not taken; the constructor must take only
    keyword-passable arguments with defaults. Violations are programming errors (ValueError/TypeError)
    raised at import time.
    """
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ValueError(f"loss name {name!r} must be lower-case letters, digits and '_', starting with a letter")

    def decorator(cls: LossT) -> LossT:
        if not (isinstance(cls, type) and issubclass(cls, ContrastiveLoss)):
            raise TypeError(f"@register_loss({name!r}) expects a ContrastiveLoss subclass, got {cls!r}")
        if name in LOSSES:
            raise ValueError(f"loss name {name!r} is already registered by {LOSSES[name].__qualname__}")
        for param in inspect.signature(cls.__init__).parameters.values():
            if param.name == "self":
                continue
            if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                raise TypeError(f"{cls.__qualname__}.__init__ must not take *args/**kwargs ({param})")
            if param.default is param.empty:
                raise TypeError(f"{cls.__qualname__}.__init__ argument {param.name!r} needs a default")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return decorator


def _constructor_parameters(cls: type[ContrastiveLoss]) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    return params


def _lookup(name: str) -> type[ContrastiveLoss]:
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise SimCSEError(f"unknown loss {name!r}; choose one of: {', '.join(sorted(LOSSES))}") from None


def loss_kwargs_of(name: str) -> dict[str, Any]:
    """The hyperparameters of loss ``name`` with their defaults, e.g. ``{"temp": 0.05, ...}``."""
    return {key: param.default for key, param in _constructor_parameters(_lookup(name)).items()}


def build_loss(name: str, **kwargs: Any) -> ContrastiveLoss:
    """Build the registered loss ``name`` with hyperparameters ``kwargs`` (the others keep defaults).

    Raises :class:`~simcse.errors.SimCSEError` for an unknown name (listing the registered ones) or an
    argument the loss does not take (listing the ones it does).
    """
    cls = _lookup(name)
    valid = _constructor_parameters(cls)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise SimCSEError(
            f"loss {name!r} got unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(valid) or 'no arguments'}"
        )
    return cls(**kwargs)


def _check_embeddings(z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None) -> None:
    if z1.dim() != 2:
        raise SimCSEError(f"embeddings must be (batch, hidden); got z1 of shape {tuple(z1.shape)}")
    if z1.shape[0] == 0:
        raise SimCSEError("got an empty batch (z1 has 0 rows); a contrastive loss needs at least one pair")
    for label, z in (("z2", z2), ("z3", z3)):
        if z is not None and z.shape != z1.shape:
            raise SimCSEError(
                f"{label} has shape {tuple(z.shape)} but z1 has {tuple(z1.shape)}; anchors, positives and "
                "hard negatives must come in aligned (batch, hidden) tensors"
            )
