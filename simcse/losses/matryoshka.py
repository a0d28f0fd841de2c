"""Matryoshka representation learning as a wrapper over any registered loss.

Kusupati et al. (2022), "Matryoshka Representation Learning", arXiv:2205.13147: the loss is applied to
the first d coordinates of the embeddings for each d of a list of nested widths, and the weighted sum
is minimised, so that every prefix of the trained embedding is itself a usable embedding
(evaluate one with ``evaluation.py --truncate_dim d``).

    loss = Σ_m c_m · L(z1[:, :d_m], z2[:, :d_m], z3[..., :d_m])

Hyperparameters: ``dims`` (the widths d_m, each ≤ the embedding width; include the full width) and
``weights`` (c_m, default 1 each). The prefixes are passed on as they are; sentence-transformers'
``MatryoshkaLoss`` re-normalises them first, which changes nothing for the losses that normalise their
inputs (all but ``vicreg``). Scores, guide embeddings and text keys (graded and guided losses,
``--mask_duplicate_texts``) are passed to every term as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from simcse.errors import SimCSEError
from simcse.losses.checks import check_non_negative
from simcse.losses.registry import ContrastiveLoss, compute_dtype

__all__ = ["Matryoshka2dLoss", "MatryoshkaLoss"]


class MatryoshkaLoss(ContrastiveLoss):
    """Σ_m c_m · ``loss`` on the first d_m coordinates (see the module docstring). Not a registry entry:
    it wraps one (``train.py --loss_type NAME --matryoshka_dims 384,128,64``)."""

    def __init__(self, loss: ContrastiveLoss, dims: Sequence[int], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        dims = list(dims)
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise SimCSEError(f"matryoshka dims must be positive integers, got {dims!r}")
        if len(set(dims)) != len(dims):
            raise SimCSEError(f"matryoshka dims repeat a width: {dims!r}")
        if len(weights) != len(dims) or any(not (w >= 0) for w in weights):
            raise SimCSEError(f"matryoshka weights must be {len(dims)} non-negative numbers (one per dim), "
                              f"got {weights!r}")
        self.loss = loss
        self.dims, self.weights = dims, weights
        # What the wrapped loss consumes, the wrapper consumes (instance attributes shadow the class flags).
        self.supports_hard_negatives = loss.supports_hard_negatives
        self.needs_scores = loss.needs_scores
        self.needs_guide = loss.needs_guide
        self.masks_duplicates = loss.masks_duplicates
        self.name = loss.name

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None = None, *,
                scores: torch.Tensor | None = None, guide: torch.Tensor | None = None,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        width = z1.shape[-1]
        if max(self.dims) > width:
            raise SimCSEError(f"matryoshka dims {self.dims} exceed the embedding width {width}; use widths <= {width}")
        extras = _extras(scores=scores, guide=guide, keys=keys)
        total = None
        for dim, weight in zip(self.dims, self.weights):
            term = weight * self.loss(z1[..., :dim], z2[..., :dim], None if z3 is None else z3[..., :dim], **extras)
            total = term if total is None else total + term
        return total

    def hparams(self) -> dict[str, Any]:
        return {**self.loss.hparams(), "matryoshka_dims": list(self.dims), "matryoshka_weights": list(self.weights)}


class Matryoshka2dLoss(ContrastiveLoss):
    """2D Matryoshka: a loss on the final layer's embeddings plus the same loss on earlier layers' (ESE/2DMSE).

    Li et al. (2024), "ESE: Espresso Sentence Embeddings" (first titled "2D Matryoshka Sentence
    Embeddings"), arXiv:2402.14776: every layer's pooled output is trained to be a usable embedding (so
    the encoder can be cut after fewer layers), its dimensions nested too when ``loss`` is a
    :class:`MatryoshkaLoss`, and each earlier layer is pulled towards the final layer by a KL term.
    With z the final embeddings, z^(l) those of earlier layer l (l = 0 is the embedding layer's output,
    pooled like the others), S a random sample of ``n_layers_per_step`` earlier layers (all of them for
    -1), and p_T(v) = softmax(v / T) over the coordinates of each sentence vector v:

        loss = a · L(z) + Σ_{l ∈ S} [ b / |S| · L(z^(l)) + c · T · KL(p_T(z) ‖ p_T(z^(l))) ]

    where the KL divergence is averaged over the B·N sentence vectors (anchors, positives, hard
    negatives) and p_T(z) is detached (the final layer is the teacher). a = ``last_layer_weight``,
    b = ``prior_layers_weight``, c = ``kl_div_weight``, T = ``kl_temperature`` (T = 0: no KL term).
    This is sentence-transformers' ``AdaptiveLayerLoss`` with uniform layer weighting, and with a
    :class:`MatryoshkaLoss` inside its ``Matryoshka2dLoss`` (which by default samples one width per
    step, where this wrapper uses every width; tests/losses/test_loss_parity_st.py compares the two with all
    layers and all widths).

    ``forward`` takes ``layers``, the earlier layers' pooled embeddings (B, N, L, H) with N = 2 + K
    sentence columns (the model gives them with ``all_layers=True``), besides what ``loss`` takes.
    """

    needs_layers: ClassVar[bool] = True

    def __init__(self, loss: ContrastiveLoss, n_layers_per_step: int = 1, last_layer_weight: float = 1.0,
                 prior_layers_weight: float = 1.0, kl_div_weight: float = 1.0, kl_temperature: float = 0.3) -> None:
        super().__init__()
        if isinstance(n_layers_per_step, bool) or not isinstance(n_layers_per_step, int) or \
                not (n_layers_per_step == -1 or n_layers_per_step >= 1):
            raise SimCSEError(f"n_layers_per_step must be a positive number of earlier layers per step, or -1 for "
                              f"all of them, got {n_layers_per_step!r}")
        for name, value in (("last_layer_weight", last_layer_weight), ("prior_layers_weight", prior_layers_weight),
                            ("kl_div_weight", kl_div_weight), ("kl_temperature", kl_temperature)):
            check_non_negative(name, value, "a weight of the 2D Matryoshka loss" if name != "kl_temperature"
                               else "the softmax temperature of the layer KL term; 0 switches it off")
        self.loss = loss
        self.n_layers_per_step = n_layers_per_step
        self.last_layer_weight, self.prior_layers_weight = float(last_layer_weight), float(prior_layers_weight)
        self.kl_div_weight, self.kl_temperature = float(kl_div_weight), float(kl_temperature)
        self.supports_hard_negatives = loss.supports_hard_negatives
        self.needs_scores = loss.needs_scores
        self.needs_guide = loss.needs_guide
        self.masks_duplicates = loss.masks_duplicates
        self.name = loss.name

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None = None, *,
                scores: torch.Tensor | None = None, guide: torch.Tensor | None = None,
                keys: torch.Tensor | None = None, layers: torch.Tensor | None = None) -> torch.Tensor:
        extras = _extras(scores=scores, guide=guide, keys=keys)
        columns = 2 + (0 if z3 is None else (1 if z3.dim() == 2 else z3.shape[1]))
        if layers is None or layers.dim() != 4 or layers.shape[:2] != (z1.shape[0], columns) or \
                layers.shape[-1] != z1.shape[-1]:
            raise SimCSEError(f"2D Matryoshka needs the earlier layers' embeddings (batch, {columns}, layers, "
                              f"{z1.shape[-1]}), got {None if layers is None else tuple(layers.shape)}")
        loss = self.last_layer_weight * self.loss(z1, z2, z3, **extras)
        num_layers = layers.shape[2]
        if self.n_layers_per_step == -1 or self.n_layers_per_step >= num_layers:
            chosen = list(range(num_layers))
        else:
            chosen = sorted(torch.randperm(num_layers)[: self.n_layers_per_step].tolist())
        if not chosen:
            return loss
        final = _columns_of(z1, z2, z3)  # (N·B, H), column-major like sentence-transformers' concatenation
        teacher = None
        if self.kl_temperature > 0:
            teacher = F.softmax(final.to(compute_dtype(final)) / self.kl_temperature, dim=-1).detach()
        for layer in chosen:
            h = layers[:, :, layer]  # (B, N, H)
            h3 = None if z3 is None else (h[:, 2] if z3.dim() == 2 else h[:, 2:])
            loss = loss + self.prior_layers_weight / len(chosen) * self.loss(h[:, 0], h[:, 1], h3, **extras)
            if teacher is not None:
                student = _columns_of(h[:, 0], h[:, 1], h3)
                student = F.log_softmax(student.to(compute_dtype(student)) / self.kl_temperature, dim=-1)
                kl = F.kl_div(student, teacher, reduction="batchmean")
                loss = loss + self.kl_div_weight * self.kl_temperature * kl
        return loss

    def hparams(self) -> dict[str, Any]:
        return {**self.loss.hparams(), "matryoshka_2d": {
            "n_layers_per_step": self.n_layers_per_step, "last_layer_weight": self.last_layer_weight,
            "prior_layers_weight": self.prior_layers_weight, "kl_div_weight": self.kl_div_weight,
            "kl_temperature": self.kl_temperature}}


def _extras(**inputs: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The inputs beyond the embeddings that were given, for the wrapped loss (which checks them)."""
    return {key: value for key, value in inputs.items() if value is not None}


def _columns_of(z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None) -> torch.Tensor:
    """Every sentence vector of the batch, column by column: anchors, positives, then the hard negatives."""
    parts = [z1, z2]
    if z3 is not None:
        parts += [z3] if z3.dim() == 2 else list(z3.unbind(1))
    return torch.cat(parts, dim=0)
