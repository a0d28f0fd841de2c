"""Duplicate texts masked in the loss (``keys``, ``train.py --mask_duplicate_texts``).

Every loss with in-batch negatives takes ``keys`` (B, 2 + K), one int64 per sentence (equal keys, equal
texts), and removes from row i's candidates every sentence with the text of row i's anchor or positive.
Each such loss is checked against a reference written here by explicit loops: per row, the loss over the
candidate set with those duplicates left out (value and gradients, float64). With all keys distinct the
masked loss is the unmasked one exactly; for the losses built from a max or a mean over pairs, a batch in
which every example appears twice (same embeddings) gives, masked, the loss of the batch with each once.
"""

from __future__ import annotations

import math

import pytest
import torch

from simcse.errors import SimCSEError
from simcse.losses import LOSSES, build_loss
from simcse.losses.matryoshka import Matryoshka2dLoss, MatryoshkaLoss

H = 5

# Texts of a supervised batch (anchor, positive, hard negative 1, hard negative 2) as letters; equal letters
# are equal texts. Row 0 and 1 share a positive; row 2's anchor is row 0's (and 1's) positive; row 3
# repeats row 0's anchor; row 4's second hard negative is its own positive and row 1's first is row 0's
# anchor; row 5's anchor is its positive (an unsupervised example).
SUPERVISED = ["abci", "cbaj", "bdkb", "aelm", "fgng", "hhop"]
# Unsupervised batches: one sentence per example (anchor = positive).
UNSUPERVISED = ["aa", "bb", "aa", "cc", "bb", "dd"]
ALL_SAME = ["aa", "aa", "aa"]  # every row is left without a negative


def _keys(texts: list[str], columns: int) -> torch.Tensor:
    """int64 (B, columns) keys of letter texts: equal letters, equal keys (arbitrary large values)."""
    return torch.tensor([[(ord(c) * 0x9E3779B97F4A7C15) % (1 << 63) - (1 << 62) for c in row[:columns]]
                         for row in texts], dtype=torch.int64)


def _embeddings(batch: int, count: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, H, generator=g, dtype=torch.float64) for _ in range(count)]


def _text_embeddings(texts: list[str], count: int, seed: int = 0) -> list[torch.Tensor]:
    """(B, H) per sentence column: a vector per letter plus noise per slot, so equal texts have near (not
    equal) embeddings, like two dropout views, and a duplicate is most often a row's hardest negative."""
    g = torch.Generator().manual_seed(seed)
    letters = {c: torch.randn(H, generator=g, dtype=torch.float64) for c in sorted({c for row in texts for c in row})}
    return [torch.stack([letters[row[col]] for row in texts]) + 0.3 * torch.randn(len(texts), H, generator=g,
                                                                                   dtype=torch.float64)
            for col in range(count)]


# ----- references: explicit loops over rows and candidates, float64 -----------------------------------


def _cos(a, b):
    return (a * b).sum() / (a.norm() * b.norm())


def _lse(values):
    top = max(float(v.detach()) for v in values)
    return top + torch.log(sum(torch.exp(v - top) for v in values))


def _mean(values):
    return sum(values) / len(values)


def _relu(v):
    return torch.clamp_min(v, 0.0)


def _kept(texts, i, text):
    """A candidate of text ``text`` stays in row i's candidates unless it is row i's anchor or positive."""
    return text not in texts[i][:2]


def ref_infonce(z1, z2, z3, texts, *, temp, hard_negative_weight=0.0, symmetric=False):
    n = len(z1)
    rows = []
    for i in range(n):
        cands = [_cos(z1[i], z2[j]) / temp for j in range(n) if j == i or _kept(texts, i, texts[j][1])]
        for j in range(n):
            for k in range(0 if z3 is None else z3.shape[1]):
                if _kept(texts, i, texts[j][2 + k]):
                    cands.append(_cos(z1[i], z3[j, k]) / temp + (hard_negative_weight if j == i else 0.0))
        rows.append(-_cos(z1[i], z2[i]) / temp + _lse(cands))
    loss = _mean(rows)
    if symmetric:
        columns = []
        for j in range(n):
            cands = [_cos(z1[i], z2[j]) / temp for i in range(n) if i == j or _kept(texts, j, texts[i][0])]
            columns.append(-_cos(z1[j], z2[j]) / temp + _lse(cands))
        loss = (loss + _mean(columns)) / 2
    return loss


