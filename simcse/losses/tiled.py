"""Tiled losses: InfoNCE and its family in O(B x tile) memory, never the (B, B) similarity matrix.

Every loss here is written with two tiled primitives over a row set R (n, H) and a column set C (m, H):

* :func:`tiled_logsumexp` (an autograd Function with a hand-written backward): lse_i = log Σ_j exp(R_i·C_j
  + b_ij), where the bias b adds a constant on a few "diagonals" (column ``offset + i`` of row i: −inf
  removes a row's own positive or itself, a finite w weights its own hard negative). The forward walks the
  (tile x tile) blocks of R Cᵀ row tile by row tile, keeping a running max and sum of exponentials per
  row; the backward recomputes each block, turns it into P = softmax weights times the incoming gradient,
  and accumulates dR += P C and dC += Pᵀ R block by block.
* :func:`tiled_hardest` (no gradient): the argmax over columns of R Cᵀ, diagonals excluded, by a running
  max over column tiles. The margin losses then recompute the chosen pairs' cosines with autograd, so the
  gradient of the hardest negative goes to the argmax only (as ``amax``'s does, ties aside).

The rest of each formula (the positive logit, the −onehot half of the cross-entropy gradient, means,
the symmetric average, relu clipping, the arccos margin) is O(n) per-row work left to autograd. So is the
normalisation: F.normalize runs outside the Functions and autograd differentiates it. Peak memory beyond
the embeddings (a few (B, H) copies: R, C and their gradients) is one (tile, tile) block of float32 (or
float64 for float64 inputs); the result equals the plain loss's to rounding (float64 values and
gradients within 1e-10 in ``tests/losses/test_tiled.py``, 4e-15 observed). Costs: the backward recomputes
the blocks, 4/3 of the plain loss's matrix products and a second pass of exponentials, against the plain
loss's (B, B) temporaries; ``bench/huge_batch.py`` measures both.

Which losses: :data:`TILEABLE` (``infonce`` with hard negatives, their weight and ``symmetric``;
``nt_xent``; ``dcl`` in all its forms; ``dcl_pos``; ``arccon``; ``dhel``; ``kcl``; ``align_uniform``;
``met``, ``mpt``, ``mat``). The others cannot be tiled here and are refused with a
:class:`~simcse.errors.SimCSEError`: ``vicreg`` builds no (B, B) matrix (it has nothing to tile),
``cosent``/``angle`` rank pairs of pairs by their scores, ``gist`` filters by a guide's similarities, and
the Matryoshka wrappers wrap a loss (wrap a tiled one instead). Duplicate-text masking (``keys``) is not
tiled yet and is refused.

How it plugs in (``--loss_tile_size N``, or automatic beyond a batch size): wrap the built loss,
``loss_fn = TiledLoss(build_loss(name, **kwargs), tile_size=N)``. :class:`TiledLoss` is a
:class:`~simcse.losses.registry.ContrastiveLoss` with the plain loss's call signature
``loss_fn(z1, z2, z3=None)`` (the same checks, fp32 casting and autocast rule), so the trainer's
``_loss_of_embeddings``, DDP's gathered global batch and gradient caching's ``loss_of_embeddings``
closure call it unchanged. Rows and columns within one tile make one block (the plain loss's memory),
so an automatic setting can wrap every tileable loss with a fixed tile (4096: 64 MiB blocks in float32)
and leave the others plain. :func:`tiled_loss` is the one-shot form.

>>> import torch
>>> from simcse.losses import build_loss
>>> z1, z2 = torch.randn(37, 16, dtype=torch.float64), torch.randn(37, 16, dtype=torch.float64)
>>> plain = build_loss("infonce", symmetric=True)(z1, z2)
>>> tiled = tiled_loss("infonce", z1, z2, None, {"symmetric": True}, tile_size=8)
>>> bool(torch.allclose(plain, tiled, rtol=1e-12, atol=1e-12))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from simcse.errors import SimCSEError
from simcse.losses.checks import require_pairs
from simcse.losses.diagnostics import alignment
from simcse.losses.ops import COSINE_EPS, paired_squared_distances, safe_arccos
from simcse.losses.registry import ContrastiveLoss, build_loss, flatten_hard_negatives

__all__ = ["TILEABLE", "TiledLoss", "check_tileable", "tiled_hardest", "tiled_logsumexp", "tiled_loss"]

#: The losses :class:`TiledLoss` computes in tiles.
TILEABLE = ("infonce", "nt_xent", "dcl", "dcl_pos", "arccon", "dhel", "kcl", "align_uniform", "met", "mpt", "mat")
_WHY_NOT = {
    "vicreg": "it builds no (B, B) matrix, so there is nothing to tile",
    "cosent": "it ranks pairs of pairs by their scores, not rows against candidates",
    "angle": "it ranks pairs of pairs by their scores, not rows against candidates",
    "gist": "its negatives are filtered by a guide's similarities",
}
NEG_INF = float("-inf")
Diagonals = Sequence[tuple[int, float]]  # (offset, value): value added at (i, offset + i) for every row i


def check_tileable(name: str) -> None:
    """Raise :class:`~simcse.errors.SimCSEError` unless loss ``name`` can be computed in tiles."""
    if name not in TILEABLE:
        why = _WHY_NOT.get(name, "it is not of InfoNCE's family")
        raise SimCSEError(f"loss {name!r} cannot be tiled (`loss_tile_size`): {why}; the tiled losses are "
                          f"{', '.join(TILEABLE)}")


def _check_tile_size(tile_size: object) -> int:
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise SimCSEError(f"loss_tile_size must be a positive integer (rows and columns of one block of "
                          f"similarities), got {tile_size!r}")
    return tile_size


def _block(rows: torch.Tensor, cols: torch.Tensor, r0: int, c0: int, tile: int, buffer: torch.Tensor,
           diagonals: Diagonals, shift: torch.Tensor | None = None) -> torch.Tensor:
    """R[r0:r0+tile] C[c0:c0+tile]ᵀ + the diagonals' values [− shift per row, fused into the product],
    written into ``buffer`` (reused, no allocation)."""
    a, b = rows[r0:r0 + tile], cols[c0:c0 + tile]
    block = buffer.view(-1)[: a.shape[0] * b.shape[0]].view(a.shape[0], b.shape[0])
    if shift is None:
        torch.mm(a, b.T, out=block)
    else:
        torch.addmm(shift[:, None], a, b.T, beta=-1, out=block)
    for offset, value in diagonals:
        block.diagonal(offset + r0 - c0).add_(value)  # entries (i, offset + i) inside this block
    return block


def _buffer(rows: torch.Tensor, cols: torch.Tensor, tile: int) -> torch.Tensor:
    return rows.new_empty(min(tile, rows.shape[0]) * min(tile, cols.shape[0]))


class _TiledLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, cols, diagonals, tile):
        buffer = _buffer(rows, cols, tile)
        lse = rows.new_empty(rows.shape[0])
        for r0 in range(0, rows.shape[0], tile):
            n = min(tile, rows.shape[0] - r0)
            top = rows.new_full((n,), NEG_INF)  # running max of the row
            total = rows.new_zeros(n)  # running Σ exp(logit − top)
            for c0 in range(0, cols.shape[0], tile):
                block = _block(rows, cols, r0, c0, tile, buffer, diagonals)
                new_top = torch.maximum(top, block.amax(dim=1))
                shift = torch.where(new_top > NEG_INF, new_top, torch.zeros_like(new_top))  # −inf rows: no NaN
                total = total * (top - shift).exp() + block.sub_(shift[:, None]).exp_().sum(dim=1)
                top = new_top
            lse[r0:r0 + n] = torch.where(top > NEG_INF, top + total.log(), top)
        ctx.save_for_backward(rows, cols, lse)
        ctx.diagonals, ctx.tile = diagonals, tile
        return lse

    @staticmethod
    def backward(ctx, grad):
        rows, cols, lse = ctx.saved_tensors
        tile, diagonals = ctx.tile, ctx.diagonals
        buffer = _buffer(rows, cols, tile)
        d_rows, d_cols = torch.zeros_like(rows), torch.zeros_like(cols)
        safe_lse = torch.where(lse > NEG_INF, lse, torch.zeros_like(lse))  # an empty row has P = 0
        for r0 in range(0, rows.shape[0], tile):
            r1 = min(r0 + tile, rows.shape[0])
            g = grad[r0:r1, None]
            scaled_rows = rows[r0:r1] * g  # g_i R_i: the gradient's row factor, on (tile, H) not (tile, tile)
            for c0 in range(0, cols.shape[0], tile):
                c1 = min(c0 + tile, cols.shape[0])
                weights = _block(rows, cols, r0, c0, tile, buffer, diagonals, safe_lse[r0:r1]).exp_()  # P_ij
                d_rows[r0:r1].addcmul_(weights @ cols[c0:c1], g)  # Σ_j g_i P_ij C_j
                d_cols[c0:c1].addmm_(weights.T, scaled_rows)  # Σ_i g_i P_ij R_i
        return d_rows, d_cols, None, None


def tiled_logsumexp(rows: torch.Tensor, cols: torch.Tensor, diagonals: Diagonals = (), *,
                    tile_size: int) -> torch.Tensor:
    """log Σ_j exp(rows_i·cols_j + b_ij) for every row i (n,), in (tile, tile) blocks, differentiable in both.

    ``rows`` (n, H) and ``cols`` (m, H) of one dtype; b_ij is ``value`` where j = i + ``offset`` for each
    (offset, value) of ``diagonals`` (−inf removes the entry; several diagonals may share a column block),
    else 0. A row with every entry removed gets −inf, and zero gradient.
    """
    return _TiledLogSumExp.apply(rows.contiguous(), cols.contiguous(), tuple(diagonals), _check_tile_size(tile_size))


@torch.no_grad()
def tiled_hardest(rows: torch.Tensor, cols: torch.Tensor, diagonals: Diagonals = (), *,
                  tile_size: int) -> torch.Tensor:
    """argmax_j (rows_i·cols_j + b_ij) for every row i (n,) int64, b as in :func:`tiled_logsumexp`; the first
    maximum on ties; no gradient (recompute the chosen pairs to differentiate them)."""
    tile = _check_tile_size(tile_size)
    rows, cols = rows.detach().contiguous(), cols.detach().contiguous()
    buffer = _buffer(rows, cols, tile)
    best = rows.new_full((rows.shape[0],), NEG_INF)
    index = torch.zeros(rows.shape[0], dtype=torch.long, device=rows.device)
    for r0 in range(0, rows.shape[0], tile):
        r1 = min(r0 + tile, rows.shape[0])
        for c0 in range(0, cols.shape[0], tile):
            values, where = _block(rows, cols, r0, c0, tile, buffer, diagonals).max(dim=1)
            better = values > best[r0:r1]  # strict: an earlier tile keeps a tie
            best[r0:r1] = torch.where(better, values, best[r0:r1])
            index[r0:r1] = torch.where(better, where + c0, index[r0:r1])
    return index


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=1)


def _infonce(x, y, x3, hp, tile):
    batch, temp = x.shape[0], hp["temp"]
    cols = y if x3 is None else torch.cat([y, x3])
    weight = hp.get("hard_negative_weight", 0.0)
    hard = [] if (x3 is None or weight == 0) else [(k * batch, weight) for k in range(1, cols.shape[0] // batch)]
    positive = _rowdot(x, y) / temp  # (B,)
    loss = (tiled_logsumexp(x / temp, cols, hard, tile_size=tile) - positive).mean()
    if hp.get("symmetric", False):  # positive j against every anchor; hard negatives take no part
        loss = (loss + (tiled_logsumexp(y / temp, x, tile_size=tile) - positive).mean()) / 2
    return loss


def _nt_xent(x, y, x3, hp, tile):
    both = torch.cat([x, y])  # (2B, H): row r's positive is row r ± B, itself excluded
    positive = _rowdot(x, y) / hp["temp"]
    return (tiled_logsumexp(both / hp["temp"], both, [(0, NEG_INF)], tile_size=tile) - positive.repeat(2)).mean()


def _decoupled(anchors, positives, hard, temp, same_view, tile):
    """DCL's ℓ_i: log Σ over the negatives (the positive and the anchor itself removed) − the positive logit."""
    blocks = [positives] + ([] if hard is None else [hard])
    excluded = [(0, NEG_INF)]
    if same_view:
        excluded.append((sum(b.shape[0] for b in blocks), NEG_INF))
        blocks.append(anchors)
    lse = tiled_logsumexp(anchors / temp, torch.cat(blocks), excluded, tile_size=tile)
    return lse - _rowdot(anchors, positives) / temp


