"""Tensor operations shared by the losses: diagonal and duplicate-text masking, squared distances, safe
arccos, log-mean-exp.

Each formula used by more than one loss lives here once, written to stay finite (and to keep finite
gradients) on the degenerate batches training produces: identical views, duplicated sentences.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "COSINE_EPS",
    "duplicate_mask",
    "duplicate_pairs",
    "fill_diagonal",
    "log_mean_exp",
    "masked_logsumexp",
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


def duplicate_mask(keys: torch.Tensor, *roles: int) -> torch.Tensor:
    """Which in-batch candidates repeat a row's own texts: (B, len(roles)·B) bool, one (B, B) block per role.

    ``keys`` (B, N) int64 holds one key per sentence of each example, equal keys for equal texts: column 0
    the anchor, 1 the positive, 2 + k the k-th hard negative. A block of role r holds the candidates
    keys[:, r] (hard negatives k-major for roles 2, 3, ..., like
    :func:`~simcse.losses.registry.flatten_hard_negatives`). Entry (i, j) of a block is True when candidate
    j has the text of row i's anchor or positive (keys[i, 0] or keys[i, 1]): a false negative, to be
    removed from row i's denominator (``masked_fill(mask, -inf)``). Never True at j == i in an anchor or
    positive block: that is the row's own positive, or the row itself, which each loss handles already.
    The same mask serves rows that are anchors and rows that are positives (their pair is the same).
    """
    batch = keys.shape[0]
    pair = keys[:, :2]  # (B, 2): the texts of each row's own pair
    own = torch.eye(batch, dtype=torch.bool, device=keys.device)  # (B, B)
    blocks = []
    for role in roles:
        hit = (keys[None, :, role, None] == pair.unsqueeze(1)).any(dim=2)  # (B, B): [i, j]
        blocks.append(hit & ~own if role < 2 else hit)
    return torch.cat(blocks, dim=1)


def duplicate_pairs(keys: torch.Tensor, role: int) -> torch.Tensor:
    """The pairs i < j of one role's sentences (``triu_indices`` order, like
    :func:`pairwise_squared_distances`) that :func:`duplicate_mask` marks from either side. (B(B−1)/2,) bool"""
    batch = keys.shape[0]
    mask = duplicate_mask(keys, role)  # (B, B)
    i, j = torch.triu_indices(batch, batch, offset=1, device=keys.device)
    return (mask | mask.T)[i, j]


def masked_logsumexp(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise log-sum-exp of ``logits`` (R, C) in which masked entries are −inf: (values, nonempty), (R,) each.

    A row whose every entry is −inf (all its candidates masked) has no log-sum-exp: its value is 0 and
    ``nonempty`` False, with zero gradient (not the NaN of ``logsumexp`` over −inf alone); the loss decides
    what such a row contributes.
    """
    nonempty = (logits > float("-inf")).any(dim=1)  # (R,)
    safe = torch.where(nonempty.unsqueeze(1), logits, torch.zeros_like(logits))
    values = torch.logsumexp(safe, dim=1)  # (R,); a row of zeros where empty, thrown away next
    return torch.where(nonempty, values, torch.zeros_like(values)), nonempty


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