def ref_nt_xent(z1, z2, z3, texts, *, temp):
    n = len(z1)
    sentences = [(z1[i], texts[i][0]) for i in range(n)] + [(z2[i], texts[i][1]) for i in range(n)]
    rows = []
    for r in range(2 * n):
        partner = (r + n) % (2 * n)
        cands = [_cos(sentences[r][0], sentences[c][0]) / temp for c in range(2 * n)
                 if c != r and (c == partner or _kept(texts, r % n, sentences[c][1]))]
        rows.append(-_cos(sentences[r][0], sentences[partner][0]) / temp + _lse(cands))
    return _mean(rows)


def _ref_dcl_direction(a, b, hard, texts, roles, temp, same_view):
    n = len(a)
    rows = []
    for i in range(n):
        negs = [_cos(a[i], b[j]) / temp for j in range(n) if j != i and _kept(texts, i, texts[j][roles[1]])]
        if same_view:
            negs += [_cos(a[i], a[j]) / temp for j in range(n) if j != i and _kept(texts, i, texts[j][roles[0]])]
        for j in range(n):
            for k in range(0 if hard is None else hard.shape[1]):
                if _kept(texts, i, texts[j][2 + k]):
                    negs.append(_cos(a[i], hard[j, k]) / temp)
        rows.append(-_cos(a[i], b[i]) / temp + _lse(negs) if negs else torch.zeros((), dtype=a.dtype))
    return rows


def _ref_dcl_rows(z1, z2, z3, texts, *, temp, same_view_negatives=False, symmetric=False):
    rows = _ref_dcl_direction(z1, z2, z3, texts, (0, 1), temp, same_view_negatives)
    if symmetric:
        rows += _ref_dcl_direction(z2, z1, None, texts, (1, 0), temp, same_view_negatives)
    return rows


def ref_dcl(z1, z2, z3, texts, **hparams):
    return _mean(_ref_dcl_rows(z1, z2, z3, texts, **hparams))


def ref_dcl_pos(z1, z2, z3, texts, *, temp):
    return _mean([_relu(v) for v in _ref_dcl_rows(z1, z2, z3, texts, temp=temp)])


def ref_dhel(z1, z2, z3, texts, *, temp, include_augs=True):
    n = len(z1)

    def energy(z, i, role):
        values = [_cos(z[i], z[j]) / temp for j in range(n) if j != i and _kept(texts, i, texts[j][role])]
        return _lse(values) if values else 0.0

    rows = []
    for i in range(n):
        value = -_cos(z1[i], z2[i]) / temp + energy(z1, i, 0)
        rows.append(value + energy(z2, i, 1) if include_augs else value)
    return _mean(rows)


def _kept_pair_kernels(z, texts, role, t):
    n = len(z)
    return [torch.exp(-t * (z[i] / z[i].norm() - z[j] / z[j].norm()).pow(2).sum())
            for i in range(n) for j in range(i + 1, n)
            if _kept(texts, i, texts[j][role]) and _kept(texts, j, texts[i][role])]


def ref_kcl(z1, z2, z3, texts, *, t, gamma):
    n = len(z1)
    align = _mean([torch.exp(-t * (z1[i] / z1[i].norm() - z2[i] / z2[i].norm()).pow(2).sum()) for i in range(n)])
    energy = 0.0
    for z, role in ((z1, 0), (z2, 1)):
        kernels = _kept_pair_kernels(z, texts, role, t)
        energy = energy + (_mean(kernels) if kernels else 0.0)
    return -2 * align + gamma * energy


def ref_align_uniform(z1, z2, z3, texts, *, lam, alpha, t):
    n = len(z1)
    align = _mean([(z1[i] / z1[i].norm() - z2[i] / z2[i].norm()).pow(2).sum() ** (alpha / 2) for i in range(n)])
    uniform = 0.0
    for z, role in ((z1, 0), (z2, 1)):
        kernels = _kept_pair_kernels(z, texts, role, t)
        uniform = uniform + (torch.log(_mean(kernels)) if kernels else 0.0)
    return (1 - lam) * align + lam / 2 * uniform


