"""Decoupled contrastive learning: InfoNCE without the positive in its denominator (DCL), and DCL+.

References: Yeh, Hong, Hsu, Liu, Chen, LeCun (2022), "Decoupled Contrastive Learning", arXiv:2110.06848
(ECCV 2022); Nie et al. (2023), "On the Inadequacy of Optimizing Alignment and
Uniformity in Contrastive Learning of Sentence Representations", ICLR 2023 (the MET code's ``decouple``
and ``decouple_pos`` losses; DCL+ is the latter).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simcse.losses.checks import check_flag, check_temperature, require_pairs
from simcse.losses.infonce import infonce_logits
from simcse.losses.ops import duplicate_mask, fill_diagonal, masked_logsumexp
from simcse.losses.registry import ContrastiveLoss, register_loss

__all__ = ["DCLLoss", "DCLPosLoss", "dcl_losses"]


def dcl_losses(
    z1: torch.Tensor,
    z2: torch.Tensor,
    z3: torch.Tensor | None = None,
    *,
    temp: float = 0.05,
    same_view_negatives: bool = False,
    symmetric: bool = False,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-anchor DCL losses ℓ_i (see :class:`DCLLoss`): (B,), or (2B,) with ``symmetric`` (z1 → z2 first).

    Computes in the inputs' dtype; the mean of the result is the ``dcl`` loss. ``keys`` (B, 2 + K): each
    row's candidates with the text of its pair are removed (:func:`~simcse.losses.ops.duplicate_mask`); a
    row left with no negative has no ℓ_i (it would be −∞) and contributes 0, as in InfoNCE.
    """
    check_temperature(temp)
    check_flag("same_view_negatives", same_view_negatives)
    check_flag("symmetric", symmetric)
    require_pairs("dcl", z1)
    losses = _decoupled(z1, z2, z3, temp, same_view_negatives, keys, (0, 1))  # (B,)
    if symmetric:
        # Positives become anchors; the hard negatives belong to the z1 anchors and stay out of it.
        reverse = _decoupled(z2, z1, None, temp, same_view_negatives, keys, (1, 0))  # (B,)
        losses = torch.cat([losses, reverse])  # (2B,)
    return losses


def _decoupled(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    hard_negatives: torch.Tensor | None,
    temp: float,
    same_view: bool,
    keys: torch.Tensor | None,
    roles: tuple[int, int],
) -> torch.Tensor:
    """ℓ_i of each row of ``anchors`` (B,); ``roles``: the key columns of the anchors and the positives."""
    batch = anchors.shape[0]
    logits = infonce_logits(anchors, positives, hard_negatives, temp=temp)  # (B, B) or (B, 2B)
    positive = logits.diagonal()  # (B,)
    cross = fill_diagonal(logits[:, :batch], float("-inf"))  # (B, B): the positive masked out
    negatives = [cross, logits[:, batch:]]  # hard negatives: (B, B), or (B, 0) without z3
    if same_view:
        negatives.append(fill_diagonal(infonce_logits(anchors, anchors, temp=temp), float("-inf")))  # (B, B)
    negatives = torch.cat(negatives, dim=1)
    if keys is None:
        return torch.logsumexp(negatives, dim=1) - positive  # (B,)
    hard_roles = range(2, keys.shape[1]) if hard_negatives is not None else ()
    duplicates = duplicate_mask(keys, roles[1], *hard_roles, *(roles[:1] if same_view else ()))
    lse, nonempty = masked_logsumexp(negatives.masked_fill(duplicates, float("-inf")))
    return torch.where(nonempty, lse - positive, torch.zeros_like(lse))  # (B,)