def _dcl(x, y, x3, hp, tile):
    require_pairs("dcl", x)
    same_view = hp.get("same_view_negatives", False)
    losses = _decoupled(x, y, x3, hp["temp"], same_view, tile)
    if hp.get("symmetric", False):
        losses = torch.cat([losses, _decoupled(y, x, None, hp["temp"], same_view, tile)])
    return losses.mean()


def _dcl_pos(x, y, x3, hp, tile):
    require_pairs("dcl_pos", x)
    return F.relu(_decoupled(x, y, x3, hp["temp"], False, tile)).mean()


def _arccon(x, y, x3, hp, tile):
    cols = y if x3 is None else torch.cat([y, x3])
    negatives = tiled_logsumexp(x / hp["temp"], cols, [(0, NEG_INF)], tile_size=tile)  # all but the positive
    positive = torch.cos(safe_arccos(_rowdot(x, y)) + math.radians(hp["margin"])) / hp["temp"]
    return (torch.logaddexp(negatives, positive) - positive).mean()


def _dhel(x, y, x3, hp, tile):
    require_pairs("dhel", x)
    temp = hp["temp"]
    losses = tiled_logsumexp(x / temp, x, [(0, NEG_INF)], tile_size=tile) - _rowdot(x, y) / temp
    if hp.get("include_augs", True):
        losses = losses + tiled_logsumexp(y / temp, y, [(0, NEG_INF)], tile_size=tile)
    return losses.mean()


