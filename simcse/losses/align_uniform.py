"""Alignment + uniformity as a training loss (Wang & Isola's objective; the MET code's ``a&u``).

Reference: Wang, Isola (2020), "Understanding Contrastive Representation Learning through Alignment and
Uniformity on the Hypersphere", ICML 2020, arXiv:2005.10242.
"""

from __future__ import annotations

import torch

from simcse.losses.checks import check_unit_interval, require_pairs
from simcse.losses.diagnostics import alignment, check_alpha, check_kernel_scale, uniformity
from simcse.losses.ops import duplicate_pairs
from simcse.losses.registry import ContrastiveLoss, register_loss

__all__ = ["AlignUniformLoss", "align_uniform_loss"]


def _check_hparams(lam: float, alpha: float, t: float) -> tuple[float, float, float]:
    return (
        check_unit_interval(
            "lam", lam, "the weight λ of uniformity against alignment; 0.5 weighs them equally"
        ),
        check_alpha(alpha),
        check_kernel_scale(t),
    )


def align_uniform_loss(
    z1: torch.Tensor, z2: torch.Tensor, *, lam: float = 0.5, alpha: float = 2.0, t: float = 2.0,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """The alignment-uniformity loss of embeddings alone (see :class:`AlignUniformLoss`). ``keys`` (B, 2):
    pairs of one view whose texts repeat each other's pair leave the uniformity terms."""
    _check_hparams(lam, alpha, t)
    require_pairs("align_uniform", z1)
    drop1, drop2 = (None, None) if keys is None else (duplicate_pairs(keys, 0), duplicate_pairs(keys, 1))
    return (1 - lam) * alignment(z1, z2, alpha) + lam * (uniformity(z1, t, drop=drop1) +
                                                         uniformity(z2, t, drop=drop2)) / 2


@register_loss("align_uniform", flags={"loss_lambda": "lam", "align_alpha": "alpha", "uniform_t": "t"})
class AlignUniformLoss(ContrastiveLoss):
    """Alignment and uniformity optimised directly, as a weighted sum.

    Also known as the A&U loss (the MET code's ``a&u``); its two terms are the diagnostics
    :func:`~simcse.losses.diagnostics.alignment` and :func:`~simcse.losses.diagnostics.uniformity`.

    With x = z1/‖z1‖, y = z2/‖z2‖ (B, H):

        loss = (1 − λ) · mean_i ‖x_i − y_i‖^α
               + λ · ½ [ log mean_{i<j} e^{−t‖x_i − x_j‖²} + log mean_{i<j} e^{−t‖y_i − y_j‖²} ]

    The log-mean-exp is evaluated with log-sum-exp (no underflow for large t). Wang & Isola write the
    loss as L_align + λ'·L_uniform; λ' = λ / (1 − λ) up to an overall factor. Computed in float32; needs
    B ≥ 2; no hard negatives. Values lie in [−4tλ, (1 − λ)2^α]. Given ``keys``
    (``--mask_duplicate_texts``), a pair (i, j) of one view in which one sentence has the text of the
    other's anchor or positive leaves that uniformity mean (a view with no pair left contributes 0).

    Hyperparameters:
        lam: λ ∈ [0, 1], the share of uniformity (0.5: equal weights, the MET code's setting).
        alpha: α > 0, the exponent of the positive-pair distance (2 in Wang & Isola).
        t: t > 0, the Gaussian kernel scale in units of squared chordal distance (‖a − b‖² ∈ [0, 4]); 2.

    Relation to the other losses: ``kcl`` uses the same Gaussian energies without the logs; ``infonce``
    optimises both properties at once and, for large batches, approaches alignment + a log-sum-exp form
    of uniformity (Wang & Isola, Theorem 1).

    Reference: Wang & Isola (2020), arXiv:2005.10242.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("align_uniform", lam=0.5)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    masks_duplicates = True

    def __init__(self, lam: float = 0.5, alpha: float = 2.0, t: float = 2.0) -> None:
        super().__init__()
        self.lam, self.alpha, self.t = _check_hparams(lam, alpha, t)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        return align_uniform_loss(z1, z2, lam=self.lam, alpha=self.alpha, t=self.t, keys=keys)
