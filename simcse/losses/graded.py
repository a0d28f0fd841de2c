"""Graded-similarity ranking losses on pairs with a float score: CoSENT and AnglE's angle objective.

References: Su (2022), "CoSENT: a more efficient sentence vector scheme than Sentence-BERT"
(kexue.fm/archives/8847; the ranking loss as restated in the AnglE paper, its eq. 2); Li & Li (2023),
"AnglE-optimized Text Embeddings", arXiv:2309.12871 (the angle objective, its eqs. 3-5).
sentence-transformers implements both as ``CoSENTLoss`` and ``AnglELoss``
(sentence_transformers/losses/CoSENTLoss.py, AnglELoss.py); tests/losses/test_loss_parity_st.py checks that
these losses equal them, values and gradients, on the same embeddings.

The training data are pairs (z1_i, z2_i) with a gold similarity y_i (a ``score`` column, e.g. STS-B
train's 0..5): the losses only use the ORDER of the gold scores within a batch, so any monotone scale
of the scores trains the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simcse.losses.checks import check_temperature
from simcse.losses.registry import ContrastiveLoss, register_loss

__all__ = ["AnglELoss", "CoSENTLoss", "angle_similarity", "cosent_loss", "graded_ranking_loss"]


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


@register_loss("cosent", flags={"temp": "temp"})
class CoSENTLoss(ContrastiveLoss):
    """CoSENT: a ranking loss that orders the pairs' cosines like their gold similarity scores.

    With s_i = cos(z1_i, z2_i) the cosine of pair i and y_i its gold score (B pairs of a batch):

        loss = log(1 + Σ_{(i, j): y_i > y_j} exp((s_j − s_i) / τ))

    a smooth maximum over every pair of pairs whose gold order is strict of how far the model's order
    violates it; ties in y contribute nothing, and only the order of the scores matters (not their scale).
    There are no in-batch negatives: each pair is compared with the other pairs' cosines only, so the
    batch needs pairs of different scores (a batch of equal scores, or of one pair, has loss log 1 = 0 and
    no gradient).

    Hyperparameters:
        temp: τ > 0; 0.05 (sentence-transformers' ``scale`` = 1/τ = 20, the value of Su 2022 and of AnglE).

    Takes ``scores`` (B,), a float per pair (training data with a ``score`` column); no hard negatives.

    References: Su (2022), kexue.fm/archives/8847; restated in Li & Li (2023), arXiv:2309.12871, eq. 2.
    Equal to sentence-transformers' ``CoSENTLoss(scale=1/τ)`` (tests/losses/test_loss_parity_st.py).

    Example (``z`` stands for ``model(**batch).embeddings``, (B, 2, H), and ``scores`` for the batch's gold
    scores, e.g. STS-B train's 0..5):

    >>> import torch
    >>> from simcse.losses import build_loss
    >>> loss_fn = build_loss("cosent")
    >>> z = torch.randn(4, 2, 16, requires_grad=True)
    >>> scores = torch.tensor([5.0, 3.2, 0.4, 1.0])
    >>> loss = loss_fn(z[:, 0], z[:, 1], scores=scores)
    >>> loss.shape
    torch.Size([])
    """

    needs_scores = True

    def __init__(self, temp: float = 0.05) -> None:
        super().__init__()
        self.temp = check_temperature(temp)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                scores: torch.Tensor) -> torch.Tensor:
        return cosent_loss(z1, z2, scores, temp=self.temp)


@register_loss("angle", flags={"temp": "temp"})
class AnglELoss(ContrastiveLoss):
    """AnglE's angle objective: CoSENT's ranking loss on an angle similarity in complex space.

    Each unit vector x = z/‖z‖ (width H, padded with one zero when H is odd) is read as a complex vector
    of H/2 coordinates, real part x[:H/2], imaginary part x[H/2:]. For a pair, with
    p = Σ_k x_k ȳ_k (for unit vectors: real part the cosine x·y, imaginary part the "sine"):

        a_i = | Re p_i + Im p_i | = | x_i·y_i + Σ_k (x_im,k y_re,k − x_re,k y_im,k) |
        loss = log(1 + Σ_{(i, j): y_i > y_j} exp((a_j − a_i) / τ))

    The paper motivates the angle as a way round the saturation of cos near ±1, where its gradient
    vanishes. This is the angle term alone, as sentence-transformers' ``AnglELoss`` (its recommended use:
    combined with ``CoSENTLoss`` and an in-batch-negative loss); the paper's full objective is the
    weighted sum w1·(CoSENT) + w2·(in-batch InfoNCE) + w3·(this term).

    Hyperparameters:
        temp: τ > 0; 0.05 (``scale`` 20, the paper's angle temperature).

    Takes ``scores`` (B,), a float per pair (training data with a ``score`` column); no hard negatives.

    Reference: Li & Li (2023), "AnglE-optimized Text Embeddings", arXiv:2309.12871, eqs. 3-5. Equal to
    sentence-transformers' ``AnglELoss(scale=1/τ)`` (tests/losses/test_loss_parity_st.py).
    """

    needs_scores = True

    def __init__(self, temp: float = 0.05) -> None:
        super().__init__()
        self.temp = check_temperature(temp)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                scores: torch.Tensor) -> torch.Tensor:
        return cosent_loss(z1, z2, scores, temp=self.temp, angle=True)
