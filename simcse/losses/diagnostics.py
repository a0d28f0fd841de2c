"""Representation diagnostics: alignment, uniformity and InfoNCE's positive probability (no registration).

Alignment and uniformity are from Wang & Isola (2020), "Understanding Contrastive Representation
Learning through Alignment and Uniformity on the Hypersphere", arXiv:2005.10242; the mean positive
probability p_ii is the gradient-dissipation diagnostic of Nie et al. (ICLR 2023), "On the Inadequacy of
Optimizing Alignment and Uniformity in Contrastive Learning of Sentence Representations": InfoNCE's
gradient on a pair scales with 1 − p_ii, so p_ii → 1 means the loss has stopped teaching.

All three are pure functions of embeddings that L2-normalise their inputs themselves (idempotent on unit
rows), compute in the inputs' dtype and are differentiable; :func:`alignment` and :func:`uniformity`
are also the building blocks of the ``align_uniform`` and ``kcl`` losses.

Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two views of each sentence). Two
identical views are perfectly aligned (0); orthogonal unit rows are all √2 apart, so their uniformity
is log e^{−2·2} = −4:

>>> import torch
>>> from simcse.losses.diagnostics import alignment, uniformity
>>> z = torch.eye(4).unsqueeze(1).repeat(1, 2, 1)
>>> x, y = z.unbind(1)
>>> float(alignment(x, y)), float(uniformity(x))
(0.0, -4.0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simcse.losses.checks import check_positive, require_pairs
from simcse.losses.infonce import infonce_logits, positive_probabilities
from simcse.losses.ops import log_mean_exp, masked_logsumexp, paired_squared_distances, pairwise_squared_distances

__all__ = ["alignment", "check_alpha", "check_kernel_scale", "positive_probability", "uniformity"]


def check_alpha(alpha: object) -> float:
    """The alignment exponent α > 0 (shared by :func:`alignment` and the losses built on it)."""
    return check_positive("alpha", alpha, "the exponent of the positive-pair distance; Wang & Isola use 2")


def check_kernel_scale(t: object) -> float:
    """The Gaussian kernel scale t > 0 of exp(−t‖a − b‖²) (:func:`uniformity`, ``kcl``, ``align_uniform``)."""
    return check_positive(
        "t", t, "the scale of the squared distances in the Gaussian kernel; Wang & Isola use 2"
    )


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """mean_i ‖x̂_i − ŷ_i‖^α over aligned positive pairs, x̂ = x/‖x‖, ŷ = y/‖y‖ (B, H). Lower is better.

    α > 0 is the exponent (2 in Wang & Isola; ‖x̂ − ŷ‖² = 2 − 2 cos). Ranges over [0, 2^α].
    """
    check_alpha(alpha)
    sq = paired_squared_distances(F.normalize(x, dim=-1), F.normalize(y, dim=-1))  # (B,)
    # ‖·‖^α = (‖·‖²)^(α/2); the where() keeps the gradient 0, not NaN, at a zero distance when α < 2.
    tiny = torch.finfo(sq.dtype).tiny
    return torch.where(sq > 0, sq.clamp_min(tiny).pow(alpha / 2), torch.zeros_like(sq)).mean()


def uniformity(x: torch.Tensor, t: float = 2.0, *, drop: torch.Tensor | None = None) -> torch.Tensor:
    """log mean_{i<j} exp(−t ‖x̂_i − x̂_j‖²) over distinct rows, x̂ = x/‖x‖ (B ≥ 2, H). Lower is better.

    t > 0 scales squared distances (2 in Wang & Isola). Ranges over [−4t, 0]: 0 when all rows coincide.
    Computed as a log-mean-exp, so large t cannot underflow to log 0. ``drop`` (B(B−1)/2,) bool leaves
    pairs out of the mean (``triu_indices`` order: :func:`~simcse.losses.ops.duplicate_pairs`); with every
    pair dropped the result is 0, with zero gradient.
    """
    check_kernel_scale(t)
    require_pairs("uniformity", x)
    exponents = -t * pairwise_squared_distances(F.normalize(x, dim=-1))  # (P,)
    if drop is None:
        return log_mean_exp(exponents)
    # Masked rather than indexed: a boolean index would make the host wait for the device.
    total, nonempty = masked_logsumexp(exponents.masked_fill(drop, float("-inf")).unsqueeze(0))  # (1,) each
    kept = (~drop).sum().to(exponents.dtype).clamp_min(1)
    return torch.where(nonempty[0], total[0] - kept.log(), torch.zeros_like(total[0]))


def positive_probability(
    z1: torch.Tensor, z2: torch.Tensor, temp: float = 0.05, *, z3: torch.Tensor | None = None
) -> torch.Tensor:
    """mean_i p_ii, InfoNCE's softmax probability of each anchor's positive (optionally with hard negatives).

    Same logits as the ``infonce`` loss at temperature ``temp`` (so −mean log p_ii is that loss); in [0, 1].
    """
    return positive_probabilities(infonce_logits(z1, z2, z3, temp=temp)).mean()