def _uniformity(x: torch.Tensor, t: float, tile: int) -> torch.Tensor:
    """log mean_{i<j} e^{−t‖x_i − x_j‖²} of unit rows: ‖x_i − x_j‖² = 2 − 2 x_i·x_j and the i ≠ j sum is
    twice the i < j one, so it is logsumexp_i(lse_i) − 2t − log(B(B − 1))."""
    batch = x.shape[0]
    lse = tiled_logsumexp(2 * t * x, x, [(0, NEG_INF)], tile_size=tile)  # (B,) over j ≠ i
    return torch.logsumexp(lse, dim=0) - 2 * t - math.log(batch * (batch - 1))


def _align_uniform(x, y, x3, hp, tile):
    require_pairs("align_uniform", x)
    lam, t = hp["lam"], hp["t"]
    return (1 - lam) * alignment(x, y, hp["alpha"]) + lam * (_uniformity(x, t, tile) + _uniformity(y, t, tile)) / 2


def _kcl(x, y, x3, hp, tile):
    require_pairs("kcl", x)
    t = hp["t"]
    aligned = torch.exp(-t * paired_squared_distances(x, y)).mean()
    return -2 * aligned + hp["gamma"] * (_uniformity(x, t, tile).exp() + _uniformity(y, t, tile).exp())


