"""InfoNCE with in-batch negatives: the SimCSE training objective.

References: Gao, Yao, Chen (2021), "SimCSE: Simple Contrastive Learning of Sentence Embeddings",
arXiv:2104.08821; van den Oord, Li, Vinyals (2018), "Representation Learning with Contrastive
Predictive Coding", arXiv:1807.03748 (the InfoNCE bound).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simcse.errors import SimCSEError
from simcse.losses.checks import check_flag, check_temperature, is_finite_number
from simcse.losses.ops import duplicate_mask
from simcse.losses.registry import ContrastiveLoss, flatten_hard_negatives, register_loss

__all__ = ["InfoNCELoss", "infonce_logits", "infonce_loss", "positive_probabilities"]


def _check_hparams(temp: float, hard_negative_weight: float) -> None:
    check_temperature(temp)
    if not is_finite_number(hard_negative_weight):
        raise SimCSEError(
            f"hard_negative_weight must be a finite number (a logit added to each anchor's own hard "
            f"negative; 0 leaves it unweighted), got {hard_negative_weight!r}"
        )


def infonce_logits(
    z1: torch.Tensor,
    z2: torch.Tensor,
    z3: torch.Tensor | None = None,
    *,
    temp: float = 0.05,
    hard_negative_weight: float = 0.0,
) -> torch.Tensor:
    """The InfoNCE logit matrix; row i scores anchor i against every candidate, its positive at column i.

    With x, y the row-normalised z1, z2 (each (B, H)) and x̂3 the row-normalised hard negatives flattened
    k-major to (K·B, H) (:func:`~simcse.losses.registry.flatten_hard_negatives`; ``z3`` is (B, H) for
    K = 1 or (B, K, H)): without ``z3`` the logits are S / τ (B, B) with S = x yᵀ; with ``z3`` they are
    [S / τ, S3 / τ + w·E] (B, (1 + K)·B), S3 = x x̂3ᵀ, where w = ``hard_negative_weight`` is added to
    anchor i's own hard negatives only (E has ones at columns k·B + i of the second block).

    The positive probability of anchor i (the MET paper's gradient-dissipation diagnostic) is
    ``positive_probabilities(infonce_logits(z1, z2, z3, temp=temp))``.
    """
    _check_hparams(temp, hard_negative_weight)
    x = F.normalize(z1, dim=-1)  # (B, H), unit rows
    y = F.normalize(z2, dim=-1)  # (B, H)
    logits = x @ y.T / temp  # (B, B): cos(z1_i, z2_j) / τ
    if z3 is None:
        return logits
    x3 = F.normalize(flatten_hard_negatives(z3), dim=-1)  # (K·B, H), row k·B + j = anchor j's k-th
    negatives = x @ x3.T / temp  # (B, K·B): cos(z1_i, z3_{j,k}) / τ
    if hard_negative_weight != 0:
        batch = negatives.shape[0]
        own = torch.eye(batch, dtype=negatives.dtype, device=negatives.device).repeat(1, negatives.shape[1] // batch)
        negatives = negatives + hard_negative_weight * own  # (B, K·B): w at each of anchor i's own negatives
    return torch.cat([logits, negatives], dim=1)  # (B, (1 + K)·B)


def positive_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """p_ii: the softmax probability each row of ``logits`` (B, N ≥ B) gives its positive at column i. (B,)"""
    return logits.log_softmax(dim=1).diagonal().exp()


def infonce_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    z3: torch.Tensor | None = None,
    *,
    temp: float = 0.05,
    hard_negative_weight: float = 0.0,
    symmetric: bool = False,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """The InfoNCE loss of embeddings alone (see :class:`InfoNCELoss`); computes in the inputs' dtype.

    ``keys`` (B, 2 + K) int64, one per sentence (equal texts, equal keys): each row's candidates with the
    text of its anchor or positive are removed (:func:`~simcse.losses.ops.duplicate_mask`); a row left
    with its positive alone contributes 0 (−log 1)."""
    logits = infonce_logits(z1, z2, z3, temp=temp, hard_negative_weight=hard_negative_weight)
    batch = z1.shape[0]
    target = torch.arange(batch, device=logits.device)  # anchor i's positive is column i
    rows = logits
    if keys is not None:
        rows = logits.masked_fill(duplicate_mask(keys, *range(1, keys.shape[1])), float("-inf"))
    loss = F.cross_entropy(rows, target)
    if symmetric:
        # Columns of S: positive j picks its anchor among all anchors; hard negatives take no part.
        columns = logits[:, :batch].T  # (B, B): [j, i] = positive j against anchor i
        if keys is not None:
            columns = columns.masked_fill(duplicate_mask(keys, 0), float("-inf"))
        loss = (loss + F.cross_entropy(columns, target)) / 2
    return loss


@register_loss("infonce", flags={"temp": "temp", "hard_negative_weight": "hard_negative_weight"})
class InfoNCELoss(ContrastiveLoss):
    """InfoNCE over in-batch negatives, optionally with hard negatives: the loss of SimCSE.

    Also known as the SimCSE contrastive loss, NT-Xent with cross-view negatives only, and, in
    sentence-transformers, ``MultipleNegativesRankingLoss`` with ``scale = 1/τ = 20`` (``symmetric=True``
    is its ``MultipleNegativesSymmetricRankingLoss``).

    With x = z1/‖z1‖ (anchors), y = z2/‖z2‖ (positives), x̂3 = z3/‖z3‖ (hard negatives), all (B, H),
    S = x yᵀ and S3 = x x̂3ᵀ (cosines), the loss is the cross-entropy of each row against its diagonal:

        ℓ_i = −log softmax([S_i· / τ , S3_i· / τ + w·e_i])_i ,    loss = mean_i ℓ_i

    where e_i is the i-th unit vector, i.e. the weight w is added only to anchor i's OWN hard negative
    (the other anchors' hard negatives are plain negatives). Without ``z3`` the second block is absent.
    With K hard negatives per anchor (``z3`` of shape (B, K, H)) the second block holds all K·B of them
    (k-major) and w is added to each of anchor i's own K; K = 1 is the (B, H) case exactly.
    ``symmetric=True`` averages this row-wise loss with the column-wise one, −log softmax(S_·j / τ)_j,
    in which each positive picks its anchor; hard negatives do not enter the column-wise term.
    Computed with log-sum-exp (``cross_entropy``), in float32 even under AMP (see
    :class:`~simcse.losses.registry.ContrastiveLoss`). Given ``keys`` (``--mask_duplicate_texts``), a
    candidate with the text of row i's anchor or positive leaves row i's denominator.

    Hyperparameters:
        temp: the temperature τ > 0, dimensionless (cosines lie in [−1, 1]; logits in [−1/τ, 1/τ]).
            0.05 (scale 20) in SimCSE.
        hard_negative_weight: w, a LOGIT (not a probability) added to each anchor's own hard negative:
            0 leaves it weighted like every other negative, ln 2 ≈ 0.69 counts it twice in the softmax
            denominator. SimCSE's ``--hard_negative_weight`` (default 0). Ignored without ``z3``.
        symmetric: also apply the loss in the positive → anchor direction (default False).

    Relation to the other losses: DCL removes the positive from the denominator (per anchor, InfoNCE is
    softplus of DCL); NT-Xent also uses the same-view similarities x xᵀ as negatives; ArcCon with a zero
    margin is InfoNCE.

    References: Gao, Yao, Chen (2021), arXiv:2104.08821; van den Oord et al. (2018), arXiv:1807.03748.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("infonce", temp=0.05)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    supports_hard_negatives = True
    masks_duplicates = True

    def __init__(self, temp: float = 0.05, hard_negative_weight: float = 0.0, symmetric: bool = False) -> None:
        super().__init__()
        _check_hparams(temp, hard_negative_weight)
        self.temp = float(temp)
        self.hard_negative_weight = float(hard_negative_weight)
        self.symmetric = check_flag("symmetric", symmetric)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        return infonce_loss(z1, z2, z3, temp=self.temp, hard_negative_weight=self.hard_negative_weight,
                            symmetric=self.symmetric, keys=keys)
