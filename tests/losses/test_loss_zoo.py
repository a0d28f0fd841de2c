"""The loss zoo: every registered loss against a naive loop implementation, a generic table over the
registry (degenerate batches, AMP, hard negatives, hyperparameters), the relations between the losses,
and the diagnostics.

InfoNCE itself is covered by tests/losses/test_losses.py, including its equality with a cross-entropy over the
stacked similarities [S, S3] / τ (test_infonce_equals_cross_entropy_over_stacked_similarities).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from simcse.errors import SimCSEError
from simcse.losses import LOSSES, build_loss, loss_kwargs_of
from simcse.losses.dcl import dcl_losses
from simcse.losses.diagnostics import alignment, positive_probability, uniformity
from simcse.losses.margin import mat_loss, met_loss, mpt_loss
from simcse.losses.ops import COSINE_EPS

B, H = 5, 7

# ----- naive implementations: explicit loops over i, j (and k), float64, straight from the formulas ----


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return sum(a[k] * b[k] for k in range(a.shape[0]))


def _norm(a: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(_dot(a, a))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _dot(a, b) / (_norm(a) * _norm(b))


def _sq_dist_unit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a/‖a‖ − b/‖b‖‖² by explicit differences (not via 2 − 2 cos)."""
    na, nb = _norm(a), _norm(b)
    return sum((a[k] / na - b[k] / nb) ** 2 for k in range(a.shape[0]))


def _lse(values: list[torch.Tensor]) -> torch.Tensor:
    top = max(float(v.detach()) for v in values)  # shift so exp cannot overflow at τ = 0.05
    return top + torch.log(sum(torch.exp(v - top) for v in values))


def _mean(values: list[torch.Tensor]) -> torch.Tensor:
    return sum(values) / len(values)


