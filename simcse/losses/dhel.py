"""Decoupled hyperspherical energy loss (DHEL) and the kernel contrastive loss (KCL).

Reference: Koromilas, Bouritsas, Giannakopoulos, Nicolaou, Panagakis (2024), "Bridging Mini-Batch and
Asymptotic Analysis in Contrastive Learning: From InfoNCE to Kernel-Based Losses", ICML 2024,
arXiv:2405.18045. Both separate the alignment of positives from the uniformity of each view, which
InfoNCE couples inside one softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simcse.losses.checks import check_flag, check_non_negative, check_temperature, require_pairs
from simcse.losses.diagnostics import check_kernel_scale, uniformity
from simcse.losses.infonce import infonce_logits
from simcse.losses.ops import (
    duplicate_mask,
    duplicate_pairs,
    fill_diagonal,
    masked_logsumexp,
    paired_squared_distances,
)
from simcse.losses.registry import ContrastiveLoss, register_loss

__all__ = ["DHELLoss", "KCLLoss", "dhel_loss", "kcl_loss"]


def _same_view_logsumexp(z: torch.Tensor, temp: float, keys: torch.Tensor | None, role: int) -> torch.Tensor:
    """log Σ_{j≠i} exp(ẑ_i·ẑ_j / τ) for every row i of z (B, H), the sentences of key column ``role``;
    with ``keys``, over the j whose text is not row i's anchor or positive (0 where none is left). (B,)"""
    logits = fill_diagonal(infonce_logits(z, z, temp=temp), float("-inf"))  # (B, B)
    if keys is None:
        return torch.logsumexp(logits, dim=1)
    return masked_logsumexp(logits.masked_fill(duplicate_mask(keys, role), float("-inf")))[0]


def dhel_loss(
    z1: torch.Tensor, z2: torch.Tensor, *, temp: float = 0.05, include_augs: bool = True,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """The DHEL loss of embeddings alone (see :class:`DHELLoss`); computes in the inputs' dtype."""
    check_flag("include_augs", include_augs)
    require_pairs("dhel", z1)
    positive = infonce_logits(z1, z2, temp=temp).diagonal()  # (B,) S_ii / τ
    losses = _same_view_logsumexp(z1, temp, keys, 0) - positive  # (B,)
    if include_augs:
        losses = losses + _same_view_logsumexp(z2, temp, keys, 1)
    return losses.mean()


def _check_kcl_hparams(t: float, gamma: float) -> tuple[float, float]:
    return (
        check_kernel_scale(t),
        check_non_negative("gamma", gamma, "the weight of the energy (uniformity) term; 16 in the paper"),
    )


def kcl_loss(z1: torch.Tensor, z2: torch.Tensor, *, t: float = 2.0, gamma: float = 16.0,
             keys: torch.Tensor | None = None) -> torch.Tensor:
    """The KCL loss of embeddings alone (see :class:`KCLLoss`); computes in the inputs' dtype. ``keys``
    (B, 2): pairs of one view whose texts repeat each other's pair leave the energy (0 if none is left)."""
    _check_kcl_hparams(t, gamma)
    require_pairs("kcl", z1)
    x, y = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)  # (B, H) each
    alignment = torch.exp(-t * paired_squared_distances(x, y)).mean()

    def energy(z: torch.Tensor, role: int) -> torch.Tensor:
        # mean_{i<j} e^{−t‖z_i − z_j‖²} = exp(uniformity): one implementation of the Gaussian potential.
        if keys is None:
            return uniformity(z, t).exp()
        drop = duplicate_pairs(keys, role)
        energy = uniformity(z, t, drop=drop).exp()
        return torch.where(drop.all(), torch.zeros_like(energy), energy)  # no pair left: no energy

    return -2 * alignment + gamma * (energy(x, 0) + energy(y, 1))


@register_loss("dhel", flags={"temp": "temp"})
class DHELLoss(ContrastiveLoss):
    """DHEL (decoupled hyperspherical energy loss): the positive pulls, each view's own batch repels.

    With x = z1/‖z1‖, y = z2/‖z2‖ (B, H), S = x yᵀ and τ the temperature (official form):

        ℓ_i = −S_ii/τ + log Σ_{j≠i} e^{x_i·x_j/τ} + log Σ_{j≠i} e^{y_i·y_j/τ},    loss = mean_i ℓ_i

    ``include_augs=False`` drops the last (y–y) term, the one-term variant of the paper. Unlike InfoNCE,
    the positive similarity never meets the negatives in one softmax, so alignment and uniformity are
    optimised separately. Computed with log-sum-exp in float32; needs B ≥ 2; no hard negatives. Given
    ``keys`` (``--mask_duplicate_texts``), a same-view candidate with the text of row i's anchor or positive
    leaves that log-sum-exp; a log-sum-exp left with no candidate contributes 0 (the alignment term stays).

    Hyperparameters:
        temp: the temperature τ > 0, dimensionless (logits in [−1/τ, 1/τ]); the paper uses 0.3 for
            images, 0.05 here to match SimCSE.
        include_augs: also repel the positives (second view) among themselves (default True).

    Relation to the other losses: with ``include_augs=False`` it is ``dcl`` with the cross-view negatives
    x_i·y_j replaced by same-view ones x_i·x_j; ``kcl`` is the kernel (Gaussian potential) form of the
    same decoupled energy.

    Reference: Koromilas et al. (2024), arXiv:2405.18045.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("dhel", temp=0.05)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    masks_duplicates = True

    def __init__(self, temp: float = 0.05, include_augs: bool = True) -> None:
        super().__init__()
        self.temp = check_temperature(temp)
        self.include_augs = check_flag("include_augs", include_augs)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        return dhel_loss(z1, z2, temp=self.temp, include_augs=self.include_augs, keys=keys)


@register_loss("kcl", flags={"uniform_t": "t"})
class KCLLoss(ContrastiveLoss):
    """KCL (kernel contrastive loss) with the Gaussian kernel k(a, b) = exp(−t ‖a − b‖²).

    With x = z1/‖z1‖, y = z2/‖z2‖ (B, H):

        loss = −2 · mean_i k(x_i, y_i) + γ · ( mean_{i<j} k(x_i, x_j) + mean_{i<j} k(y_i, y_j) )

    The first term aligns positives, the second is the Gaussian potential energy of each view (Wang &
    Isola's uniformity before its log). The loss is bounded: in [−2, 2γ]. Computed in float32; needs
    B ≥ 2; no hard negatives. Given ``keys`` (``--mask_duplicate_texts``), a pair (i, j) of one view in
    which one sentence has the text of the other's anchor or positive leaves that mean (an empty mean
    contributes 0).

    Hyperparameters:
        t: the kernel's scale, > 0, in units of squared chordal distance (‖a − b‖² = 2 − 2 cos ∈ [0, 4]);
            2 in the paper (as in Wang & Isola's uniformity).
        gamma: γ ≥ 0, the weight of the energy term relative to alignment; 16 in the paper.

    Relation to the other losses: exp of :func:`~simcse.losses.diagnostics.uniformity` is the energy term,
    so it is ``align_uniform`` without the logs, with a Gaussian instead of a power alignment term;
    ``dhel`` is the log-sum-exp (softmax) member of the same family.

    Reference: Koromilas et al. (2024), arXiv:2405.18045.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("kcl", t=2.0, gamma=16.0)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    masks_duplicates = True

    def __init__(self, t: float = 2.0, gamma: float = 16.0) -> None:
        super().__init__()
        self.t, self.gamma = _check_kcl_hparams(t, gamma)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        return kcl_loss(z1, z2, t=self.t, gamma=self.gamma, keys=keys)