def _margin(distance, scale: float = 1.0):
    def loss(x, y, x3, hp, tile, name):
        require_pairs(name, x)
        # Column j (positive y_j) against every other anchor x_i: the hardest is the most similar one.
        hardest = tiled_hardest(y, x, [(0, NEG_INF)], tile_size=tile)  # (B,) the i of each column j
        positive, negative = _rowdot(x, y), _rowdot(x[hardest], y)  # differentiable, O(B·H)
        return F.relu(hp["margin"] * scale + distance(positive) - distance(negative)).mean()

    return loss


_FORMULAS = {
    "infonce": _infonce, "nt_xent": _nt_xent, "dcl": _dcl, "dcl_pos": _dcl_pos, "arccon": _arccon,
    "dhel": _dhel, "kcl": _kcl, "align_uniform": _align_uniform,
    "met": _margin(lambda c: (2 - 2 * c).clamp_min(COSINE_EPS).sqrt()),
    "mpt": _margin(lambda c: -c),
    "mat": _margin(safe_arccos, math.pi),
}


class TiledLoss(ContrastiveLoss):
    """A registered loss computed in (tile, tile) blocks: same value and gradient, O(B·tile) memory.

    ``TiledLoss(build_loss("infonce", temp=0.05), tile_size=4096)(z1, z2, z3)`` equals the wrapped loss on
    the same embeddings. It takes the wrapped loss's inputs (hard negatives where that loss takes them)
    and is not registered itself. ``hparams()`` reports the wrapped loss's hyperparameters.
    """

    def __init__(self, loss: ContrastiveLoss, tile_size: int) -> None:
        super().__init__()
        check_tileable(loss.name)
        self.loss = loss
        self.tile_size = _check_tile_size(tile_size)
        self.name = loss.name
        self.supports_hard_negatives = loss.supports_hard_negatives

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None = None, **kwargs: Any):
        if kwargs.get("keys") is not None:
            raise SimCSEError(f"loss {self.name!r} cannot mask duplicate texts (`mask_duplicate_texts`) when tiled "
                              "(`loss_tile_size`) yet; drop one of the two")
        kwargs.pop("keys", None)
        return super().forward(z1, z2, z3, **kwargs)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None) -> torch.Tensor:
        x, y = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
        x3 = None if z3 is None else F.normalize(flatten_hard_negatives(z3), dim=-1)  # (K·B, H), k-major
        formula, hp = _FORMULAS[self.name], self.loss.hparams()
        if self.name in ("met", "mpt", "mat"):
            return formula(x, y, x3, hp, self.tile_size, self.name)
        return formula(x, y, x3, hp, self.tile_size)

    def hparams(self) -> dict[str, Any]:
        return self.loss.hparams()

    def extra_repr(self) -> str:
        return f"tile_size={self.tile_size}"


def tiled_loss(name: str, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None = None,
               hparams: dict[str, Any] | None = None, tile_size: int = 4096) -> torch.Tensor:
    """Loss ``name`` with hyperparameters ``hparams`` (the others keep their defaults) on (z1, z2, z3), tiled.

    Equal to ``build_loss(name, **hparams)(z1, z2, z3)`` in value and gradient; raises
    :class:`~simcse.errors.SimCSEError` for a loss that cannot be tiled (naming those that can), for
    hyperparameters the loss does not take, and for a tile size that is not a positive integer.
    """
    check_tileable(name)
    return TiledLoss(build_loss(name, **(hparams or {})), tile_size)(z1, z2, z3)
