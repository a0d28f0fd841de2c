"""VICReg: variance-invariance-covariance regularisation, a loss without negatives.

Reference: Bardes, Ponce, LeCun (2022), "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022, arXiv:2105.04906.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simcse.losses.checks import check_non_negative, require_pairs
from simcse.losses.ops import fill_diagonal
from simcse.losses.registry import ContrastiveLoss, register_loss

__all__ = ["VICRegLoss", "vicreg_loss"]

#: ε inside the standard deviation sqrt(Var + ε): keeps the gradient finite for a collapsed dimension.
STD_EPS = 1e-4


def _check_hparams(sim_coeff: float, std_coeff: float, cov_coeff: float) -> tuple[float, float, float]:
    return (
        check_non_negative(
            "sim_coeff", sim_coeff, "λ, the weight of the invariance (MSE) term; 25 in the paper"
        ),
        check_non_negative("std_coeff", std_coeff, "μ, the weight of the variance term; 25 in the paper"),
        check_non_negative("cov_coeff", cov_coeff, "ν, the weight of the covariance term; 1 in the paper"),
    )


def _variance_term(z: torch.Tensor) -> torch.Tensor:
    """v(Z) = mean_d relu(1 − sqrt(Var_d + ε)), unbiased variance over the batch. Scalar."""
    std = torch.sqrt(z.var(dim=0) + STD_EPS)  # (H,)
    return F.relu(1 - std).mean()


def _covariance_term(z: torch.Tensor) -> torch.Tensor:
    """c(Z) = Σ_{d≠e} Cov_de² / H with the unbiased covariance over the batch. Scalar."""
    batch, hidden = z.shape
    centred = z - z.mean(dim=0)  # (B, H)
    cov = centred.T @ centred / (batch - 1)  # (H, H)
    return fill_diagonal(cov, 0.0).pow(2).sum() / hidden


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
) -> torch.Tensor:
    """The VICReg loss of raw embeddings (see :class:`VICRegLoss`); computes in the inputs' dtype."""
    _check_hparams(sim_coeff, std_coeff, cov_coeff)
    require_pairs("vicreg", z1)
    invariance = F.mse_loss(z1, z2)
    variance = _variance_term(z1) + _variance_term(z2)
    covariance = _covariance_term(z1) + _covariance_term(z2)
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


@register_loss("vicreg")
class VICRegLoss(ContrastiveLoss):
    """VICReg: invariance between views plus variance and decorrelation of each view's dimensions.

    Works on the RAW embeddings z1, z2 (B, H), not on normalised ones (its variance target is a standard
    deviation of 1 per dimension). With Var_d and Cov_de the unbiased (÷ (B − 1)) batch variance and
    covariance of dimensions d, e of one view Z:

        v(Z) = mean_d relu(1 − sqrt(Var_d + 1e-4)),    c(Z) = Σ_{d≠e} Cov_de² / H
        loss = λ · mean_{i,d} (z1_id − z2_id)² + μ · (v(Z1) + v(Z2)) + ν · (c(Z1) + c(Z2))

    i.e. the variance and covariance terms are SUMMED over the two views, as in the paper's equation.
    Note that the authors' released code halves the variance term (averages v over the views); with this
    implementation, ``std_coeff=12.5`` reproduces the code's weighting at its μ = 25. Computed in float32;
    needs B ≥ 2 (unbiased statistics); no negatives, so no hard negatives either.

    Hyperparameters (dimensionless weights, ≥ 0):
        sim_coeff: λ, the invariance (mean squared error) weight; 25 in the paper.
        std_coeff: μ, the variance (hinge on the per-dimension std) weight; 25 in the paper.
        cov_coeff: ν, the covariance (off-diagonal decorrelation) weight; 1 in the paper.

    Relation to the other losses: the only loss here that is not invariant to the embeddings' scale and
    uses no negatives; the variance term plays uniformity's part (it prevents collapse).

    Reference: Bardes et al. (2022), arXiv:2105.04906.

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H): two dropout views of each
    sentence):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("vicreg", sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
    >>> z = torch.randn(8, 2, 16, requires_grad=True)
    >>> loss = loss_fn(z[:, 0], z[:, 1])
    >>> loss.shape
    torch.Size([])
    >>> loss.backward()  # differentiable in the embeddings
    """

    def __init__(self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0) -> None:
        super().__init__()
        self.sim_coeff, self.std_coeff, self.cov_coeff = _check_hparams(sim_coeff, std_coeff, cov_coeff)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None) -> torch.Tensor:
        return vicreg_loss(
            z1, z2, sim_coeff=self.sim_coeff, std_coeff=self.std_coeff, cov_coeff=self.cov_coeff
        )
