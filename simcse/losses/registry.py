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

__all__ = [
    "LOSSES",
    "ContrastiveLoss",
    "build_loss",
    "compute_dtype",
    "flatten_hard_negatives",
    "loss_kwargs_of",
    "register_loss",
]

_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


class ContrastiveLoss(nn.Module):
    """Base class: a loss of sentence embeddings alone (no model, tokenizer or argument objects).

    ``forward(z1, z2, z3=None, *, scores=None, guide=None, keys=None)`` takes anchors ``z1`` and positives
    ``z2``, each (B, H) and not normalised, and optionally:

    * ``z3``: hard negatives, (B, H) (one per anchor) or (B, K, H) (K per anchor: ``z3[i, k]`` is anchor
      i's k-th hard negative). Losses that use them see every anchor's hard negatives as candidates;
      :func:`flatten_hard_negatives` gives the (K·B, H) block, k-major.
    * ``scores``: (B,) a graded similarity score of each pair (z1_i, z2_i) (graded losses: CoSENT, AnglE).
    * ``guide``: (B, 2 + K, G) the embeddings a frozen guide encoder gives the same sentences (anchor,
      positive, hard negatives), computed without gradient (GISTEmbed).
    * ``keys``: (B, 2 + K) int64, one key per sentence (anchor, positive, hard negatives), equal keys for
      equal texts (``train.py --mask_duplicate_texts``): a candidate with the text of a row's anchor or
      positive is removed from that row's negatives (:func:`~simcse.losses.ops.duplicate_mask`).

    It checks the shapes, casts the embeddings to float32 (float64 stays float64, so gradient checks in
    double precision are exact) and runs :meth:`compute` with autocast disabled, so every loss computes
    in at least fp32 even when the encoder ran under fp16/bf16 autocast (logits at τ = 0.05 reach 20, and
    e^20 overflows fp16). Subclasses implement :meth:`compute` only.

    What a loss consumes is declared by class flags, and an input it would ignore is an error
    (:class:`~simcse.errors.SimCSEError`), never silently dropped: ``supports_hard_negatives`` (``z3``),
    ``needs_scores`` (``scores`` required; such a loss receives them as ``compute(..., scores=)``),
    ``needs_guide`` (``guide`` required; received as ``compute(..., guide=)``), ``masks_duplicates``
    (``keys`` accepted; received as ``compute(..., keys=)`` when given).
    """

    #: The registry name, set by :func:`register_loss`.
    name: ClassVar[str] = ""
    #: Whether :meth:`compute` uses hard negatives ``z3`` (training data with hard-negative columns).
    supports_hard_negatives: ClassVar[bool] = False
    #: Whether the loss is graded: it needs a similarity score per pair (a ``score`` column).
    needs_scores: ClassVar[bool] = False
    #: Whether the loss needs the embeddings of a frozen guide encoder (``--guide_model``).
    needs_guide: ClassVar[bool] = False
    #: train.py flags of its own for some hyperparameters, ``{flag: argument}``, set by :func:`register_loss`.
    cli_flags: ClassVar[dict[str, str]] = {}
    #: Whether the loss removes in-batch candidates repeating a row's texts, given ``keys`` (every loss with
    #: in-batch negatives; ``--mask_duplicate_texts``).
    masks_duplicates: ClassVar[bool] = False
    #: Whether ``forward`` also takes ``layers``: every earlier layer's pooled embeddings (2D Matryoshka).
    needs_layers: ClassVar[bool] = False

    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        z3: torch.Tensor | None = None,
        *,
        scores: torch.Tensor | None = None,
        guide: torch.Tensor | None = None,
        keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        args, extras = self._checked(z1, z2, z3, scores=scores, guide=guide, keys=keys)
        with torch.autocast(device_type=z1.device.type, enabled=False):
            return self.compute(*args, **extras)

    def _checked(self, z1, z2, z3, *, scores=None, guide=None, keys=None) -> tuple[tuple, dict]:
        """The checks of :meth:`forward`; returns ``compute``'s positional arguments (z1, z2, z3) cast to the
        compute dtype and its keyword arguments (the scores, guide or keys the loss consumes)."""
        _check_embeddings(z1, z2, z3)
        label = self.name or type(self).__name__
        check_inputs(self, hard_negatives=z3 is not None, scores=scores is not None, guide=guide is not None,
                     keys=keys is not None,
                     source="the batch" if z3 is None else f"the batch (z3 of shape {tuple(z3.shape)})")
        extras = {}
        if self.needs_scores:
            extras["scores"] = _check_scores(label, scores, z1)
        if self.needs_guide:
            extras["guide"] = _check_guide(label, guide, z1, z3)
        dtype = compute_dtype(z1)
        extras = {key: value.to(dtype) for key, value in extras.items()}
        if keys is not None:
            extras["keys"] = _check_keys(label, keys, z1, z3)  # integers: not cast
        return (z1.to(dtype), z2.to(dtype), None if z3 is None else z3.to(dtype)), extras

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None) -> torch.Tensor:
        """The loss on float32 (or float64) embeddings (B, H); ``z3`` is None without hard negatives,
        else (B, H) or (B, K, H). Graded and guided losses also take ``scores=`` / ``guide=``, losses that
        mask duplicate texts ``keys=`` (only when given)."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute(z1, z2, z3)")

    def hparams(self) -> dict[str, Any]:
        """The constructor hyperparameters and their current values, e.g. ``{"temp": 0.05, ...}``."""
        return {key: getattr(self, key) for key in _constructor_parameters(type(self))}

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.hparams().items())


LossT = TypeVar("LossT", bound=type[ContrastiveLoss])

#: Registered losses by name; filled by :func:`register_loss` when ``simcse.losses`` is imported.
LOSSES: dict[str, type[ContrastiveLoss]] = {}


def register_loss(name: str, flags: dict[str, str] | None = None):
    """Class decorator adding a :class:`ContrastiveLoss` subclass to :data:`LOSSES` under ``name``.

    ``flags``: the hyperparameters train.py exposes as flags of their own, ``{flag: constructor argument}``
    (e.g. ``{"temp": "temp", "uniform_t": "t"}``); every other one is set with ``--loss_kwargs`` JSON.
    train.py's loss flags are the union of these declarations (one meaning per flag across losses).

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
        declared = dict(flags or {})
        unknown = sorted(set(declared.values()) - set(_constructor_parameters(cls)))
        if unknown:
            raise TypeError(f"@register_loss({name!r}) flags name {unknown}, which {cls.__qualname__}.__init__ lacks")
        for other in LOSSES.values():
            clash = {f for f in set(declared) & set(other.cli_flags) if declared[f] != other.cli_flags[f]}
            if clash:
                raise ValueError(f"@register_loss({name!r}): flag(s) {sorted(clash)} already mean another argument "
                                 f"for {other.name!r}")
        cls.name, cls.cli_flags = name, declared
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