def _relu(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp_min(v, 0.0)


def _ce(row: list[torch.Tensor], target: int) -> torch.Tensor:
    return -row[target] + _lse(row)


def naive_nt_xent(z1, z2, z3=None, *, temp):
    rows = [z1[i] for i in range(len(z1))] + [z2[i] for i in range(len(z2))]
    n = len(z1)
    losses = []
    for r in range(2 * n):
        partner = r + n if r < n else r - n
        others = [_cos(rows[r], rows[c]) / temp for c in range(2 * n) if c != r]
        losses.append(-_cos(rows[r], rows[partner]) / temp + _lse(others))
    return _mean(losses)


def _naive_dcl_direction(a, b, hard, temp, same_view):
    n = len(a)
    losses = []
    for i in range(n):
        negatives = [_cos(a[i], b[j]) / temp for j in range(n) if j != i]
        if same_view:
            negatives += [_cos(a[i], a[j]) / temp for j in range(n) if j != i]
        if hard is not None:
            negatives += [_cos(a[i], hard[j]) / temp for j in range(n)]
        losses.append(-_cos(a[i], b[i]) / temp + _lse(negatives))
    return losses


def naive_dcl_per_anchor(z1, z2, z3=None, *, temp, same_view_negatives=False, symmetric=False):
    losses = _naive_dcl_direction(z1, z2, z3, temp, same_view_negatives)
    if symmetric:
        losses += _naive_dcl_direction(z2, z1, None, temp, same_view_negatives)
    return losses


def naive_dcl(z1, z2, z3=None, **hparams):
    return _mean(naive_dcl_per_anchor(z1, z2, z3, **hparams))


def naive_dcl_pos(z1, z2, z3=None, *, temp):
    return _mean([_relu(v) for v in naive_dcl_per_anchor(z1, z2, z3, temp=temp)])


def naive_dhel(z1, z2, z3=None, *, temp, include_augs=True):
    n = len(z1)
    losses = []
    for i in range(n):
        value = -_cos(z1[i], z2[i]) / temp + _lse([_cos(z1[i], z1[j]) / temp for j in range(n) if j != i])
        if include_augs:
            value = value + _lse([_cos(z2[i], z2[j]) / temp for j in range(n) if j != i])
        losses.append(value)
    return _mean(losses)


def _naive_pair_kernels(z, t):
    n = len(z)
    return [torch.exp(-t * _sq_dist_unit(z[i], z[j])) for i in range(n) for j in range(i + 1, n)]


def naive_kcl(z1, z2, z3=None, *, t, gamma):
    n = len(z1)
    align = _mean([torch.exp(-t * _sq_dist_unit(z1[i], z2[i])) for i in range(n)])
    return -2 * align + gamma * (_mean(_naive_pair_kernels(z1, t)) + _mean(_naive_pair_kernels(z2, t)))


def naive_alignment(x, y, alpha):
    return _mean([_sq_dist_unit(x[i], y[i]) ** (alpha / 2) for i in range(len(x))])


def naive_uniformity(x, t):
    return torch.log(_mean(_naive_pair_kernels(x, t)))


def naive_align_uniform(z1, z2, z3=None, *, lam, alpha, t):
    return (1 - lam) * naive_alignment(z1, z2, alpha) + lam / 2 * (
        naive_uniformity(z1, t) + naive_uniformity(z2, t)
    )


def _naive_margin(z1, z2, margin, distance, nearest):
    """mean over positives y_j of relu(margin + d(x_j, y_j) − nearest_{i≠j} d(x_i, y_j)): per column."""
    n = len(z1)
    losses = []
    for j in range(n):
        positive = distance(z1[j], z2[j])
        negative = nearest([distance(z1[i], z2[j]) for i in range(n) if i != j])
        losses.append(_relu(margin + positive - negative))
    return _mean(losses)


def _closest(values):
    return min(values, key=lambda v: float(v.detach()))


def naive_met(z1, z2, z3=None, *, margin):
    return _naive_margin(z1, z2, margin, lambda a, b: torch.sqrt(_sq_dist_unit(a, b)), _closest)


def naive_mpt(z1, z2, z3=None, *, margin):
    # "Distance" −cos: the nearest negative has the largest cosine.
    return _naive_margin(z1, z2, margin, lambda a, b: -_cos(a, b), _closest)


def naive_mat(z1, z2, z3=None, *, margin):
    return _naive_margin(z1, z2, margin * math.pi, lambda a, b: torch.arccos(_cos(a, b)), _closest)


def naive_vicreg(z1, z2, z3=None, *, sim_coeff, std_coeff, cov_coeff):
    n, hidden = z1.shape
    invariance = sum((z1[i, d] - z2[i, d]) ** 2 for i in range(n) for d in range(hidden)) / (n * hidden)
    variance = covariance = 0.0
    for z in (z1, z2):
        means = [sum(z[i, d] for i in range(n)) / n for d in range(hidden)]

        def cov(d, e, z=z, means=means):
            return sum((z[i, d] - means[d]) * (z[i, e] - means[e]) for i in range(n)) / (n - 1)

        variance = variance + _mean([_relu(1 - torch.sqrt(cov(d, d) + 1e-4)) for d in range(hidden)])
        covariance = (
            covariance + sum(cov(d, e) ** 2 for d in range(hidden) for e in range(hidden) if d != e) / hidden
        )
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


def naive_arccon(z1, z2, z3=None, *, temp, margin):
    n = len(z1)
    losses = []
    for i in range(n):
        row = []
        for j in range(n):
            if j == i:
                row.append(torch.cos(torch.arccos(_cos(z1[i], z2[i])) + margin * math.pi / 180) / temp)
            else:
                row.append(_cos(z1[i], z2[j]) / temp)
        if z3 is not None:
            row += [_cos(z1[i], z3[j]) / temp for j in range(n)]
        losses.append(_ce(row, i))
    return _mean(losses)


def _naive_ranking(sims, scores, temp):
    n = len(sims)
    terms = [(sims[j] - sims[i]) / temp for i in range(n) for j in range(n) if scores[i] > scores[j]]
    return _lse([torch.zeros((), dtype=sims[0].dtype)] + terms)


def naive_cosent(z1, z2, z3=None, *, temp, scores):
    return _naive_ranking([_cos(z1[i], z2[i]) for i in range(len(z1))], scores, temp)


def naive_angle(z1, z2, z3=None, *, temp, scores):
    sims = []
    for i in range(len(z1)):
        x, y = z1[i] / _norm(z1[i]), z2[i] / _norm(z2[i])
        half = (len(x) + 1) // 2  # odd width: the imaginary half is one shorter (a zero pad)
        re_x, im_x = x[:half], list(x[half:]) + [0.0] * (2 * half - len(x))
        re_y, im_y = y[:half], list(y[half:]) + [0.0] * (2 * half - len(y))
        sine = sum(im_x[k] * re_y[k] - re_x[k] * im_y[k] for k in range(half))
        sims.append(torch.abs(_dot(x, y) + sine))
    return _naive_ranking(sims, scores, temp)


def naive_gist(z1, z2, z3=None, *, temp, guide, margin=0.0, margin_strategy="absolute", contrast_anchors=True,
               contrast_positives=True):
    n = len(z1)
    hard = [] if z3 is None else [(z3[j], guide[j, 2]) for j in range(n)]
    losses = []
    for i in range(n):
        g_pos = float(_cos(guide[i, 0], guide[i, 1]))
        threshold = g_pos - margin if margin_strategy == "absolute" else g_pos - abs(g_pos) * margin
        row = []  # (logit, kept)
        for j in range(n):
            row.append((_cos(z1[i], z2[j]) / temp, j == i or float(_cos(guide[i, 0], guide[j, 1])) <= threshold))
        if contrast_anchors:
            row += [(_cos(z1[i], z1[j]) / temp, float(_cos(guide[i, 0], guide[j, 0])) <= threshold)
                    for j in range(n) if j != i]
        if contrast_positives:
            row += [(_cos(z2[i], z2[j]) / temp, float(_cos(guide[i, 1], guide[j, 1])) <= threshold)
                    for j in range(n) if j != i]
        row += [(_cos(z1[i], neg) / temp, float(_cos(guide[i, 0], g_neg)) <= threshold) for neg, g_neg in hard]
        losses.append(-row[i][0] + _lse([logit for logit, kept in row if kept]))
    return _mean(losses)


# (name, hyperparameters, with hard negatives, naive implementation)
NAIVE_CASES = [
    ("nt_xent", {"temp": 0.05}, False, naive_nt_xent),
    ("nt_xent", {"temp": 0.5}, False, naive_nt_xent),
    ("dcl", {"temp": 0.05}, False, naive_dcl),
    ("dcl", {"temp": 0.1, "same_view_negatives": True}, False, naive_dcl),
    ("dcl", {"temp": 0.1, "symmetric": True}, False, naive_dcl),
    ("dcl", {"temp": 0.2, "same_view_negatives": True, "symmetric": True}, False, naive_dcl),
    ("dcl", {"temp": 0.05}, True, naive_dcl),
    ("dcl", {"temp": 0.1, "same_view_negatives": True, "symmetric": True}, True, naive_dcl),
    ("dcl_pos", {"temp": 0.05}, False, naive_dcl_pos),
    ("dcl_pos", {"temp": 0.3}, True, naive_dcl_pos),
    ("dhel", {"temp": 0.05}, False, naive_dhel),
    ("dhel", {"temp": 0.3, "include_augs": False}, False, naive_dhel),
    ("kcl", {"t": 2.0, "gamma": 16.0}, False, naive_kcl),
    ("kcl", {"t": 0.7, "gamma": 3.0}, False, naive_kcl),
    ("align_uniform", {"lam": 0.5, "alpha": 2.0, "t": 2.0}, False, naive_align_uniform),
    ("align_uniform", {"lam": 0.3, "alpha": 1.5, "t": 3.0}, False, naive_align_uniform),
    ("met", {"margin": 0.45}, False, naive_met),
    ("met", {"margin": 0.9}, False, naive_met),
    ("mpt", {"margin": 0.09}, False, naive_mpt),
    ("mpt", {"margin": 0.4}, False, naive_mpt),
    ("mat", {"margin": 0.15}, False, naive_mat),
    ("mat", {"margin": 0.3}, False, naive_mat),
    ("vicreg", {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0}, False, naive_vicreg),
    ("vicreg", {"sim_coeff": 2.0, "std_coeff": 3.0, "cov_coeff": 0.5}, False, naive_vicreg),
    ("arccon", {"temp": 0.05, "margin": 10.0}, False, naive_arccon),
    ("arccon", {"temp": 0.1, "margin": 25.0}, True, naive_arccon),
    ("cosent", {"temp": 0.05}, False, naive_cosent),
    ("cosent", {"temp": 0.5}, False, naive_cosent),
    ("angle", {"temp": 0.05}, False, naive_angle),
    ("angle", {"temp": 0.3}, False, naive_angle),
    ("gist", {"temp": 0.01}, False, naive_gist),
    ("gist", {"temp": 0.05, "margin": 0.2, "margin_strategy": "relative"}, True, naive_gist),
    ("gist", {"temp": 0.1, "margin": 0.1, "contrast_anchors": False}, True, naive_gist),
    ("gist", {"temp": 0.1, "contrast_positives": False}, False, naive_gist),
]

#: Gold scores of the graded losses' pairs (one tie); a batch of b pairs takes the first b.
SCORES = [0.5, 3.0, 1.2, 3.0, 4.8, 0.0, 2.2, 5.0]


def _extra_inputs(loss_fn, z1: torch.Tensor, z2: torch.Tensor | None = None,
                  z3: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """What a loss consumes beyond the embeddings: gold scores for graded losses, a guide's embeddings
    (B, 2 + K, 6) for guided ones (fixed noisy copies: the guide agrees with itself, not with z)."""
    extras = {}
    if loss_fn.needs_scores:
        extras["scores"] = torch.tensor(SCORES[: z1.shape[0]], dtype=z1.dtype)
    if loss_fn.needs_guide:
        g = torch.Generator().manual_seed(99)
        batch, negatives = z1.shape[0], 0 if z3 is None else (1 if z3.dim() == 2 else z3.shape[1])
        base = torch.randn(batch, 6, generator=g, dtype=torch.float64)
        views = [base, base + 0.7 * torch.randn(batch, 6, generator=g, dtype=torch.float64)]
        views += [torch.randn(batch, 6, generator=g, dtype=torch.float64) for _ in range(negatives)]
        extras["guide"] = torch.stack(views, dim=1).to(z1.dtype if z1.dtype == torch.float64 else torch.float32)
    return extras


class _Fed:
    """A loss called with the embeddings alone, its other inputs (scores) supplied by _extra_inputs."""

    def __init__(self, loss_fn):
        self.loss = loss_fn

    def __call__(self, *zs):
        return self.loss(*zs, **_extra_inputs(self.loss, *zs))

    def __getattr__(self, key):
        return getattr(self.loss, key)


def _build(name: str, **hparams) -> _Fed:
    return _Fed(build_loss(name, **hparams))


def _embeddings(seed: int, count: int = 3, batch: int = B, hidden: int = H) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Scale 0.6: VICReg's per-dimension std then straddles its target of 1 (other losses are scale-free).
    return [0.6 * torch.randn(batch, hidden, generator=g, dtype=torch.float64) for _ in range(count)]


def _value_and_grads(fn, zs):
    leaves = [z.clone().requires_grad_(True) for z in zs]
    value = fn(*leaves)
    return value, torch.autograd.grad(value, leaves)


def test_naive_cases_cover_every_registered_loss():
    assert {case[0] for case in NAIVE_CASES} == set(LOSSES) - {"infonce"}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "name, hparams, with_z3, naive",
    [pytest.param(*case, id=f"{case[0]}-{i}") for i, case in enumerate(NAIVE_CASES)],
)
def test_loss_matches_naive_loops_value_and_gradients(name, hparams, with_z3, naive, seed):
    zs = _embeddings(seed=100 * seed + len(hparams))[: 3 if with_z3 else 2]
    loss_fn = _build(name, **hparams)
    assert loss_fn.hparams() == {**loss_kwargs_of(name), **hparams}
    extras = _extra_inputs(loss_fn, *zs)
    hand, hand_grads = _value_and_grads(lambda *z: naive(*z, **hparams, **extras), zs)
    assert any(g.abs().sum() > 0 for g in hand_grads)  # the comparison below can fail

    # 1) The registered loss on float64 inputs computes in float64 (only half precision is raised to
    #    float32): a double-precision gradient check against the loops is near-exact.
    ours, ours_grads = _value_and_grads(loss_fn, zs)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, hand, rtol=1e-10, atol=1e-12)
    for ours_g, hand_g in zip(ours_grads, hand_grads):
        assert ours_g.dtype == torch.float64
        torch.testing.assert_close(ours_g, hand_g, rtol=1e-9, atol=1e-12)

    # 2) As training calls it on float32 embeddings: float32 precision.
    single, single_grads = _value_and_grads(loss_fn, [z.float() for z in zs])
    assert single.dtype == torch.float32
    assert single.item() == pytest.approx(hand.item(), rel=1e-4, abs=1e-5)
    for single_g, hand_g in zip(single_grads, hand_grads):
        torch.testing.assert_close(single_g.double(), hand_g, rtol=1e-3, atol=1e-5)


