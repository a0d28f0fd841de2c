"""Losses against hand computations (explicit loops, float64), the registry and its errors, AMP safety."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from simcse.errors import SimCSEError
from simcse.losses import LOSSES, ContrastiveLoss, InfoNCELoss, build_loss, loss_kwargs_of, register_loss
from simcse.losses.infonce import infonce_logits, positive_probabilities

B, H = 5, 7


def _embeddings(seed: int, with_z3: bool) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    count = 3 if with_z3 else 2
    return tuple(torch.randn(B, H, generator=g, dtype=torch.float64) for _ in range(count))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dot = sum(a[k] * b[k] for k in range(a.shape[0]))
    norm_a = torch.sqrt(sum(a[k] * a[k] for k in range(a.shape[0])))
    norm_b = torch.sqrt(sum(b[k] * b[k] for k in range(b.shape[0])))
    return dot / (norm_a * norm_b)


def _neg_log_softmax(row: list[torch.Tensor], target: int) -> torch.Tensor:
    # Shift by the max so exp cannot overflow at τ = 0.05 (logits up to 20).
    top = max(float(v.detach()) for v in row)
    denominator = sum(torch.exp(v - top) for v in row)
    return -(row[target] - top - torch.log(denominator))


def hand_infonce(z1, z2, z3=None, temp=0.05, w=0.0, symmetric=False) -> torch.Tensor:
    """Eq. 1 (and eq. 5 with hard negatives) of Gao et al. 2021, arXiv:2104.08821, element by element."""
    n = z1.shape[0]
    rows = []
    for i in range(n):
        row = [_cos(z1[i], z2[j]) / temp for j in range(n)]
        if z3 is not None:
            row += [_cos(z1[i], z3[j]) / temp + (w if j == i else 0.0) for j in range(n)]
        rows.append(_neg_log_softmax(row, i))
    loss = sum(rows) / n
    if symmetric:
        cols = []
        for j in range(n):
            col = [_cos(z1[i], z2[j]) / temp for i in range(n)]
            cols.append(_neg_log_softmax(col, j))
        loss = (loss + sum(cols) / n) / 2
    return loss


CASES = [
    pytest.param(False, 0.0, False, id="pairs"),
    pytest.param(False, 0.0, True, id="pairs-symmetric"),
    pytest.param(True, 0.0, False, id="hardneg"),
    pytest.param(True, 1.5, False, id="hardneg-weighted"),
    pytest.param(True, 1.5, True, id="hardneg-weighted-symmetric"),
    pytest.param(True, -0.7, False, id="hardneg-negative-weight"),
]


@pytest.mark.parametrize("with_z3, weight, symmetric", CASES)
@pytest.mark.parametrize("temp", [0.05, 0.5])
def test_infonce_matches_hand_computation_value_and_gradient(with_z3, weight, symmetric, temp):
    zs = _embeddings(seed=int(temp * 100) + len(CASES), with_z3=with_z3)
    ours_in = [z.clone().requires_grad_(True) for z in zs]
    hand_in = [z.clone().requires_grad_(True) for z in zs]

    loss_fn = InfoNCELoss(temp=temp, hard_negative_weight=weight, symmetric=symmetric)
    ours = loss_fn(*ours_in)
    hand = hand_infonce(*hand_in, temp=temp, w=weight, symmetric=symmetric)

    # float64 inputs are computed in float64 (only half precision is raised to float32): near-exact.
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, hand, rtol=1e-12, atol=1e-12)
    ours_grads = torch.autograd.grad(ours, ours_in)
    hand_grads = torch.autograd.grad(hand, hand_in)
    for ours_g, hand_g in zip(ours_grads, hand_grads):
        assert ours_g.dtype == torch.float64
        torch.testing.assert_close(ours_g, hand_g, rtol=1e-10, atol=1e-12)
        assert hand_g.abs().sum() > 0


def test_infonce_equals_cross_entropy_over_stacked_similarities():
    z1, z2, z3 = (z.float() for z in _embeddings(seed=3, with_z3=True))
    temp = 0.05
    x, y, x3 = F.normalize(z1, dim=1), F.normalize(z2, dim=1), F.normalize(z3, dim=1)
    logits = torch.cat([x @ y.T, x @ x3.T], dim=1) / temp
    expected = F.cross_entropy(logits, torch.arange(B))
    torch.testing.assert_close(InfoNCELoss(temp=temp)(z1, z2, z3), expected)
    torch.testing.assert_close(
        InfoNCELoss(temp=temp)(z1, z2), F.cross_entropy((x @ y.T) / temp, torch.arange(B))
    )


def test_hard_negative_weight_lands_only_on_the_own_hard_negative():
    z1, z2, z3 = (z.float() for z in _embeddings(seed=4, with_z3=True))
    plain = infonce_logits(z1, z2, z3, temp=0.1)
    weighted = infonce_logits(z1, z2, z3, temp=0.1, hard_negative_weight=1.5)
    assert plain.shape == weighted.shape == (B, 2 * B)
    expected_delta = torch.cat([torch.zeros(B, B), 1.5 * torch.eye(B)], dim=1)
    torch.testing.assert_close(weighted - plain, expected_delta)


def test_hard_negative_weight_is_a_logit():
    # w = ln 2 counts the own hard negative twice in the denominator.
    z1, z2, z3 = (z.double() for z in _embeddings(seed=5, with_z3=True))
    s = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / 0.05
    s3 = F.normalize(z1, dim=1) @ F.normalize(z3, dim=1).T / 0.05
    denominator = s.exp().sum(1) + s3.exp().sum(1) + s3.diagonal().exp()
    expected = (-(s.diagonal() - denominator.log())).mean()
    got = InfoNCELoss(hard_negative_weight=math.log(2))(z1, z2, z3)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_weight_is_ignored_without_hard_negatives():
    z1, z2 = _embeddings(seed=6, with_z3=False)
    assert InfoNCELoss(hard_negative_weight=3.0)(z1, z2).item() == InfoNCELoss()(z1, z2).item()


def test_symmetric_uses_columns_of_pairs_only():
    z1, z2, z3 = _embeddings(seed=7, with_z3=True)
    row = InfoNCELoss()(z1, z2, z3)
    column = InfoNCELoss()(z2, z1)  # CE over columns of S = CE over rows of Sᵀ, hard negatives absent
    symmetric = InfoNCELoss(symmetric=True)(z1, z2, z3)
    assert symmetric.item() == pytest.approx(((row + column) / 2).item(), rel=1e-6)
    assert symmetric.item() != pytest.approx(row.item(), rel=1e-3)


def test_known_answer_orthogonal_views():
    # Positives identical to anchors, all other pairs orthogonal: ℓ = −log(e^{1/τ} / (e^{1/τ} + (B−1))).
    z = torch.eye(4) * 3.0
    temp = 0.5
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 3))
    assert InfoNCELoss(temp=temp)(z, z).item() == pytest.approx(expected, rel=1e-6)


def test_scale_invariance():
    z1, z2, z3 = (z.float() for z in _embeddings(seed=8, with_z3=True))
    loss_fn = InfoNCELoss(hard_negative_weight=1.0)
    base = loss_fn(z1, z2, z3)
    torch.testing.assert_close(loss_fn(3 * z1, z2, z3), base)
    torch.testing.assert_close(loss_fn(z1, 0.2 * z2, 7 * z3), base)


def test_fp32_under_bf16_autocast():
    z1, z2, z3 = (z.float() for z in _embeddings(seed=9, with_z3=True))
    expected = InfoNCELoss()(z1, z2, z3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # Embeddings as an encoder under AMP would return them.
        loss = InfoNCELoss()(z1.bfloat16(), z2.bfloat16(), z3.bfloat16())
        full = InfoNCELoss()(z1, z2, z3)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # Autocast would run the matmul in bf16 (3 significant digits); disabled, fp32 inputs give fp32 maths.
    torch.testing.assert_close(full, expected, rtol=1e-6, atol=1e-6)
    assert loss.item() == pytest.approx(expected.item(), rel=0.05)


def test_no_overflow_at_small_temperature_in_half_precision_inputs():
    z = torch.eye(4, dtype=torch.float16) * 100
    loss = InfoNCELoss(temp=0.01)(z, z)  # logits 100: e^100 overflows fp16 and fp32
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_positive_probabilities():
    z1, z2, z3 = (z.float() for z in _embeddings(seed=10, with_z3=True))
    logits = infonce_logits(z1, z2, z3, temp=0.05)
    p = positive_probabilities(logits)
    assert p.shape == (B,)
    torch.testing.assert_close(p, logits.softmax(dim=1).diagonal())
    # Mean −log p_ii is the loss.
    torch.testing.assert_close(-p.log().mean(), InfoNCELoss()(z1, z2, z3))


# ----- registry -------------------------------------------------------------------------------------


def test_registry_lists_infonce_with_defaults():
    assert LOSSES["infonce"] is InfoNCELoss
    assert loss_kwargs_of("infonce") == {"temp": 0.05, "hard_negative_weight": 0.0, "symmetric": False}
    loss = build_loss("infonce", temp=0.1, symmetric=True)
    assert isinstance(loss, InfoNCELoss)
    assert loss.hparams() == {"temp": 0.1, "hard_negative_weight": 0.0, "symmetric": True}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_builds_from_defaults_and_reports_them(name):
    loss = build_loss(name)
    assert loss.name == name
    assert loss.hparams() == loss_kwargs_of(name)
    z1, z2, z3 = (z.float() for z in _embeddings(seed=11, with_z3=True))
    extras = {"scores": torch.arange(len(z1), dtype=torch.float32) % 3} if loss.needs_scores else {}
    if loss.needs_guide:
        extras["guide"] = torch.stack([z1, z2, z3] if loss.supports_hard_negatives else [z1, z2], dim=1)
    value = loss(z1, z2, z3, **extras) if loss.supports_hard_negatives else loss(z1, z2, **extras)
    assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(SimCSEError, match=r"unknown loss 'nope'; choose one of: .*infonce"):
        build_loss("nope")
    with pytest.raises(SimCSEError, match="infonce"):
        loss_kwargs_of("InfoNCE")


def test_unknown_kwarg_lists_valid_kwargs():
    with pytest.raises(SimCSEError) as info:
        build_loss("infonce", tau=0.05, margin=1)
    message = str(info.value)
    assert "'margin', 'tau'" in message
    assert "temp, hard_negative_weight, symmetric" in message


@pytest.mark.parametrize("temp", [0.0, -0.05, float("nan"), float("inf"), "0.05"])
def test_temperature_must_be_positive(temp):
    with pytest.raises(SimCSEError, match=rf"temp must be a positive number.*got {re.escape(repr(temp))}$"):
        build_loss("infonce", temp=temp)
    with pytest.raises(SimCSEError, match="temp must be a positive number"):
        infonce_logits(torch.ones(2, 3), torch.ones(2, 3), temp=temp)


def test_symmetric_and_weight_validation():
    with pytest.raises(SimCSEError, match="symmetric must be True or False, got 'yes'"):
        InfoNCELoss(symmetric="yes")
    with pytest.raises(SimCSEError, match="hard_negative_weight must be a finite number.*got inf"):
        InfoNCELoss(hard_negative_weight=float("inf"))


def test_shape_errors():
    loss = InfoNCELoss()
    with pytest.raises(SimCSEError, match=r"z2 has shape \(3, 4\) but z1 has \(2, 4\)"):
        loss(torch.ones(2, 4), torch.ones(3, 4))
    with pytest.raises(SimCSEError, match=r"z3 has shape \(2, 5\)"):
        loss(torch.ones(2, 4), torch.ones(2, 4), torch.ones(2, 5))
    with pytest.raises(SimCSEError, match=r"\(batch, hidden\); got z1 of shape \(2, 2, 4\)"):
        loss(torch.ones(2, 2, 4), torch.ones(2, 2, 4))
    with pytest.raises(SimCSEError, match="empty batch"):
        loss(torch.ones(0, 4), torch.ones(0, 4))


class _PairsOnly(ContrastiveLoss):
    """Unregistered: exercises the base class without touching the global registry."""

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.scale = scale

    def compute(self, z1, z2, z3):
        self.seen_dtype = z1.dtype
        return self.scale * (z1 - z2).pow(2).sum()


def test_base_raises_half_precision_to_fp32_keeps_fp64_and_rejects_hard_negatives():
    loss = _PairsOnly()
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        value = loss(torch.ones(2, 3, dtype=dtype), torch.zeros(2, 3, dtype=dtype))
        assert loss.seen_dtype == torch.float32 and value.dtype == torch.float32 and value.item() == 12.0
    value = loss(torch.ones(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    assert loss.seen_dtype == torch.float64 and value.dtype == torch.float64
    assert loss.hparams() == {"scale": 2.0}
    with pytest.raises(SimCSEError,
                       match=r"cannot use the hard negatives of the batch \(z3 of shape \(2, 3\)\).*infonce"):
        loss(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3))


def test_register_loss_validates_names_and_constructors():
    with pytest.raises(ValueError, match="lower-case"):
        register_loss("InfoNCE")
    with pytest.raises(ValueError, match="already registered"):
        register_loss("infonce")(_PairsOnly)
    with pytest.raises(TypeError, match="ContrastiveLoss subclass"):
        register_loss("not_a_loss")(torch.nn.Module)

    class NeedsArgument(ContrastiveLoss):
        def __init__(self, margin: float) -> None:
            super().__init__()

    with pytest.raises(TypeError, match="'margin' needs a default"):
        register_loss("needs_argument")(NeedsArgument)
    assert "not_a_loss" not in LOSSES and "needs_argument" not in LOSSES