def compute_dtype(z: torch.Tensor) -> torch.dtype:
    """The dtype a loss computes in: float64 stays float64, anything else (fp16, bf16, fp32) is float32."""
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def flatten_hard_negatives(z3: torch.Tensor) -> torch.Tensor:
    """Hard negatives (B, H) or (B, K, H) as one (K·B, H) block, k-major: row k·B + i is anchor i's k-th.

    The order of sentence-transformers' ``MultipleNegativesRankingLoss`` (its candidates are the
    positives, then every anchor's first negative, then every anchor's second, ...).
    """
    if z3.dim() == 2:
        return z3
    return z3.transpose(0, 1).reshape(-1, z3.shape[-1])  # (K, B, H) -> (K·B, H)


def _check_embeddings(z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None) -> None:
    if z1.dim() != 2:
        raise SimCSEError(f"embeddings must be (batch, hidden); got z1 of shape {tuple(z1.shape)}")
    if z1.shape[0] == 0:
        raise SimCSEError("got an empty batch (z1 has 0 rows); a contrastive loss needs at least one pair")
    if z2.shape != z1.shape:
        raise SimCSEError(
            f"z2 has shape {tuple(z2.shape)} but z1 has {tuple(z1.shape)}; anchors, positives and "
            "hard negatives must come in aligned (batch, hidden) tensors"
        )
    if z3 is not None:
        aligned = (z3.dim() == 2 and z3.shape == z1.shape) or (
            z3.dim() == 3 and z3.shape[0] == z1.shape[0] and z3.shape[2] == z1.shape[1] and z3.shape[1] >= 1
        )
        if not aligned:
            raise SimCSEError(
                f"z3 has shape {tuple(z3.shape)} but z1 has {tuple(z1.shape)}; hard negatives must be "
                "(batch, hidden) or (batch, K, hidden), aligned with the anchors"
            )