# ----- generic table over the registry -----------------------------------------------------------------


def _batch(kind: str) -> list[torch.Tensor]:
    """Degenerate batches training produces (4 pairs, width 8), plus a hard-negative tensor."""
    z1, z2, z3 = _embeddings(seed=7, batch=4, hidden=8)
    if kind == "identical":  # dropout off, or a collapsed encoder: z2 = z1 (and hard negatives equal too)
        return [z1, z1.clone(), z1.clone()]
    if kind == "orthogonal":  # every pair of distinct rows at 90°, within and across views
        eye = torch.eye(8, dtype=torch.float64)
        return [2 * eye[:4], 3 * eye[4:], eye[[4, 5, 6, 7]] + eye[[0, 1, 2, 3]]]
    if kind == "duplicated":  # the same sentence twice in a batch
        z1[1], z2[1], z3[1] = z1[0], z2[0], z3[0]
        return [z1, z2, z3]
    assert kind == "random"
    return [z1, z2, z3]


ALL_LOSSES = sorted(LOSSES)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("kind", ["random", "identical", "orthogonal", "duplicated"])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_finite_value_and_gradients_on_degenerate_batches(name, kind, autocast):
    loss_fn = _build(name)
    zs = [z.float().requires_grad_(True) for z in _batch(kind)]
    if not loss_fn.supports_hard_negatives:
        zs = zs[:2]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        # Under AMP the encoder hands over bf16 embeddings; the loss must still compute in fp32.
        inputs = [z.bfloat16() for z in zs] if autocast else zs
        value = loss_fn(*inputs)
    assert value.dtype == torch.float32 and value.dim() == 0
    assert torch.isfinite(value), f"{name} on {kind}: {value}"
    for grad in torch.autograd.grad(value, zs):
        assert torch.isfinite(grad).all(), f"{name} on {kind}: non-finite gradient"


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bf16_autocast_matches_fp32(name):
    loss_fn = _build(name)
    zs = [z.float() for z in _batch("random")][: 3 if loss_fn.supports_hard_negatives else 2]
    expected = loss_fn(*zs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same_inputs = loss_fn(*zs)  # autocast is disabled inside: fp32 maths on fp32 inputs
        rounded_inputs = loss_fn(*[z.bfloat16() for z in zs])
    torch.testing.assert_close(same_inputs, expected, rtol=1e-6, atol=1e-6)
    assert rounded_inputs.item() == pytest.approx(expected.item(), rel=0.05, abs=0.05)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_hard_negatives_used_or_rejected(name):
    loss_fn = _build(name)
    z1, z2, z3 = (z.float() for z in _batch("random"))
    if loss_fn.supports_hard_negatives:
        with_z3 = loss_fn(z1, z2, z3)
        assert torch.isfinite(with_z3) and with_z3.item() != pytest.approx(loss_fn(z1, z2).item(), rel=1e-4)
    else:
        with pytest.raises(SimCSEError, match=rf"loss '{name}' cannot use the hard negatives of the batch \(z3"):
            loss_fn(z1, z2, z3)


def test_hard_negative_support_decisions():
    supported = {name for name, cls in LOSSES.items() if cls.supports_hard_negatives}
    assert supported == {"infonce", "dcl", "dcl_pos", "arccon", "gist"}


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_build_from_defaults_and_hparams_round_trip(name):
    loss_fn = _build(name)
    assert loss_fn.name == name and type(loss_fn.loss) is LOSSES[name]
    assert loss_fn.hparams() == loss_kwargs_of(name)
    rebuilt = _build(name, **loss_fn.hparams())
    assert rebuilt.hparams() == loss_fn.hparams()
    z1, z2 = (z.float() for z in _batch("random")[:2])
    assert rebuilt(z1, z2).item() == loss_fn(z1, z2).item()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_batch_of_one_is_finite_or_rejected(name):
    loss_fn = _build(name)
    z1, z2 = (z[:1].float().requires_grad_(True) for z in _batch("random")[:2])
    try:
        value = loss_fn(z1, z2)
    except SimCSEError as error:
        assert re.search(rf"loss '{name}' needs at least 2 pairs per batch.*got a batch of 1", str(error))
        return
    assert torch.isfinite(value) and all(
        torch.isfinite(g).all() for g in torch.autograd.grad(value, (z1, z2))
    )


SCALE_DEPENDENT = {"vicreg"}  # works on raw embeddings; every other loss sees cosines only


@pytest.mark.parametrize("name", sorted(set(LOSSES) - SCALE_DEPENDENT))
def test_losses_of_normalised_embeddings_ignore_scale(name):
    loss_fn = _build(name)
    zs = [z.float() for z in _batch("random")][: 3 if loss_fn.supports_hard_negatives else 2]
    scaled = [z * s for z, s in zip(zs, (3.0, 0.2, 7.0))]
    torch.testing.assert_close(loss_fn(*scaled), loss_fn(*zs), rtol=1e-5, atol=1e-5)


def test_vicreg_depends_on_scale():
    z1, z2 = (z.float() for z in _batch("random")[:2])
    loss_fn = build_loss("vicreg")
    assert loss_fn(3 * z1, 3 * z2).item() != pytest.approx(loss_fn(z1, z2).item(), rel=1e-3)


# ----- relations between the losses ---------------------------------------------------------------------


@pytest.mark.parametrize("with_z3", [False, True])
@pytest.mark.parametrize("temp", [0.05, 0.5])
def test_infonce_is_softplus_of_dcl_so_dcl_is_below(temp, with_z3):
    zs = [z.float() for z in _embeddings(seed=21)][: 3 if with_z3 else 2]
    infonce = build_loss("infonce", temp=temp)(*zs)
    dcl = build_loss("dcl", temp=temp)(*zs)
    dcl_pos = build_loss("dcl_pos", temp=temp)(*zs)
    # Per anchor: −S_ii/τ + log(e^{S_ii/τ} + Σ neg) = log(1 + e^{ℓ_i^dcl}).
    torch.testing.assert_close(infonce, F.softplus(dcl_losses(*zs, temp=temp)).mean())
    assert dcl < infonce and dcl <= dcl_pos < infonce


def test_dcl_pos_clips_solved_anchors_to_zero():
    z = torch.eye(4) * 2
    # Positives identical, negatives orthogonal: ℓ_i = −1/τ + log(3) < 0 at τ = 0.5.
    assert build_loss("dcl", temp=0.5)(z, z).item() == pytest.approx(-2 + math.log(3), rel=1e-6)
    assert build_loss("dcl_pos", temp=0.5)(z, z).item() == 0.0


def test_dcl_symmetric_same_view_is_the_2b_row_form():
    z1, z2, z3 = _embeddings(seed=22)
    temp = 0.1
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, H)
    sims = z @ z.T / temp  # (2B, 2B)
    partner = torch.arange(2 * B).roll(B)
    rows = []
    for r in range(2 * B):
        keep = [c for c in range(2 * B) if c not in (r, int(partner[r]))]
        rows.append(-sims[r, partner[r]] + torch.logsumexp(sims[r, keep], dim=0))
    expected = torch.stack(rows).mean()
    got = build_loss("dcl", temp=temp, same_view_negatives=True, symmetric=True)(z1, z2)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # ... and NT-Xent is the same 2B-row form with the positive kept: softplus of each row.
    per_row = dcl_losses(z1, z2, temp=temp, same_view_negatives=True, symmetric=True)
    nt_xent = build_loss("nt_xent", temp=temp)(z1, z2)  # float32
    assert nt_xent.item() == pytest.approx(F.softplus(per_row).mean().item(), rel=1e-6)


