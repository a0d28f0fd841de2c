"""Tensor operations shared by the losses: diagonal masking, squared distances, safe arccos, log-mean-exp.

Each formula used by more than one loss lives here once, written to stay finite (and to keep finite
gradients) on the degenerate batches training produces: identical views, duplicated sentences.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "COSINE_EPS",
    "fill_diagonal",
    "log_mean_exp",
    "paired_squared_distances",
    "pairwise_squared_distances",
    "safe_arccos",
]

#: Cosines are clamped to [−1 + ε, 1 − ε] before arccos (and 2 − 2·cos to ≥ ε before sqrt): both have
#: infinite slope at the end points. fp32 cosines of identical vectors carry ~1e-7 of rounding noise,
#: so ε = 1e-6 loses nothing measurable and bounds the gradients (|d arccos/ds| ≤ 1/sqrt(2ε) ≈ 707).
COSINE_EPS = 1e-6


def fill_diagonal(matrix: torch.Tensor, value: float) -> torch.Tensor:
    """``matrix`` (N, M) with entries (i, i) replaced by ``value`` (out of place, so autograd-safe).

    Used with ``value = -inf`` to drop a row's positive (or itself) from a log-sum-exp or a max: the
    masked entries get exactly zero weight and zero gradient (multiplying by 0 instead would leave a
    candidate of similarity 0 in the max, which is wrong whenever all real negatives are below 0).
    """
    rows, cols = matrix.shape
    eye = torch.eye(rows, cols, dtype=torch.bool, device=matrix.device)  # (N, M)
    return matrix.masked_fill(eye, value)


def paired_squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_i‖² for aligned rows of ``a`` and ``b`` (B, H). (B,)"""
    return (a - b).pow(2).sum(dim=1)


def pairwise_squared_distances(x: torch.Tensor) -> torch.Tensor:
    """‖x_i − x_j‖² for every pair i < j of rows of ``x`` (B, H), in ``triu_indices`` order. (B(B−1)/2,)

    Computed from the Gram matrix (‖x_i‖² + ‖x_j‖² − 2 x_i·x_j, clamped at 0 against rounding) so the
    memory is O(B²), not the O(B²H) of explicit differences; unlike ``torch.pdist`` followed by a square,
    its gradient stays finite for duplicated rows (distance 0).
    """
    batch = x.shape[0]
    gram = x @ x.T  # (B, B)
    sq_norms = gram.diagonal()  # (B,)
    i, j = torch.triu_indices(batch, batch, offset=1, device=x.device)  # (P,), (P,) with P = B(B−1)/2
    return (sq_norms[i] + sq_norms[j] - 2 * gram[i, j]).clamp_min(0)  # (P,)


def log_mean_exp(values: torch.Tensor) -> torch.Tensor:
    """log(mean(exp(values))) of a 1-D tensor, via log-sum-exp (no overflow or underflow to −inf)."""
    return torch.logsumexp(values, dim=0) - math.log(values.shape[0])


def safe_arccos(cosines: torch.Tensor) -> torch.Tensor:
    """arccos of cosines clamped to [−1 + ε, 1 − ε] (:data:`COSINE_EPS`): finite values and gradients."""
    return torch.arccos(cosines.clamp(-1 + COSINE_EPS, 1 - COSINE_EPS))