def check_inputs(loss: ContrastiveLoss | type[ContrastiveLoss], *, hard_negatives: bool, scores: bool,
                 guide: bool, source: str, keys: bool = False) -> None:
    """The one rule for what a loss consumes (its class flags), checked on the training data's columns
    before the model loads and on every batch: hard negatives only for a loss that uses them; similarity
    scores exactly for a graded loss; guide embeddings exactly for a guided one; text keys only for a loss
    with in-batch negatives to mask. ``source`` names the inputs in the message (the training file, or the
    batch)."""
    label = loss.name or (loss if isinstance(loss, type) else type(loss)).__name__

    def able(flag: str) -> str:
        return ", ".join(n for n, c in LOSSES.items() if getattr(c, flag)) or "none registered"

    if hard_negatives and not loss.supports_hard_negatives:
        raise SimCSEError(f"loss {label!r} cannot use the hard negatives of {source}; use one of "
                          f"{able('supports_hard_negatives')}, or data without hard-negative columns")
    if loss.needs_scores and not scores:
        raise SimCSEError(f"loss {label!r} is graded: it needs a similarity score per pair, and {source} has none; "
                          "add a column named 'score' (or declare it with `train_columns` sent0,sent1,score)")
    if scores and not loss.needs_scores:
        raise SimCSEError(f"{source} has similarity scores that loss {label!r} would ignore; use a graded loss "
                          f"({able('needs_scores')}) or drop the score column")
    if loss.needs_guide and not guide:
        raise SimCSEError(f"loss {label!r} needs the embeddings of a guide encoder (`guide_model`) and {source} "
                          "has none")
    if guide and not loss.needs_guide:
        raise SimCSEError(f"{source} has guide embeddings that loss {label!r} does not use; drop `guide_model` or "
                          f"use a guided loss ({able('needs_guide')})")
    if keys and not loss.masks_duplicates:
        raise SimCSEError(f"loss {label!r} cannot mask duplicate texts (`mask_duplicate_texts`): it has no in-batch "
                          f"negatives; drop `mask_duplicate_texts` (it applies to {able('masks_duplicates')})")


def _check_keys(label: str, keys: torch.Tensor, z1: torch.Tensor, z3: torch.Tensor | None) -> torch.Tensor:
    columns = 2 + (0 if z3 is None else (1 if z3.dim() == 2 else z3.shape[1]))
    if keys.dtype != torch.int64 or keys.shape != (z1.shape[0], columns):
        raise SimCSEError(
            f"loss {label!r}: text keys must be int64 (batch, {columns}), one per anchor, positive and hard "
            f"negative; got {keys.dtype} {tuple(keys.shape)}"
        )
    return keys.to(z1.device)


def _check_scores(label: str, scores: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    if scores.shape != (z1.shape[0],):
        raise SimCSEError(f"loss {label!r} needs one score per pair, shape ({z1.shape[0]},); got {tuple(scores.shape)}")
    if not scores.is_floating_point() or not torch.isfinite(scores).all():
        raise SimCSEError(f"loss {label!r} needs finite float scores, got {scores.dtype} {scores.tolist()[:5]}...")
    return scores


def _check_guide(label: str, guide: torch.Tensor, z1: torch.Tensor, z3: torch.Tensor | None) -> torch.Tensor:
    columns = 2 + (0 if z3 is None else (1 if z3.dim() == 2 else z3.shape[1]))
    if guide.dim() != 3 or guide.shape[:2] != (z1.shape[0], columns):
        raise SimCSEError(
            f"loss {label!r}: guide embeddings must be (batch, {columns}, guide hidden) like the anchors, positives "
            f"and hard negatives; got {tuple(guide.shape)}"
        )
    return guide