def test_nt_xent_is_symmetric_in_the_views():
    z1, z2, _ = (z.float() for z in _embeddings(seed=23))
    loss_fn = build_loss("nt_xent", temp=0.05)
    torch.testing.assert_close(loss_fn(z1, z2), loss_fn(z2, z1))
    assert loss_fn(z1, z2).item() != pytest.approx(build_loss("infonce")(z1, z2).item(), rel=1e-3)


def test_dhel_one_term_form_by_hand():
    z1, z2, _ = _embeddings(seed=24)
    temp = 0.3
    x, y = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    eye = torch.eye(B, dtype=torch.bool)
    positive = (x * y).sum(1) / temp
    x_term = torch.logsumexp((x @ x.T / temp).masked_fill(eye, -math.inf), dim=1)
    y_term = torch.logsumexp((y @ y.T / temp).masked_fill(eye, -math.inf), dim=1)
    one_term = build_loss("dhel", temp=temp, include_augs=False)(z1, z2)
    two_term = build_loss("dhel", temp=temp)(z1, z2)
    assert one_term.item() == pytest.approx((x_term - positive).mean().item(), rel=1e-5)
    assert (two_term - one_term).item() == pytest.approx(y_term.mean().item(), rel=1e-4)


def test_arccon_with_zero_margin_is_infonce_and_a_margin_raises_the_loss():
    zs = [z.float() for z in _embeddings(seed=25)]
    infonce = build_loss("infonce", temp=0.05)(*zs)
    torch.testing.assert_close(build_loss("arccon", margin=0.0)(*zs), infonce)
    assert build_loss("arccon", margin=10.0)(*zs) > infonce