def _ref_margin(z1, z2, texts, margin, distance):
    """Per positive y_j: relu(margin + d(x_j, y_j) − min over the other anchors x_i not of its texts)."""
    n = len(z1)
    columns = []
    for j in range(n):
        others = [distance(z1[i], z2[j]) for i in range(n) if i != j and _kept(texts, j, texts[i][0])]
        if not others:
            columns.append(0 * (z1[j] + z2[j]).sum())  # no triplet: 0 (kept in the graph)
            continue
        nearest = min(others, key=lambda v: float(v.detach()))
        columns.append(_relu(margin + distance(z1[j], z2[j]) - nearest))
    return _mean(columns)


def ref_met(z1, z2, z3, texts, *, margin):
    return _ref_margin(z1, z2, texts, margin, lambda a, b: torch.sqrt(2 - 2 * _cos(a, b)))


def ref_mpt(z1, z2, z3, texts, *, margin):
    return _ref_margin(z1, z2, texts, margin, lambda a, b: -_cos(a, b))


def ref_mat(z1, z2, z3, texts, *, margin):
    return _ref_margin(z1, z2, texts, margin * math.pi, lambda a, b: torch.arccos(_cos(a, b)))


def ref_arccon(z1, z2, z3, texts, *, temp, margin):
    n = len(z1)
    rows = []
    for i in range(n):
        positive = torch.cos(torch.arccos(_cos(z1[i], z2[i])) + math.radians(margin)) / temp
        cands = [positive] + [_cos(z1[i], z2[j]) / temp for j in range(n) if j != i and _kept(texts, i, texts[j][1])]
        for j in range(n):
            for k in range(0 if z3 is None else z3.shape[1]):
                if _kept(texts, i, texts[j][2 + k]):
                    cands.append(_cos(z1[i], z3[j, k]) / temp)
        rows.append(-positive + _lse(cands))
    return _mean(rows)


def ref_gist(z1, z2, z3, texts, *, temp, guide, margin=0.0, contrast_anchors=True, contrast_positives=True):
    n = len(z1)
    rows = []
    for i in range(n):
        threshold = float(_cos(guide[i, 0], guide[i, 1])) - margin

        def kept(g_cand, text, i=i, threshold=threshold):
            return float(_cos(guide[i, 0], g_cand)) <= threshold and _kept(texts, i, text)

        cands = [_cos(z1[i], z2[j]) / temp for j in range(n) if j == i or kept(guide[j, 1], texts[j][1])]
        if contrast_anchors:
            cands += [_cos(z1[i], z1[j]) / temp for j in range(n) if j != i and kept(guide[j, 0], texts[j][0])]
        if contrast_positives:
            # The guide compares positives with positives in this block (gy_i · gy_j).
            cands += [_cos(z2[i], z2[j]) / temp for j in range(n) if j != i and
                      float(_cos(guide[i, 1], guide[j, 1])) <= threshold and _kept(texts, i, texts[j][1])]
        for j in range(n):
            for k in range(0 if z3 is None else z3.shape[1]):
                if kept(guide[j, 2 + k], texts[j][2 + k]):
                    cands.append(_cos(z1[i], z3[j, k]) / temp)
        rows.append(-_cos(z1[i], z2[i]) / temp + _lse(cands))
    return _mean(rows)


