"""Tiled losses (simcse/losses/tiled.py) against the plain registered losses: values and gradients in
float64 for every tileable loss, tile sizes that do and do not divide the batch, 0, 1 and 2 hard negatives;
the refusals; memory measured by torch's profiler (no (B, B) allocation); gradient caching.

Also: duplicate-text masking in tiles; local rows (a partition of the rows adds up to the loss, values and
gradients). Under torchrun (2 processes against 1, every loss): tests/test_torchrun.py.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from simcse.errors import SimCSEError
from simcse.losses import LOSSES, build_loss
from simcse.losses.tiled import (
    LOCAL_ROWS,
    MASKED,
    TILEABLE,
    TiledLoss,
    check_tileable,
    row_local_form,
    tiled_hardest,
    tiled_logsumexp,
    tiled_loss,
)

B, H = 37, 16

# Hyperparameter variants per loss (every flag that changes the tiled computation's structure).
VARIANTS = {
    "infonce": [{}, {"symmetric": True}, {"hard_negative_weight": 0.7},
                {"hard_negative_weight": -1.3, "symmetric": True}, {"temp": 0.5}],
    "nt_xent": [{}, {"temp": 0.2}],
    "dcl": [{}, {"symmetric": True}, {"same_view_negatives": True}, {"same_view_negatives": True, "symmetric": True}],
    "dcl_pos": [{}, {"temp": 1.0}],  # at τ = 1 some ℓ_i are clipped at 0
    "arccon": [{}, {"margin": 0.0, "temp": 0.1}],
    "dhel": [{}, {"include_augs": False}],
    "kcl": [{}, {"t": 0.5, "gamma": 2.0}],
    "align_uniform": [{}, {"lam": 0.9, "alpha": 1.0, "t": 3.0}],
    "met": [{}, {"margin": 1.5}],
    "mpt": [{}, {"margin": 0.5}],
    "mat": [{}, {"margin": 0.4}],
}
# Tile 8 on B = 37 (4 x 8 + 5: a ragged last tile) for every case; tile = B and tile > B (one block) for
# each loss's first variant.
CASES = [pytest.param(name, hp, k, tile, id=f"{name}-{i}-k{k}-tile{tile}")
         for name in TILEABLE for i, hp in enumerate(VARIANTS[name])
         for k in ((0, 1, 2) if LOSSES[name].supports_hard_negatives else (0,))
         for tile in ((8, B, 64) if i == 0 and k == min(2, 2 * LOSSES[name].supports_hard_negatives) else (8,))]


def embeddings(k: int, seed: int, batch: int = B, dtype=torch.float64) -> list[torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(batch, H, generator=g, dtype=dtype)
    z2 = z1 + 0.8 * torch.randn(batch, H, generator=g, dtype=dtype)  # positives nearer than negatives
    z3 = None if k == 0 else torch.randn(batch, H, generator=g, dtype=dtype) if k == 1 else \
        torch.randn(batch, k, H, generator=g, dtype=dtype)
    return [z1, z2, z3]


def value_and_grads(fn, zs):
    inputs = [None if z is None else z.clone().requires_grad_(True) for z in zs]
    loss = fn(*inputs)
    loss.backward()
    return loss.detach(), [None if z is None else z.grad for z in inputs]


def assert_equal(plain, tiled, tol=1e-10):
    torch.testing.assert_close(tiled[0], plain[0], rtol=tol, atol=tol)
    for a, b in zip(plain[1], tiled[1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=tol, atol=tol)


def test_every_case_is_covered():
    assert set(VARIANTS) == set(TILEABLE) and all(name in LOSSES for name in TILEABLE)


@pytest.mark.parametrize("name, hp, k, tile", CASES)
def test_tiled_equals_plain_value_and_gradient_float64(name, hp, k, tile):
    zs = embeddings(k, seed=len(name) + k)
    plain = value_and_grads(build_loss(name, **hp), zs)
    tiled = value_and_grads(lambda *z: tiled_loss(name, *z, hparams=hp, tile_size=tile), zs)
    assert tiled[0].dtype == torch.float64
    assert_equal(plain, tiled)  # 1e-10, well inside the 1e-6 asked


def test_tile_of_one_and_the_wrapper_in_float32():
    zs = embeddings(2, seed=3, batch=9)
    loss = TiledLoss(build_loss("infonce", hard_negative_weight=0.5, symmetric=True), tile_size=1)
    assert_equal(value_and_grads(build_loss("infonce", hard_negative_weight=0.5, symmetric=True), zs),
                 value_and_grads(loss, zs))
    zs32 = [z.float() for z in embeddings(1, seed=4, batch=200)]
    plain = value_and_grads(build_loss("dcl", symmetric=True), zs32)
    tiled = value_and_grads(TiledLoss(build_loss("dcl", symmetric=True), 64), zs32)
    assert tiled[0].dtype == torch.float32
    assert_equal(plain, tiled, tol=1e-5)
    assert loss.hparams() == build_loss("infonce", hard_negative_weight=0.5, symmetric=True).hparams()
    assert "tile_size=1" in repr(loss)


def test_primitives_gradcheck_and_edge_rows():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    cols = torch.randn(12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    diagonals = [(0, float("-inf")), (5, 0.3), (-2, -1.1)]
    torch.autograd.gradcheck(lambda r, c: tiled_logsumexp(r, c, diagonals, tile_size=3), (rows, cols))
    # A row with every column removed: −inf, and no NaN in any gradient.
    lse = tiled_logsumexp(rows[:2], cols[:1], [(0, float("-inf"))], tile_size=2)
    assert lse[0] == float("-inf") and torch.isfinite(lse[1])
    lse[1:].sum().backward()
    assert torch.isfinite(rows.grad).all() and torch.isfinite(cols.grad).all()
    # The hardest column: the first maximum on ties, diagonals excluded, across tiles.
    r = torch.tensor([[1.0], [1.0], [2.0]])
    c = torch.tensor([[1.0], [3.0], [3.0], [0.5]])
    assert tiled_hardest(r, c, [(1, float("-inf"))], tile_size=2).tolist() == [2, 1, 1]


@pytest.mark.parametrize("name", ["vicreg", "cosent", "angle", "gist"])
def test_losses_that_cannot_be_tiled_are_refused_naming_those_that_can(name):
    with pytest.raises(SimCSEError, match=rf"loss '{name}' cannot be tiled .*infonce, nt_xent, dcl"):
        tiled_loss(name, *embeddings(0, seed=0)[:2])
    with pytest.raises(SimCSEError, match="cannot be tiled"):
        TiledLoss(build_loss(name), tile_size=8)
    with pytest.raises(SimCSEError, match="cannot be tiled"):
        check_tileable("no_such_loss")


def test_bad_inputs_are_refused():
    z1, z2, z3 = embeddings(1, seed=0)
    for bad in (0, -4, 2.5, True, "8"):
        with pytest.raises(SimCSEError, match="`loss_tile_size` must be a positive integer"):
            tiled_loss("infonce", z1, z2, tile_size=bad)
    with pytest.raises(SimCSEError, match="unknown argument"):
        tiled_loss("infonce", z1, z2, hparams={"margin": 1.0})
    with pytest.raises(SimCSEError, match="cannot use the hard negatives"):
        tiled_loss("nt_xent", z1, z2, z3)
    keys = torch.arange(2 * B).view(B, 2)
    with pytest.raises(SimCSEError, match="cannot mask duplicate texts .* when tiled.*: infonce, nt_xent"):
        TiledLoss(build_loss("met"), 8)(z1, z2, keys=keys)
    with pytest.raises(SimCSEError, match="needs the whole batch"):
        TiledLoss(build_loss("align_uniform"), None)(z1, z2, rows=(0, 5))
    with pytest.raises(SimCSEError, match=r"rows \(5, 5\) are not a non-empty range"):
        TiledLoss(build_loss("infonce"), None)(z1, z2, rows=(5, 5))
    with pytest.raises(SimCSEError, match="at least 2 pairs"):
        tiled_loss("dcl", z1[:1], z2[:1])


def profiled_memory(fn, zs) -> tuple[int, int]:
    """(largest allocation by one operator, peak of the live bytes) over forward and backward, from torch's
    profiler: each operator's own allocations minus frees, summed in the order the operators started."""
    inputs = [None if z is None else z.clone().requires_grad_(True) for z in zs]
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(*inputs).backward()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return max(e.self_cpu_memory_usage for e in events), peak