@register_loss("dcl", flags={"temp": "temp"})
class DCLLoss(ContrastiveLoss):
    """Decoupled contrastive loss: InfoNCE with the positive removed from the softmax denominator.

    Also known as DCL (Yeh et al.) and, with cross-view negatives only, the MET code's ``decouple`` loss.

    With x = z1/‖z1‖, y = z2/‖z2‖, x̂3 = z3/‖z3‖ (B, H), S = x yᵀ, S3 = x x̂3ᵀ and τ the temperature:

        ℓ_i = −S_ii/τ + log( Σ_{j≠i} e^{S_ij/τ} [+ Σ_{j≠i} e^{(x xᵀ)_ij/τ}] [+ Σ_j e^{S3_ij/τ}] ),
        loss = mean_i ℓ_i

    where the same-view block enters with ``same_view_negatives=True`` and the hard-negative block when
    ``z3`` is given (every anchor's hard negatives, its own included, as plain negatives, like ``infonce``
    with ``hard_negative_weight=0``). ``symmetric=True`` averages this with the z2 → z1 direction (anchors
    y_i, negatives x_j [and y_j], no hard negatives); with same-view negatives that is exactly the 2B-row
    form of Yeh et al. Without the positive in the denominator, the loss is no longer bounded below by 0
    and its gradient no longer vanishes as p_ii → 1 (the negative-positive coupling DCL removes).
    Computed with log-sum-exp in float32; needs B ≥ 2. Given ``keys`` (``--mask_duplicate_texts``), a
    candidate with the text of a row's anchor or positive is removed, and a row left with no negative
    contributes 0.

    Hyperparameters:
        temp: the temperature τ > 0, dimensionless (logits in [−1/τ, 1/τ]); Yeh et al. use 0.1, SimCSE
            and the MET paper 0.05.
        same_view_negatives: also use the anchors' own view, x_i·x_j (j ≠ i), as negatives (Yeh et al.'s
            form); default False (cross-view negatives only, the MET code's form).
        symmetric: average the z1 → z2 and z2 → z1 directions (default False).

    Relation to the other losses: per anchor, ``infonce``'s ℓ_i equals softplus(ℓ_i^dcl) = log(1 + e^{ℓ_i})
    (same batch, τ, hard negatives; weight 0), so ``dcl`` < ``infonce`` always; ``dcl_pos`` clips each ℓ_i
    at 0; ``nt_xent`` is the symmetric same-view form with the positive kept in the denominator.

    Reference: Yeh et al. (2022), arXiv:2110.06848.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("dcl", temp=0.05, same_view_negatives=True, symmetric=True)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    supports_hard_negatives = True
    masks_duplicates = True

    def __init__(
        self, temp: float = 0.05, same_view_negatives: bool = False, symmetric: bool = False
    ) -> None:
        super().__init__()
        self.temp = check_temperature(temp)
        self.same_view_negatives = check_flag("same_view_negatives", same_view_negatives)
        self.symmetric = check_flag("symmetric", symmetric)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        return dcl_losses(z1, z2, z3, temp=self.temp, same_view_negatives=self.same_view_negatives,
                          symmetric=self.symmetric, keys=keys).mean()


@register_loss("dcl_pos", flags={"temp": "temp"})
class DCLPosLoss(ContrastiveLoss):
    """DCL+: the decoupled contrastive loss clipped at zero per anchor.

    Also known as the MET code's ``decouple_pos`` loss (Nie et al., ICLR 2023).

    With ℓ_i the per-anchor loss of :class:`DCLLoss` in its default form (cross-view negatives, z1 → z2,
    plus the hard negatives when ``z3`` is given):

        loss = mean_i max(ℓ_i, 0)        (the mean runs over all B anchors; clipped ones count as 0)

    An anchor whose positive already beats the log-sum-exp of its negatives stops contributing a
    gradient, so the loss cannot reward pushing a solved pair further (DCL itself is unbounded below).
    Computed in float32; needs B ≥ 2.

    Hyperparameters:
        temp: the temperature τ > 0, dimensionless; 0.05 as in SimCSE and the MET paper.

    Relation to the other losses: ``dcl`` ≤ ``dcl_pos`` < ``infonce`` on the same batch and τ (equal to
    ``dcl`` when no ℓ_i < 0; below ``infonce`` because softplus(ℓ) > max(ℓ, 0)).

    Reference: Nie et al. (2023), ICLR 2023 (gradient dissipation); Yeh et al. (2022), arXiv:2110.06848.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("dcl_pos", temp=0.05)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    supports_hard_negatives = True
    masks_duplicates = True

    def __init__(self, temp: float = 0.05) -> None:
        super().__init__()
        self.temp = check_temperature(temp)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        require_pairs(self.name, z1)  # before dcl_losses, so the error names this loss
        return F.relu(dcl_losses(z1, z2, z3, temp=self.temp, keys=keys)).mean()