# (loss, hyperparameters, hard negatives per anchor, reference)
CASES = [
    ("infonce", {"temp": 0.05}, 0, ref_infonce),
    ("infonce", {"temp": 0.1, "hard_negative_weight": 0.7}, 2, ref_infonce),
    ("infonce", {"temp": 0.2, "symmetric": True}, 1, ref_infonce),
    ("nt_xent", {"temp": 0.1}, 0, ref_nt_xent),
    ("dcl", {"temp": 0.1}, 2, ref_dcl),
    ("dcl", {"temp": 0.2, "same_view_negatives": True, "symmetric": True}, 1, ref_dcl),
    ("dcl_pos", {"temp": 0.3}, 2, ref_dcl_pos),
    ("dhel", {"temp": 0.1}, 0, ref_dhel),
    ("dhel", {"temp": 0.3, "include_augs": False}, 0, ref_dhel),
    ("kcl", {"t": 2.0, "gamma": 16.0}, 0, ref_kcl),
    ("align_uniform", {"lam": 0.4, "alpha": 1.5, "t": 2.0}, 0, ref_align_uniform),
    ("met", {"margin": 0.9}, 0, ref_met),
    ("mpt", {"margin": 0.4}, 0, ref_mpt),
    ("mat", {"margin": 0.3}, 0, ref_mat),
    ("arccon", {"temp": 0.1, "margin": 10.0}, 2, ref_arccon),
    ("gist", {"temp": 0.1, "margin": 0.3}, 2, ref_gist),
    ("gist", {"temp": 0.1, "contrast_anchors": False}, 0, ref_gist),
]
IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(CASES)]


def _guide(batch: int, columns: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    base = torch.randn(batch, 1, 4, generator=g, dtype=torch.float64)
    return base + 0.8 * torch.randn(batch, columns, 4, generator=g, dtype=torch.float64)


def _inputs(name: str, negatives: int, texts: list[str], seed: int = 0):
    """Embeddings (z1, z2[, z3 (B, K, H)]), the loss's extra inputs and the texts of the batch."""
    batch = len(texts)
    zs = _text_embeddings(texts, 2 + negatives, seed)
    if negatives:
        zs = zs[:2] + [torch.stack(zs[2:], dim=1)]
    extras = {"guide": _guide(batch, 2 + negatives)} if LOSSES[name].needs_guide else {}
    return zs, extras


def _value_and_grads(fn, zs):
    leaves = [z.clone().requires_grad_(True) for z in zs]
    value = fn(*leaves)
    return value, torch.autograd.grad(value, leaves)


BATCHES = {"supervised": SUPERVISED, "unsup": UNSUPERVISED, "all-same": ALL_SAME}


@pytest.mark.parametrize(("name", "hparams", "negatives", "reference", "texts"), [
    pytest.param(*case, texts, id=f"{batch}-{case_id}") for case, case_id in zip(CASES, IDS)
    for batch, texts in BATCHES.items() if len(texts[0]) >= 2 + case[2]])  # unsup batches: no hard negatives
def test_masked_loss_equals_the_loss_without_the_duplicates(name, hparams, negatives, reference, texts):
    zs, extras = _inputs(name, negatives, texts)
    keys = _keys(texts, 2 + negatives)
    loss = build_loss(name, **hparams)
    value, grads = _value_and_grads(lambda *z: loss(*z, keys=keys, **extras), zs)
    expected, expected_grads = _value_and_grads(
        lambda *z: reference(z[0], z[1], z[2] if negatives else None, texts, **hparams, **extras), zs)
    assert torch.isfinite(value) and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-9)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    if texts is not ALL_SAME:  # the masks took something out: the loss differs from the unmasked one
        assert not torch.allclose(value, loss(*zs, **extras))


@pytest.mark.parametrize(("name", "hparams", "negatives", "reference"), CASES, ids=IDS)
def test_distinct_keys_change_nothing(name, hparams, negatives, reference):
    """All texts different (an unsupervised example's anchor is its positive): exactly the unmasked loss."""
    texts = ["aaxy", "bbzw", "cduv", "efst"]
    zs, extras = _inputs(name, negatives, texts, seed=3)
    loss = build_loss(name, **hparams)
    masked, masked_grads = _value_and_grads(lambda *z: loss(*z, keys=_keys(texts, 2 + negatives), **extras), zs)
    plain, plain_grads = _value_and_grads(lambda *z: loss(*z, **extras), zs)
    assert torch.equal(masked, plain)
    assert all(torch.equal(a, b) for a, b in zip(masked_grads, plain_grads))


