"""NT-Xent: InfoNCE over both views at once, with same-view negatives (SimCLR's loss).

Reference: Chen, Kornblith, Norouzi, Hinton (2020), "A Simple Framework for Contrastive Learning of
Visual Representations", arXiv:2002.05709.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simcse.losses.checks import check_temperature
from simcse.losses.infonce import infonce_logits
from simcse.losses.ops import duplicate_mask, fill_diagonal
from simcse.losses.registry import ContrastiveLoss, register_loss

__all__ = ["NTXentLoss", "nt_xent_loss"]


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, *, temp: float = 0.05,
                 keys: torch.Tensor | None = None) -> torch.Tensor:
    """The NT-Xent loss of embeddings alone (see :class:`NTXentLoss`); computes in the inputs' dtype.
    ``keys`` (B, 2): candidates with the text of a row's pair leave its denominator."""
    batch = z1.shape[0]
    z = torch.cat([z1, z2])  # (2B, H): row r's positive is row r ± B
    logits = infonce_logits(z, z, temp=temp)  # (2B, 2B) cosines / τ
    logits = fill_diagonal(logits, float("-inf"))  # a row is neither its own positive nor negative
    if keys is not None:
        # Rows r and r + B are one example's two sentences: the same pair, the same mask over [z1; z2].
        duplicates = duplicate_mask(keys, 0, 1)  # (B, 2B)
        logits = logits.masked_fill(torch.cat([duplicates, duplicates]), float("-inf"))
    target = torch.arange(2 * batch, device=z.device).roll(batch)  # r + B for r < B, r − B after
    return F.cross_entropy(logits, target)


@register_loss("nt_xent", flags={"temp": "temp"})
class NTXentLoss(ContrastiveLoss):
    """NT-Xent (normalised temperature-scaled cross-entropy): SimCLR's contrastive loss.

    Also known as the SimCLR loss and as symmetric InfoNCE with same-view negatives (sentence-transformers
    has no exact equivalent: its ``MultipleNegativesSymmetricRankingLoss`` uses cross-view negatives only).

    With x = z1/‖z1‖, y = z2/‖z2‖ (B, H), stack the views into z = [x; y] (2B, H), s(r, c) = z_r·z_c, and
    let p(r) = r ± B be row r's other view. Each of the 2B rows is an anchor:

        ℓ_r = −s(r, p(r))/τ + log Σ_{c ≠ r} exp(s(r, c)/τ),    loss = mean over the 2B rows

    so every anchor meets 2B − 2 negatives (B − 1 of the other view, B − 1 of its own view) besides its
    positive. The loss is symmetric in (z1, z2). Computed as a cross-entropy (log-sum-exp) in float32.

    Hyperparameters:
        temp: the temperature τ > 0, dimensionless (logits in [−1/τ, 1/τ]); SimCLR tunes it per batch
            size (0.1–0.5 for images); 0.05 here to match SimCSE.

    Relation to the other losses: ``infonce`` (SimCSE) is the z1 → z2 half without same-view negatives;
    ``dcl`` with ``same_view_negatives=True, symmetric=True`` is this loss with the positive removed from
    the denominator. Hard negatives are not supported (SimCLR has none).

    Reference: Chen et al. (2020), arXiv:2002.05709.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("nt_xent", temp=0.1)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    masks_duplicates = True

    def __init__(self, temp: float = 0.05) -> None:
        super().__init__()
        self.temp = check_temperature(temp)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        return nt_xent_loss(z1, z2, temp=self.temp, keys=keys)
