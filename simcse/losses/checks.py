"""Validation shared by the losses: hyperparameters (checked when a loss is built) and batch sizes.

Every check raises :class:`~simcse.errors.SimCSEError` with a message that names the argument, what it
means, and the value received, e.g. ``margin must be a non-negative number (...), got -0.1``.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from simcse.errors import SimCSEError

__all__ = [
    "check_flag",
    "check_non_negative",
    "check_positive",
    "check_temperature",
    "check_unit_interval",
    "is_finite_number",
    "require_pairs",
]


def is_finite_number(value: object) -> bool:
    """True for a finite int or float (bools and numeric strings are not numbers here)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_temperature(temp: object) -> float:
    """τ > 0, the temperature dividing cosines into logits; returns it as a float."""
    if not (is_finite_number(temp) and temp > 0):
        raise SimCSEError(
            f"temp must be a positive number (the temperature τ; SimCSE uses 0.05, i.e. scale 1/τ = 20), "
            f"got {temp!r}"
        )
    return float(temp)


def check_positive(name: str, value: object, meaning: str) -> float:
    """``value`` > 0 and finite; ``meaning`` says what it is (shown in the error)."""
    if not (is_finite_number(value) and value > 0):
        raise SimCSEError(f"{name} must be a positive number ({meaning}), got {value!r}")
    return float(value)


def check_non_negative(name: str, value: object, meaning: str) -> float:
    """``value`` >= 0 and finite; ``meaning`` says what it is (shown in the error)."""
    if not (is_finite_number(value) and value >= 0):
        raise SimCSEError(f"{name} must be a non-negative number ({meaning}), got {value!r}")
    return float(value)


def check_unit_interval(name: str, value: object, meaning: str) -> float:
    """0 <= ``value`` <= 1; ``meaning`` says what it is (shown in the error)."""
    if not (is_finite_number(value) and 0 <= value <= 1):
        raise SimCSEError(f"{name} must be a number in [0, 1] ({meaning}), got {value!r}")
    return float(value)


def check_flag(name: str, value: object) -> bool:
    """A real bool (a string such as ``"false"`` would be truthy)."""
    if not isinstance(value, bool):
        raise SimCSEError(f"{name} must be True or False, got {value!r}")
    return value


def require_pairs(loss_name: str, z: torch.Tensor) -> None:
    """Losses built from in-batch negatives or batch statistics need at least 2 rows.

    With one row there is no negative (a log-sum-exp over nothing is −inf, a mean over no pair is NaN,
    an unbiased variance is NaN), so the loss would be undefined rather than merely uninformative.
    """
    if z.shape[0] < 2:
        raise SimCSEError(
            f"loss {loss_name!r} needs at least 2 pairs per batch (it uses in-batch negatives or batch "
            f"statistics), got a batch of {z.shape[0]}; raise the batch size and drop a last incomplete "
            "batch (`dataloader_drop_last`)"
        )