@pytest.mark.parametrize(("name", "hparams"), [
    ("met", {"margin": 0.9}), ("mpt", {"margin": 0.4}), ("mat", {"margin": 0.3}),
    ("align_uniform", {"lam": 0.4, "alpha": 1.5, "t": 2.0}), ("kcl", {"t": 2.0, "gamma": 16.0}),
])
@pytest.mark.parametrize("texts", [["ab", "cd", "ef", "gh"], ["aa", "bb", "cc"]], ids=["pairs", "unsup"])
def test_every_example_twice_masked_is_each_once(name, hparams, texts):
    """A hardest negative (a max) and a mean over pairs do not change when every candidate comes twice,
    so a batch holding every example twice (same embeddings) gives, masked, the deduplicated loss.
    Log-sum-exp losses have no such identity: a repeated candidate counts twice in a denominator."""
    z1, z2 = _embeddings(len(texts), 2, seed=5)
    loss = build_loss(name, **hparams)
    once = loss(z1, z2)
    twice = loss(torch.cat([z1, z1]), torch.cat([z2, z2]), keys=_keys(texts + texts, 2))
    torch.testing.assert_close(twice, once, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(loss(torch.cat([z1, z1]), torch.cat([z2, z2])), once)


def test_matryoshka_wrappers_pass_the_keys_to_every_term():
    texts = SUPERVISED
    (z1, z2, z3), _ = _inputs("infonce", 1, texts)
    keys = _keys(texts, 3)
    inner = build_loss("dcl", temp=0.1)
    wrapped = MatryoshkaLoss(inner, dims=[5, 3], weights=[1.0, 0.5])
    expected = inner(z1, z2, z3, keys=keys) + 0.5 * inner(z1[:, :3], z2[:, :3], z3[..., :3], keys=keys)
    torch.testing.assert_close(wrapped(z1, z2, z3, keys=keys), expected)
    assert wrapped.masks_duplicates
    layers = torch.randn(len(texts), 3, 2, H, dtype=torch.float64)
    two_d = Matryoshka2dLoss(inner, n_layers_per_step=-1, kl_div_weight=0.0)
    expected = inner(z1, z2, z3, keys=keys) + sum(
        inner(layers[:, 0, layer], layers[:, 1, layer], layers[:, 2, layer], keys=keys) for layer in range(2)) / 2
    torch.testing.assert_close(two_d(z1, z2, z3, keys=keys, layers=layers), expected)


@pytest.mark.parametrize("name", ["vicreg", "cosent", "angle"])
def test_losses_without_in_batch_negatives_refuse_keys(name):
    z1, z2 = _embeddings(4, 2)
    extras = {"scores": torch.tensor([0.1, 0.5, 0.9, 0.3], dtype=torch.float64)} if LOSSES[name].needs_scores else {}
    keys = _keys(["aa", "bb", "aa", "cc"], 2)
    for loss in (build_loss(name), MatryoshkaLoss(build_loss(name), dims=[3])):
        with pytest.raises(SimCSEError, match=rf"loss '{name}' cannot mask duplicate texts .*it has no in-batch "
                                              r"negatives; drop `mask_duplicate_texts`"):
            loss(z1, z2, keys=keys, **extras)
    assert {n for n, cls in LOSSES.items() if not cls.masks_duplicates} == {"vicreg", "cosent", "angle"}


@pytest.mark.parametrize("keys", [
    torch.zeros(4, 3, dtype=torch.int64),  # a column too many for pairs
    torch.zeros(4, 2, dtype=torch.int32),  # not int64
    torch.zeros(3, 2, dtype=torch.int64),  # not one row per pair
])
def test_keys_of_the_wrong_shape_or_type_are_an_error(keys):
    z1, z2 = _embeddings(4, 2)
    with pytest.raises(SimCSEError, match=r"text keys must be int64 \(batch, 2\)"):
        build_loss("infonce")(z1, z2, keys=keys)


def test_masking_under_fp32_autocast_and_float32_inputs():
    """Keys are integers: the cast of the embeddings to the compute dtype leaves them alone."""
    z1, z2 = (z.float() for z in _embeddings(6, 2))
    keys = _keys(UNSUPERVISED, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = build_loss("infonce")(z1.bfloat16(), z2.bfloat16(), keys=keys)
    assert value.dtype == torch.float32 and torch.isfinite(value)