# Three anchors 120° apart on a circle, each positive rotated by δ_j: every positive is nearer to its own
# anchor than to any other, and every off-diagonal cosine is negative.
_ANCHOR_DEG = [0.0, 120.0, 240.0]
_OFFSET_DEG = [10.0, -20.0, 30.0]


def _circle(degrees: list[float]) -> torch.Tensor:
    return torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


def _angle_between(a_deg: float, b_deg: float) -> float:
    diff = abs(a_deg - b_deg) % 360
    return math.radians(min(diff, 360 - diff))


def _expected_margin_loss(distance, margin: float) -> float:
    """Column-wise hardest-negative triplet from the angles alone (distance: angle in radians → d)."""
    positives_deg = [a + d for a, d in zip(_ANCHOR_DEG, _OFFSET_DEG)]
    total = 0.0
    for j, y_deg in enumerate(positives_deg):
        positive = distance(_angle_between(_ANCHOR_DEG[j], y_deg))
        hardest = min(distance(_angle_between(_ANCHOR_DEG[i], y_deg)) for i in range(3) if i != j)
        total += max(0.0, margin + positive - hardest)
    return total / 3


MARGIN_CASES = [
    pytest.param(met_loss, 1.5, 1.5, lambda a: 2 * math.sin(a / 2), id="met"),  # chord = 2 sin(θ/2)
    pytest.param(mpt_loss, 1.5, 1.5, lambda a: -math.cos(a), id="mpt"),
    pytest.param(mat_loss, 0.6, 0.6 * math.pi, lambda a: a, id="mat"),
]


