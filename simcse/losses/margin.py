"""Margin triplet losses with the hardest in-batch negative: MET (Euclidean), MPT (cosine), MAT (angle).

Reference: Nie et al. (2023), "On the Inadequacy of Optimizing Alignment and
Uniformity in Contrastive Learning of Sentence Representations", ICLR 2023 (their MET/MPT/MAT losses).
Two departures from their code, both deliberate: the positive is excluded from the hardest-negative
search with a mask (their MPT/MAT multiplied it by 0, leaving a phantom negative of similarity 0), and
the distances are clamped before sqrt/arccos so identical views have finite gradients. Given ``keys``
(``--mask_duplicate_texts``), an anchor with the text of column j's anchor or positive is no candidate
for its hardest negative; a column left without one contributes 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from simcse.losses.checks import check_non_negative, require_pairs
from simcse.losses.infonce import infonce_logits
from simcse.losses.ops import COSINE_EPS, duplicate_mask, fill_diagonal, safe_arccos
from simcse.losses.registry import ContrastiveLoss, register_loss

__all__ = ["MATLoss", "METLoss", "MPTLoss", "mat_loss", "met_loss", "mpt_loss"]


_MET_UNIT = "units of Euclidean distance between unit vectors, in [0, 2]; the paper uses 0.45"
_MPT_UNIT = "units of cosine similarity; the paper's code uses 0.09"
_MAT_UNIT = "multiples of π radians (0.15 = 27°); the paper uses 0.15"


def _euclidean(cosines: torch.Tensor) -> torch.Tensor:
    # ‖x − y‖ = sqrt(2 − 2 cos) for unit vectors, clamped away from sqrt's infinite slope at 0.
    return (2 - 2 * cosines).clamp_min(COSINE_EPS).sqrt()


def _negated_cosine(cosines: torch.Tensor) -> torch.Tensor:
    return -cosines


def _hardest_negative_triplet(
    z1: torch.Tensor,
    z2: torch.Tensor,
    margin: float,
    distance: Callable[[torch.Tensor], torch.Tensor],
    name: str,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """mean_j relu(margin + d(S_jj) − d(max_{i≠j} S_ij)) for a distance d decreasing in the cosine.

    ``keys`` (B, 2): anchors with the text of column j's pair are no negatives of it; a column left with
    none contributes 0 (no triplet)."""
    require_pairs(name, z1)
    cosines = infonce_logits(z1, z2, temp=1.0)  # (B, B) S_ij = x_i·y_j (τ = 1: plain cosines)
    positive = cosines.diagonal()  # (B,) S_jj
    # Column j holds positive y_j against every anchor x_i; its hardest negative is the most similar
    # other anchor. Every d here decreases with the cosine, so min_{i≠j} d(S_ij) = d(max_{i≠j} S_ij):
    # the search runs once, on cosines, and only B values go through d.
    candidates = fill_diagonal(cosines, float("-inf"))  # (B, B)
    if keys is None:
        return F.relu(margin + distance(positive) - distance(candidates.amax(dim=0))).mean()
    # Column j's row is its pair; the candidates are anchors (key column 0): the mask's [j, i], transposed.
    candidates = candidates.masked_fill(duplicate_mask(keys, 0).T, float("-inf"))
    hardest = candidates.amax(dim=0)  # (B,)
    nonempty = hardest > float("-inf")
    hardest = torch.where(nonempty, hardest, positive.detach())  # a finite stand-in, thrown away below
    losses = F.relu(margin + distance(positive) - distance(hardest))
    return torch.where(nonempty, losses, torch.zeros_like(losses)).mean()


def _check_margin(margin: float, unit: str) -> float:
    return check_non_negative("margin", margin, f"the triplet margin, in {unit}")


def met_loss(z1: torch.Tensor, z2: torch.Tensor, *, margin: float = 0.45,
             keys: torch.Tensor | None = None) -> torch.Tensor:
    """The MET loss of embeddings alone (see :class:`METLoss`); computes in the inputs' dtype."""
    _check_margin(margin, _MET_UNIT)
    return _hardest_negative_triplet(z1, z2, margin, _euclidean, "met", keys)


def mpt_loss(z1: torch.Tensor, z2: torch.Tensor, *, margin: float = 0.09,
             keys: torch.Tensor | None = None) -> torch.Tensor:
    """The MPT loss of embeddings alone (see :class:`MPTLoss`); computes in the inputs' dtype."""
    _check_margin(margin, _MPT_UNIT)
    return _hardest_negative_triplet(z1, z2, margin, _negated_cosine, "mpt", keys)


