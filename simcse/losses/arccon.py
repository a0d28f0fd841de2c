"""ArcCon: InfoNCE with an additive angular margin on the positive pair (ArcCSE-style).

Reference: Zhang et al. (2022), "A Contrastive Framework for Learning
Sentence Representations from Pairwise and Triple-wise Perspective in Angular Space" (ArcCSE), ACL 2022,
arXiv:2204.00162; the margin is ArcFace's (Deng et al. 2019, arXiv:1801.07698).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from simcse.losses.checks import check_non_negative, check_temperature
from simcse.losses.infonce import infonce_logits
from simcse.losses.ops import duplicate_mask, safe_arccos
from simcse.losses.registry import ContrastiveLoss, register_loss

__all__ = ["ArcConLoss", "arccon_loss"]


def _check_margin(margin: float) -> float:
    return check_non_negative(
        "margin", margin, "the additive angular margin on the positive, in DEGREES; ArcCSE uses 10"
    )


def arccon_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    z3: torch.Tensor | None = None,
    *,
    temp: float = 0.05,
    margin: float = 10.0,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ArcCon loss of embeddings alone (see :class:`ArcConLoss`); computes in the inputs' dtype.
    ``keys`` (B, 2 + K): candidates with the text of a row's pair leave its denominator."""
    check_temperature(temp)
    _check_margin(margin)
    batch = z1.shape[0]
    cosines = infonce_logits(z1, z2, z3, temp=1.0)  # (B, B) or (B, 2B): [S, S3], plain cosines
    positive = torch.cos(safe_arccos(cosines.diagonal()) + math.radians(margin))  # (B,) cos(θ_ii + m)
    is_positive = torch.eye(batch, cosines.shape[1], dtype=torch.bool, device=cosines.device)  # (B, N)
    logits = torch.where(is_positive, positive.unsqueeze(1), cosines) / temp  # (B, N)
    if keys is not None:
        logits = logits.masked_fill(duplicate_mask(keys, *range(1, keys.shape[1])), float("-inf"))
    return F.cross_entropy(logits, torch.arange(batch, device=logits.device))


@register_loss("arccon", flags={"temp": "temp", "margin": "margin"})
class ArcConLoss(ContrastiveLoss):
    """ArcCon: InfoNCE whose positive must win by an additive angular margin (ArcCSE's pairwise loss).

    Also known as the additive angular margin contrastive loss (ArcFace's margin applied to InfoNCE).

    With x = z1/‖z1‖, y = z2/‖z2‖, x̂3 = z3/‖z3‖ (B, H), S = x yᵀ, S3 = x x̂3ᵀ, θ_ii = arccos(S_ii)
    (cosine clamped to [−1 + ε, 1 − ε], ε = 1e-6, before arccos) and m the margin in radians:

        ℓ_i = −log softmax([ cos(θ_ii + m)/τ at column i, S_ij/τ for j ≠ i, S3_ij/τ for all j ])_i

    i.e. the positive logit is computed as if the pair were m further apart, so the loss keeps pulling
    until the positive beats the negatives by that angle. The margin pushes cos(θ + m) below cos θ only
    while θ + m ≤ π, which holds for every sensible positive pair. Hard negatives (``z3``) enter as plain
    negatives, like ``infonce`` with ``hard_negative_weight=0``. Computed as a cross-entropy (log-sum-exp)
    in float32. Given ``keys`` (``--mask_duplicate_texts``), a candidate with the text of row i's anchor
    or positive leaves row i's denominator.

    Hyperparameters:
        temp: the temperature τ > 0, dimensionless; 0.05 as in SimCSE/ArcCSE.
        margin: the additive angular margin m ≥ 0, in DEGREES (converted with m·π/180); 10 in ArcCSE.

    Relation to the other losses: ``margin=0`` gives ``infonce`` (up to the ε clamp); ``mat`` uses an angular margin
    in a triplet (hinge) form instead of a softmax.

    Reference: Zhang et al. (2022), arXiv:2204.00162.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("arccon", temp=0.05, margin=10.0)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    supports_hard_negatives = True
    masks_duplicates = True

    def __init__(self, temp: float = 0.05, margin: float = 10.0) -> None:
        super().__init__()
        self.temp = check_temperature(temp)
        self.margin = _check_margin(margin)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        return arccon_loss(z1, z2, z3, temp=self.temp, margin=self.margin, keys=keys)