@pytest.mark.parametrize("loss, margin, margin_in_d, distance", MARGIN_CASES)
def test_margin_losses_exclude_the_positive_from_the_negatives(loss, margin, margin_in_d, distance):
    z1 = _circle(_ANCHOR_DEG)
    z2 = _circle([a + d for a, d in zip(_ANCHOR_DEG, _OFFSET_DEG)])
    expected = _expected_margin_loss(distance, margin_in_d)
    got = loss(z1, z2, margin=margin).item()
    assert expected > 0 and got == pytest.approx(expected, rel=1e-5)
    # With the diagonal left in, each positive would be its own hardest negative: loss = margin.
    assert got != pytest.approx(margin_in_d, rel=1e-2)
    # Masking by multiplying the cosines with 0 (as the MET code did) leaves a phantom negative of
    # cosine 0, nearer than every true negative here.
    phantom = sum(
        max(0.0, margin_in_d + distance(math.radians(abs(d))) - distance(math.pi / 2)) for d in _OFFSET_DEG
    )
    assert got != pytest.approx(phantom / 3, rel=1e-2)


@pytest.mark.parametrize("name", ["met", "mpt", "mat"])
def test_margin_losses_vanish_when_positives_win_by_more_than_the_margin(name):
    # Positive pairs identical, negatives orthogonal: gaps of √2 (distance), 1 (cosine), π/2 (angle).
    z = (torch.eye(6)[:4] * torch.tensor([[1.0], [2.0], [0.5], [3.0]])).requires_grad_(True)
    loss = build_loss(name)(z, z.detach().clone())
    assert loss.item() == 0.0
    assert torch.autograd.grad(loss, z)[0].abs().sum() == 0
    # A margin wider than the gap makes every column active.
    wide = {"met": 2.0, "mpt": 1.5, "mat": 0.9}[name]
    expected = {
        "met": 2.0 + math.sqrt(COSINE_EPS) - math.sqrt(2),
        "mpt": 1.5 - 1 + 0,
        "mat": 0.9 * math.pi + math.acos(1 - COSINE_EPS) - math.pi / 2,
    }[name]
    assert build_loss(name, margin=wide)(z, z).item() == pytest.approx(expected, rel=1e-4)


