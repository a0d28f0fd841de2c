"""Graded-similarity ranking losses on pairs with a float score: CoSENT and AnglE's angle objective.

References: Su (2022), "CoSENT" (the ranking loss below, as restated in the AnglE paper); Li & Li (2023),
"AnglE-optimized Text Embeddings", arXiv:2309.12871.

Status: the formulas and their parity with sentence-transformers (``CoSENTLoss``, ``AnglELoss``) are
tested (tests/test_loss_parity_st.py); they are not yet registered as ``--loss_type`` names, because
training on them needs a score column in the training data (issue 15, item 1, not done).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simcse.losses.checks import check_temperature

__all__ = ["angle_similarity", "cosent_loss", "graded_ranking_loss"]


def graded_ranking_loss(similarities: torch.Tensor, scores: torch.Tensor, temp: float = 0.05) -> torch.Tensor:
    """log(1 + Σ_{(i, j): y_i > y_j} exp((s_j − s_i) / τ)) for pair similarities s (B,) and gold scores y (B,).

    Every pair of pairs whose gold order is strict contributes; ties contribute nothing. Computed as one
    log-sum-exp over {0} ∪ {(s_j − s_i)/τ}, so it is finite at any τ.
    """
    check_temperature(temp)
    logits = similarities / temp  # (B,)
    diff = logits.unsqueeze(0) - logits.unsqueeze(1)  # (B, B): [i, j] = (s_j − s_i) / τ
    ordered = scores.unsqueeze(1) > scores.unsqueeze(0)  # (B, B): y_i > y_j
    terms = diff.masked_fill(~ordered, float("-inf")).reshape(-1)  # (B²,)
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)


def angle_similarity(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """AnglE's similarity |cos + sin| of each pair (B,): the unit vectors' halves are the real and
    imaginary parts of complex vectors (an odd width is padded with one zero), sin the imaginary part."""
    if z1.shape[-1] % 2:
        z1, z2 = F.pad(z1, (0, 1)), F.pad(z2, (0, 1))
    x, y = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    x_re, x_im = x.chunk(2, dim=-1)
    y_re, y_im = y.chunk(2, dim=-1)
    cosines = (x * y).sum(-1)
    sines = (x_im * y_re - x_re * y_im).sum(-1)
    return (cosines + sines).abs()


def cosent_loss(z1: torch.Tensor, z2: torch.Tensor, scores: torch.Tensor, *, temp: float = 0.05,
                angle: bool = False) -> torch.Tensor:
    """CoSENT (``angle=False``: s = cos(z1_i, z2_i)) or AnglE's angle objective (``angle=True``: s = the
    angle similarity) of pairs (B, H) with gold scores (B,); τ = 0.05 is scale 20, both papers' value."""
    similarities = angle_similarity(z1, z2) if angle else F.cosine_similarity(z1, z2, dim=-1)
    return graded_ranking_loss(similarities, scores, temp)
