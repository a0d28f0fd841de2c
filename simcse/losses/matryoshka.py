"""Matryoshka representation learning as a wrapper over any registered loss.

Kusupati et al. (2022), "Matryoshka Representation Learning", arXiv:2205.13147: the loss is applied to
the first d coordinates of the embeddings for each d of a list of nested widths, and the weighted sum
is minimised, so that every prefix of the trained embedding is itself a usable embedding
(evaluate one with ``evaluation.py --truncate_dim d``).

    loss = Σ_m c_m · L(z1[:, :d_m], z2[:, :d_m], z3[..., :d_m])

Hyperparameters: ``dims`` (the widths d_m, each ≤ the embedding width; include the full width) and
``weights`` (c_m, default 1 each). The prefixes are passed on as they are; sentence-transformers'
``MatryoshkaLoss`` re-normalises them first, which changes nothing for the losses that normalise their
inputs (all but ``vicreg``). Scores and guide embeddings (graded and guided losses) are not truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from simcse.errors import SimCSEError
from simcse.losses.registry import ContrastiveLoss

__all__ = ["MatryoshkaLoss"]


class MatryoshkaLoss(ContrastiveLoss):
    """Σ_m c_m · ``loss`` on the first d_m coordinates (see the module docstring). Not a registry entry:
    it wraps one (``train.py --loss_type NAME --matryoshka_dims 384,128,64``)."""

    def __init__(self, loss: ContrastiveLoss, dims: Sequence[int], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        dims = list(dims)
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise SimCSEError(f"matryoshka dims must be positive integers, got {dims!r}")
        if len(set(dims)) != len(dims):
            raise SimCSEError(f"matryoshka dims repeat a width: {dims!r}")
        if len(weights) != len(dims) or any(not (w >= 0) for w in weights):
            raise SimCSEError(f"matryoshka weights must be {len(dims)} non-negative numbers (one per dim), got {weights!r}")
        self.loss = loss
        self.dims, self.weights = dims, weights
        # What the wrapped loss consumes, the wrapper consumes (instance attributes shadow the class flags).
        self.supports_hard_negatives = loss.supports_hard_negatives
        self.needs_scores = loss.needs_scores
        self.needs_guide = loss.needs_guide
        self.name = loss.name

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None = None, *,
                scores: torch.Tensor | None = None, guide: torch.Tensor | None = None) -> torch.Tensor:
        width = z1.shape[-1]
        if max(self.dims) > width:
            raise SimCSEError(f"matryoshka dims {self.dims} exceed the embedding width {width}; use widths <= {width}")
        extras = {key: value for key, value in (("scores", scores), ("guide", guide)) if value is not None}
        total = None
        for dim, weight in zip(self.dims, self.weights):
            term = weight * self.loss(z1[..., :dim], z2[..., :dim], None if z3 is None else z3[..., :dim], **extras)
            total = term if total is None else total + term
        return total

    def hparams(self) -> dict[str, Any]:
        return {**self.loss.hparams(), "matryoshka_dims": list(self.dims), "matryoshka_weights": list(self.weights)}