# ----- hyperparameter validation ------------------------------------------------------------------------

BAD_HPARAMS = [
    ("nt_xent", "temp", 0.0),
    ("dcl", "temp", -0.1),
    ("dcl", "same_view_negatives", "yes"),
    ("dcl", "symmetric", 1),
    ("dcl_pos", "temp", float("nan")),
    ("dhel", "temp", 0),
    ("dhel", "include_augs", None),
    ("kcl", "t", 0.0),
    ("kcl", "gamma", -1.0),
    ("align_uniform", "lam", 1.5),
    ("align_uniform", "alpha", 0.0),
    ("align_uniform", "t", -2.0),
    ("met", "margin", -0.1),
    ("mpt", "margin", -0.09),
    ("mat", "margin", float("inf")),
    ("vicreg", "sim_coeff", -25.0),
    ("vicreg", "std_coeff", "25"),
    ("vicreg", "cov_coeff", -1),
    ("arccon", "temp", -0.05),
    ("arccon", "margin", -10.0),
    ("cosent", "temp", 0.0),
    ("angle", "temp", float("nan")),
    ("gist", "temp", -0.01),
    ("gist", "margin", -0.1),
    ("gist", "margin_strategy", "sideways"),
    ("gist", "contrast_anchors", "yes"),
]


@pytest.mark.parametrize("name, kwarg, value", BAD_HPARAMS)
def test_bad_hyperparameters_are_named_with_their_value(name, kwarg, value):
    with pytest.raises(SimCSEError, match=rf"^{kwarg} must be .*got {re.escape(repr(value))}$"):
        build_loss(name, **{kwarg: value})


def test_every_loss_validates_its_numbers():
    validated = {name for name, _, _ in BAD_HPARAMS}
    assert validated == set(LOSSES) - {"infonce"}  # infonce: tests/losses/test_losses.py


