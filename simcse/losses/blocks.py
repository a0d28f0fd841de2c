"""The tiled primitives of :mod:`simcse.losses.tiled`: a row set against a column set, (tile x tile) at a time.

Over a row set R (n, H) and a column set C (m, H), with a bias b_ij:

* :func:`tiled_logsumexp` (an autograd Function with a hand-written backward): lse_i = log Σ_j exp(R_i·C_j
  + b_ij). The forward walks the (tile x tile) blocks of R Cᵀ row tile by row tile, keeping a running max
  and sum of exponentials per row; the backward recomputes each block, turns it into P = softmax weights
  times the incoming gradient, and accumulates dR += P C and dC += Pᵀ R block by block. Peak memory
  beyond R, C and their gradients: one (tile, tile) block.
* :func:`tiled_hardest` (no gradient): the argmax over columns of R Cᵀ + b, by a running max over column
  tiles.

The bias b is −inf or a constant on a few "diagonals" (``Diagonals``: column ``offset + i`` of row i; −inf
removes a row's own positive or itself, a finite w weights its own hard negative) and −inf wherever a
:class:`Duplicates` mask marks a candidate repeating the text of the row's own pair (``--mask_duplicate_texts``,
the tiled form of :func:`~simcse.losses.ops.duplicate_mask`). Row i of R may stand for row ``first + i`` of
a larger set (one process's rows of the global batch): the diagonals' offsets say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from simcse.errors import SimCSEError

__all__ = ["NEG_INF", "Diagonals", "Duplicates", "check_tile_size", "tiled_hardest", "tiled_logsumexp"]

NEG_INF = float("-inf")
Diagonals = Sequence[tuple[int, float]]  # (offset, value): value added at (i, offset + i) for every row i


@dataclass(frozen=True)
class Duplicates:
    """Which candidates repeat a row's texts: column j is removed from row i when ``columns[j]`` equals
    ``pairs[i, 0]`` or ``pairs[i, 1]`` (the keys of row i's anchor and positive), except at the ``own``
    diagonals (offsets, as in ``Diagonals``: the row's own positive or itself, which the loss handles).

    pairs: (n, 2) int64, one per row of R; columns: (m,) int64, one per column of C."""

    pairs: torch.Tensor
    columns: torch.Tensor
    own: tuple[int, ...] = ()

    def apply(self, block: torch.Tensor, r0: int, c0: int) -> None:
        """Fill block R[r0:] C[c0:]ᵀ's duplicate entries with −inf, in place."""
        pairs = self.pairs[r0:r0 + block.shape[0]]  # (n, 2)
        columns = self.columns[c0:c0 + block.shape[1]]  # (m,)
        hit = (columns[None, :, None] == pairs[:, None, :]).any(dim=2)  # (n, m)
        for offset in self.own:
            hit.diagonal(offset + r0 - c0).fill_(False)
        block.masked_fill_(hit, NEG_INF)


def check_tile_size(tile_size: object) -> int:
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise SimCSEError(f"`loss_tile_size` must be a positive integer (rows and columns of one block of "
                          f"similarities), got {tile_size!r}")
    return tile_size


def _block(rows: torch.Tensor, cols: torch.Tensor, r0: int, c0: int, tile: int, buffer: torch.Tensor,
           diagonals: Diagonals, duplicates: Duplicates | None, shift: torch.Tensor | None = None) -> torch.Tensor:
    """R[r0:r0+tile] C[c0:c0+tile]ᵀ + the bias [− shift per row, fused into the product], written into
    ``buffer`` (reused, no allocation)."""
    a, b = rows[r0:r0 + tile], cols[c0:c0 + tile]
    block = buffer.view(-1)[: a.shape[0] * b.shape[0]].view(a.shape[0], b.shape[0])
    if shift is None:
        torch.mm(a, b.T, out=block)
    else:
        torch.addmm(shift[:, None], a, b.T, beta=-1, out=block)
    for offset, value in diagonals:
        block.diagonal(offset + r0 - c0).add_(value)  # entries (i, offset + i) inside this block
    if duplicates is not None:
        duplicates.apply(block, r0, c0)
    return block


def _buffer(rows: torch.Tensor, cols: torch.Tensor, tile: int) -> torch.Tensor:
    return rows.new_empty(min(tile, rows.shape[0]) * min(tile, cols.shape[0]))


class _TiledLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, cols, diagonals, duplicates, tile):
        buffer = _buffer(rows, cols, tile)
        lse = rows.new_empty(rows.shape[0])
        for r0 in range(0, rows.shape[0], tile):
            n = min(tile, rows.shape[0] - r0)
            top = rows.new_full((n,), NEG_INF)  # running max of the row
            total = rows.new_zeros(n)  # running Σ exp(logit − top)
            for c0 in range(0, cols.shape[0], tile):
                block = _block(rows, cols, r0, c0, tile, buffer, diagonals, duplicates)
                new_top = torch.maximum(top, block.amax(dim=1))
                shift = torch.where(new_top > NEG_INF, new_top, torch.zeros_like(new_top))  # −inf rows: no NaN
                total = total * (top - shift).exp() + block.sub_(shift[:, None]).exp_().sum(dim=1)
                top = new_top
            lse[r0:r0 + n] = torch.where(top > NEG_INF, top + total.log(), top)
        ctx.save_for_backward(rows, cols, lse)
        ctx.diagonals, ctx.duplicates, ctx.tile = diagonals, duplicates, tile
        return lse

    @staticmethod
    def backward(ctx, grad):
        rows, cols, lse = ctx.saved_tensors
        tile, diagonals, duplicates = ctx.tile, ctx.diagonals, ctx.duplicates
        buffer = _buffer(rows, cols, tile)
        d_rows, d_cols = torch.zeros_like(rows), torch.zeros_like(cols)
        safe_lse = torch.where(lse > NEG_INF, lse, torch.zeros_like(lse))  # an empty row has P = 0
        for r0 in range(0, rows.shape[0], tile):
            r1 = min(r0 + tile, rows.shape[0])
            g = grad[r0:r1, None]
            scaled_rows = rows[r0:r1] * g  # g_i R_i: the gradient's row factor, on (tile, H) not (tile, tile)
            for c0 in range(0, cols.shape[0], tile):
                c1 = min(c0 + tile, cols.shape[0])
                weights = _block(rows, cols, r0, c0, tile, buffer, diagonals, duplicates, safe_lse[r0:r1]).exp_()
                d_rows[r0:r1].addcmul_(weights @ cols[c0:c1], g)  # Σ_j g_i P_ij C_j
                d_cols[c0:c1].addmm_(weights.T, scaled_rows)  # Σ_i g_i P_ij R_i
        return d_rows, d_cols, None, None, None


def tiled_logsumexp(rows: torch.Tensor, cols: torch.Tensor, diagonals: Diagonals = (),
                    duplicates: Duplicates | None = None, *, tile_size: int) -> torch.Tensor:
    """log Σ_j exp(rows_i·cols_j + b_ij) for every row i (n,), in (tile, tile) blocks, differentiable in both.

    ``rows`` (n, H) and ``cols`` (m, H) of one dtype; b_ij is ``value`` where j = i + ``offset`` for each
    (offset, value) of ``diagonals`` (−inf removes the entry; several diagonals may share a column block),
    −inf where ``duplicates`` marks the entry, else 0. A row with every entry removed gets −inf, and zero
    gradient.
    """
    tile = check_tile_size(tile_size)
    if tile >= rows.shape[0] and tile >= cols.shape[0]:  # one block: autograd's own log-sum-exp, like the plain losses
        return _one_block_logsumexp(rows, cols, tuple(diagonals), duplicates)
    return _TiledLogSumExp.apply(rows.contiguous(), cols.contiguous(), tuple(diagonals), duplicates, tile)


def _one_block_logsumexp(rows: torch.Tensor, cols: torch.Tensor, diagonals: Diagonals,
                         duplicates: Duplicates | None) -> torch.Tensor:
    """:func:`tiled_logsumexp` as one (n, m) block differentiated by autograd (the plain losses' algorithm,
    so one process's rows of a batch round as the whole batch does); −inf, zero gradient, for an empty row."""
    logits = rows @ cols.T
    if diagonals or duplicates is not None:
        bias = logits.new_zeros(logits.shape)
        for offset, value in diagonals:
            bias.diagonal(offset).add_(value)
        if duplicates is not None:
            duplicates.apply(bias, 0, 0)
        logits = logits + bias
    nonempty = (logits > NEG_INF).any(dim=1)
    lse = torch.logsumexp(torch.where(nonempty[:, None], logits, torch.zeros_like(logits)), dim=1)
    return torch.where(nonempty, lse, torch.full_like(lse, NEG_INF))


@torch.no_grad()
def tiled_hardest(rows: torch.Tensor, cols: torch.Tensor, diagonals: Diagonals = (), *,
                  tile_size: int) -> torch.Tensor:
    """argmax_j (rows_i·cols_j + b_ij) for every row i (n,) int64, b as in :func:`tiled_logsumexp`; the first
    maximum on ties; no gradient (recompute the chosen pairs to differentiate them)."""
    tile = check_tile_size(tile_size)
    rows, cols = rows.detach().contiguous(), cols.detach().contiguous()
    buffer = _buffer(rows, cols, tile)
    best = rows.new_full((rows.shape[0],), NEG_INF)
    index = torch.zeros(rows.shape[0], dtype=torch.long, device=rows.device)
    for r0 in range(0, rows.shape[0], tile):
        r1 = min(r0 + tile, rows.shape[0])
        for c0 in range(0, cols.shape[0], tile):
            values, where = _block(rows, cols, r0, c0, tile, buffer, diagonals, None).max(dim=1)
            better = values > best[r0:r1]  # strict: an earlier tile keeps a tie
            best[r0:r1] = torch.where(better, values, best[r0:r1])
            index[r0:r1] = torch.where(better, where + c0, index[r0:r1])
    return index