@pytest.mark.parametrize("name, k", [("infonce", 2), ("met", 0)])  # the two primitives
def test_memory_is_tile_sized_not_batch_squared(name, k):
    batch, tile, width = 256, 64, 4
    zs = embeddings(k, seed=1, batch=batch)
    zs = [None if z is None else z[..., :width].contiguous() for z in zs]
    square = batch * batch * 8  # one (B, B) float64 matrix: 512 KiB
    plain_largest, plain_peak = profiled_memory(build_loss(name), zs)
    assert plain_largest >= square  # the profiler sees the plain loss's (B, B) logits
    largest, peak = profiled_memory(lambda *z: tiled_loss(name, *z, tile_size=tile), zs)
    # One (tile, tile) block, or a (3B, H) stack of embeddings, whichever is larger: 32 KiB and 24 KiB here.
    assert largest <= max(tile * tile, 3 * batch * width) * 8
    assert peak < square / 2 < plain_peak / 4


def test_gradient_caching_with_a_tiled_loss_equals_the_plain_loss():
    from transformers import BertConfig

    from simcse.modeling.models import BertForCL, configure
    from simcse.training.gradcache import cached_step

    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=32, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1)
    configure(config, pooler_type="cls")
    torch.manual_seed(0)
    model = BertForCL(config).train()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 120, (10, 3, 9), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def step(loss_fn):
        model.zero_grad()
        torch.manual_seed(7)
        loss, _ = cached_step(model, inputs, 3, lambda z: loss_fn(z[:, 0], z[:, 1], z[:, 2:]),
                              backward=lambda t: t.backward())
        return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = step(build_loss("infonce", hard_negative_weight=0.3, symmetric=True))
    tiled = step(TiledLoss(build_loss("infonce", hard_negative_weight=0.3, symmetric=True), tile_size=4))
    torch.testing.assert_close(tiled[0], plain[0], rtol=1e-5, atol=1e-5)  # float32: cached_step casts z
    assert plain[1].keys() == tiled[1].keys() and plain[1]
    for name in plain[1]:
        torch.testing.assert_close(tiled[1][name], plain[1][name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")


def duplicate_keys(k: int, seed: int) -> torch.Tensor:
    """(B, 2 + K) text keys drawn from few values: many candidates repeat some row's anchor or positive,
    and some rows lose every negative (the masked losses' empty-row rule is exercised)."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.randint(0, 12, (B, 2 + k), generator=g)
    keys[:4] = 3  # four examples whose every sentence has one text
    return keys


@pytest.mark.parametrize("name, hp, k", [pytest.param(name, hp, k, id=f"{name}-{i}-k{k}")
                                         for name in MASKED for i, hp in enumerate(VARIANTS[name])
                                         for k in ((0, 2) if LOSSES[name].supports_hard_negatives else (0,))])
def test_tiled_duplicate_masking_equals_the_plain_loss(name, hp, k):
    zs, keys = embeddings(k, seed=5), duplicate_keys(k, seed=6)
    plain = value_and_grads(lambda *z: build_loss(name, **hp)(*z, keys=keys), zs)
    tiled = value_and_grads(lambda *z: TiledLoss(build_loss(name, **hp), 8)(*z, keys=keys), zs)
    assert_equal(plain, tiled)


@pytest.mark.parametrize("name, hp, k, masked", [
    pytest.param(name, hp, k, masked, id=f"{name}-{i}-k{k}{'-keys' if masked else ''}")
    for name in LOCAL_ROWS for i, hp in enumerate(VARIANTS[name])
    for k in ((0, 2) if LOSSES[name].supports_hard_negatives else (0,))
    for masked in ((False, True) if name in MASKED and i == 0 else (False,))])
def test_local_rows_add_up_to_the_loss(name, hp, k, masked):
    """Rows split in three uneven parts (one process each, say): the parts' values and gradients add up to
    the plain loss's on the whole batch, tiled or in one block."""
    zs = embeddings(k, seed=3)
    extra = {"keys": duplicate_keys(k, seed=4)} if masked else {}
    plain = value_and_grads(lambda *z: build_loss(name, **hp)(*z, **extra), zs)
    for tile in (None, 8):
        loss = TiledLoss(build_loss(name, **hp), tile)
        parts = value_and_grads(lambda *z, loss=loss: sum(loss(*z, rows=r, **extra)
                                                          for r in ((0, 10), (10, 11), (11, B))), zs)
        assert_equal(plain, parts)


def test_row_local_form():
    infonce = build_loss("infonce")
    local = row_local_form(infonce)
    assert isinstance(local, TiledLoss) and local.loss is infonce and local.tile_size is None
    tiled = TiledLoss(build_loss("met"), 16)
    assert row_local_form(tiled) is tiled
    assert row_local_form(tiled, keys=True) is None  # met does not mask duplicates when tiled: full form
    assert row_local_form(build_loss("dcl"), keys=True) is not None
    for name in ("align_uniform", "vicreg", "cosent", "gist"):
        assert row_local_form(build_loss(name)) is None
    from simcse.losses.matryoshka import MatryoshkaLoss

    assert row_local_form(MatryoshkaLoss(build_loss("infonce"), [8, 4])) is None