def test_pure_functions_validate_too():
    z = torch.randn(3, 4)
    with pytest.raises(SimCSEError, match="margin must be a non-negative number.*got -1"):
        met_loss(z, z, margin=-1)
    with pytest.raises(SimCSEError, match="alpha must be a positive number.*got -2"):
        alignment(z, z, alpha=-2)
    with pytest.raises(SimCSEError, match="t must be a positive number.*got 0"):
        uniformity(z, t=0)


# ----- diagnostics --------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha, t", [(2.0, 2.0), (1.5, 5.0)])
def test_alignment_and_uniformity_match_naive_loops(alpha, t):
    z1, z2, _ = _embeddings(seed=31)
    torch.testing.assert_close(
        alignment(z1, z2, alpha), naive_alignment(z1, z2, alpha), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(uniformity(z1, t), naive_uniformity(z1, t), rtol=1e-10, atol=1e-12)
    # Scale-free: the inputs are normalised inside.
    assert alignment(3 * z1, z2, alpha).item() == pytest.approx(alignment(z1, z2, alpha).item(), rel=1e-12)


def test_uniformity_is_stable_where_the_naive_form_underflows():
    z = torch.eye(5, dtype=torch.float64)  # all squared distances 2
    t = 500.0  # e^{−1000} underflows float64 to 0, log 0 = −inf
    assert naive_uniformity(z, t).item() == -math.inf
    assert uniformity(z, t).item() == pytest.approx(-2 * t, rel=1e-12)


def test_alignment_gradient_is_finite_for_identical_views_and_small_alpha():
    z = torch.randn(4, 6, requires_grad=True)
    value = alignment(z, z, alpha=0.5)
    assert value.item() == 0.0
    assert torch.isfinite(torch.autograd.grad(value, z)[0]).all()


def test_positive_probability_matches_naive_softmax():
    z1, z2, z3 = _embeddings(seed=32)
    temp = 0.1
    for hard in (None, z3):
        expected = []
        for i in range(B):
            row = [_cos(z1[i], z2[j]) / temp for j in range(B)]
            if hard is not None:
                row += [_cos(z1[i], hard[j]) / temp for j in range(B)]
            expected.append(torch.exp(-_ce(row, i)))
        got = positive_probability(z1, z2, temp, z3=hard)
        torch.testing.assert_close(got, _mean(expected), rtol=1e-10, atol=1e-12)
    # Known answer: identical views, orthogonal negatives.
    z = torch.eye(4)
    assert positive_probability(z, z, 0.5).item() == pytest.approx(math.e**2 / (math.e**2 + 3), rel=1e-6)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_float64_gradcheck_on_a_near_saturated_batch(name):
    # Positives almost equal to their anchors (p_ii near 1 at τ = 0.05): float32 rounding would show up
    # as ~1e-5 errors here; a float64 input must be computed in float64 (finite differences agree).
    loss_fn = _build(name)
    z1, z2, z3 = _embeddings(seed=11, batch=4, hidden=6)
    z2 = z1 + 0.05 * z2
    zs = [z1, z2, z3][: 3 if loss_fn.supports_hard_negatives else 2]
    leaves = [z.clone().requires_grad_(True) for z in zs]
    assert torch.autograd.gradcheck(lambda *z: loss_fn(*z), leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("with_dims", [True, False], ids=["2d", "layers-only"])
def test_float64_gradcheck_of_the_matryoshka_wrappers(with_dims):
    # The 2D wrapper's layer KL term too: float64 embeddings and layers stay float64 end to end.
    from simcse.losses.matryoshka import Matryoshka2dLoss, MatryoshkaLoss

    inner = MatryoshkaLoss(build_loss("infonce"), [6, 3], [1.0, 0.5]) if with_dims else build_loss("infonce")
    loss_fn = Matryoshka2dLoss(inner, n_layers_per_step=-1, kl_div_weight=2.0, kl_temperature=0.3)
    z1, z2, z3 = _embeddings(seed=12, batch=4, hidden=6)
    layers = torch.stack([torch.stack([z1, z2, z3], 1) + 0.1 * i for i in (1, 2)], dim=2)  # (B, 3, 2, H)
    z2 = z2 + 0.05 * z1
    assert loss_fn(z1, z2, z3, layers=layers).dtype == torch.float64
    # Against finite differences in the layers only: the final layer is the KL teacher and is detached by
    # design, so its analytic gradient leaves that path out on purpose.
    assert torch.autograd.gradcheck(lambda h: loss_fn(z1, z2, z3, layers=h), [layers.requires_grad_(True)],
                                    eps=1e-6, atol=1e-7, rtol=1e-5)