def mat_loss(z1: torch.Tensor, z2: torch.Tensor, *, margin: float = 0.15,
             keys: torch.Tensor | None = None) -> torch.Tensor:
    """The MAT loss of embeddings alone (see :class:`MATLoss`); computes in the inputs' dtype."""
    _check_margin(margin, _MAT_UNIT)
    return _hardest_negative_triplet(z1, z2, margin * math.pi, safe_arccos, "mat", keys)


@register_loss("met", flags={"margin": "margin"})
class METLoss(ContrastiveLoss):
    """MET: margin triplet loss in Euclidean distance, against the hardest in-batch negative.

    With x = z1/‖z1‖, y = z2/‖z2‖ (B, H), S = x yᵀ and D = sqrt(max(2 − 2S, ε)) (the chordal distance
    ‖x_i − y_j‖, clamped at ε = 1e-6 so identical views keep finite gradients):

        loss = mean_j relu( m + D_jj − min_{i≠j} D_ij )

    The hardest negative is taken per COLUMN, as in the MET code: for the positive y_j, the nearest
    other anchor x_i (i ≠ j). (The authors' follow-up takes it per row, per anchor; that is this loss
    applied to (z2, z1).) The positive is excluded with a mask, not multiplied by 0.

    Computed in float32; needs B ≥ 2; no hard negatives (a z3 row belongs to an anchor, not to a column).

    Hyperparameters:
        margin: m ≥ 0, units of Euclidean distance between unit vectors (in [0, 2]); 0.45 in
            the paper, 0.44 in its script.

    Relation to the other losses: ``mpt`` and ``mat`` are the same triplet in cosine and in angle; all
    three are zero once every positive beats its hardest negative by the margin, unlike ``infonce``.

    Reference: Nie et al. (2023), ICLR 2023.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("met", margin=0.45)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    masks_duplicates = True

    def __init__(self, margin: float = 0.45) -> None:
        super().__init__()
        self.margin = _check_margin(margin, _MET_UNIT)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        return met_loss(z1, z2, margin=self.margin, keys=keys)


@register_loss("mpt", flags={"margin": "margin"})
class MPTLoss(ContrastiveLoss):
    """MPT: margin triplet loss in cosine similarity, against the hardest in-batch negative.

    With x = z1/‖z1‖, y = z2/‖z2‖ (B, H) and S = x yᵀ:

        loss = mean_j relu( m − S_jj + max_{i≠j} S_ij )

    The hardest negative is taken per COLUMN, as in the MET code: for the positive y_j, the nearest
    other anchor x_i (i ≠ j). (The authors' follow-up takes it per row, per anchor; that is this loss
    applied to (z2, z1).) The positive is excluded with a mask, not multiplied by 0.

    Computed in float32; needs B ≥ 2; no hard negatives.

    Hyperparameters:
        margin: m ≥ 0, units of cosine similarity; 0.09 in the paper's code, 0.23 in a follow-up.

    Relation to the other losses: ``met`` and ``mat`` are the same triplet in distance and in angle.

    Reference: Nie et al. (2023), ICLR 2023.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("mpt", margin=0.09)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    masks_duplicates = True

    def __init__(self, margin: float = 0.09) -> None:
        super().__init__()
        self.margin = _check_margin(margin, _MPT_UNIT)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        return mpt_loss(z1, z2, margin=self.margin, keys=keys)


@register_loss("mat", flags={"margin": "margin"})
class MATLoss(ContrastiveLoss):
    """MAT: margin triplet loss in angle, against the hardest in-batch negative.

    With x = z1/‖z1‖, y = z2/‖z2‖ (B, H), S = x yᵀ and A = arccos(clamp(S, −1 + ε, 1 − ε)) (angles in
    radians; ε = 1e-6 keeps arccos's gradient finite):

        loss = mean_j relu( m·π + A_jj − min_{i≠j} A_ij )

    The hardest negative is taken per COLUMN, as in the MET code: for the positive y_j, the nearest
    other anchor x_i (i ≠ j). (The authors' follow-up takes it per row, per anchor; that is this loss
    applied to (z2, z1).) The positive is excluded with a mask, not multiplied by 0.

    Computed in float32; needs B ≥ 2; no hard negatives.

    Hyperparameters:
        margin: m ≥ 0, in multiples of π radians (0.15 = 27°), as in the paper.

    Relation to the other losses: ``met`` and ``mpt`` are the same triplet in distance and in cosine;
    ``arccon`` puts an additive angular margin inside a softmax instead.

    Reference: Nie et al. (2023), ICLR 2023.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("mat", margin=0.15)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    masks_duplicates = True

    def __init__(self, margin: float = 0.15) -> None:
        super().__init__()
        self.margin = _check_margin(margin, _MAT_UNIT)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        return mat_loss(z1, z2, margin=self.margin, keys=keys)
