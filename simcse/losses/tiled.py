"""Tiled losses: InfoNCE and its family in O(B x tile) memory, never the (B, B) similarity matrix.

Inf-CL (Cheng et al. 2024, arXiv:2410.17243) computes the contrastive loss in tiles of the similarity
matrix with a running log-sum-exp. Every loss here is written with the two primitives of
:mod:`simcse.losses.blocks` over a row set R and a column set C: :func:`tiled_logsumexp` (hand-written
backward that recomputes each block) and :func:`tiled_hardest` (no gradient; the margin losses recompute
the chosen pairs' cosines with autograd, so the gradient of the hardest negative goes to the argmax only, as
``amax``'s does, ties aside). The rest of each formula (the positive logit, the −onehot half of the
cross-entropy gradient, sums, the symmetric average, relu clipping, the arccos margin) is O(n) per-row work
left to autograd, and so is the normalisation. Peak memory beyond the embeddings (a few (B, H) copies) is one
(tile, tile) block of float32 (float64 for float64 inputs); the result equals the plain loss's to rounding
(float64 values and gradients within 1e-10 in ``tests/losses/test_tiled.py``). Costs: the backward
recomputes the blocks, 4/3 of the plain loss's matrix products; ``bench/huge_batch.py`` measures both.

Which losses: :data:`TILEABLE` (``infonce`` with hard negatives, their weight and ``symmetric``;
``nt_xent``; ``dcl`` in all its forms; ``dcl_pos``; ``arccon``; ``dhel``; ``kcl``; ``align_uniform``;
``met``, ``mpt``, ``mat``); duplicate-text masking (``keys``) for those of :data:`MASKED`. The others are
refused with a :class:`~simcse.errors.SimCSEError`: ``vicreg`` builds no (B, B) matrix (nothing to tile),
``cosent``/``angle`` rank pairs of pairs by their scores, ``gist`` filters by a guide's similarities, and
the Matryoshka wrappers wrap a loss (wrap a tiled one instead: ``train.py --loss_tile_size`` does).

Local rows (:data:`LOCAL_ROWS`: every tileable loss but ``align_uniform``, whose uniformity is the log of a
sum over all pairs): ``TiledLoss(...)(z1, z2, z3, rows=(first, last))`` is rows [first, last)'s share of
the loss. Under DDP each process computes its own rows of the gathered global batch against every
candidate (the trainer does this; sentence-transformers scores local rows against gathered candidates too),
so the loss's compute and memory per process drop by W and the shares of the W processes add up to the
global-batch loss.

>>> import torch
>>> from simcse.losses import build_loss
>>> z1, z2 = torch.randn(37, 16, dtype=torch.float64), torch.randn(37, 16, dtype=torch.float64)
>>> plain = build_loss("infonce", symmetric=True)(z1, z2)
>>> tiled = tiled_loss("infonce", z1, z2, None, {"symmetric": True}, tile_size=8)
>>> bool(torch.allclose(plain, tiled, rtol=1e-12, atol=1e-12))
True
>>> loss = TiledLoss(build_loss("infonce"), None)
>>> parts = loss(z1, z2, rows=(0, 20)) + loss(z1, z2, rows=(20, 37))
>>> bool(torch.allclose(parts, build_loss("infonce")(z1, z2), rtol=1e-12, atol=1e-12))
True
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from simcse.errors import SimCSEError
from simcse.losses.blocks import NEG_INF, Duplicates, check_tile_size, tiled_hardest, tiled_logsumexp
from simcse.losses.checks import require_pairs
from simcse.losses.diagnostics import alignment
from simcse.losses.ops import COSINE_EPS, paired_squared_distances, safe_arccos
from simcse.losses.registry import LOSSES, ContrastiveLoss, build_loss, flatten_hard_negatives

__all__ = ["LOCAL_ROWS", "MASKED", "TILEABLE", "TiledLoss", "check_tileable", "check_tiled_masking", "row_local_form",
           "tiled_hardest", "tiled_logsumexp", "tiled_loss"]

#: The losses :class:`TiledLoss` computes in tiles.
TILEABLE = ("infonce", "nt_xent", "dcl", "dcl_pos", "arccon", "dhel", "kcl", "align_uniform", "met", "mpt", "mat")
#: Those whose value is a sum of per-row terms, so that one process may compute its own rows (``rows=``).
#: align_uniform's uniformity is the log of a sum over every pair: it needs the whole batch.
LOCAL_ROWS = tuple(name for name in TILEABLE if name != "align_uniform")
#: Those that also mask duplicate texts (``keys``) when tiled.
MASKED = ("infonce", "nt_xent", "dcl", "dcl_pos", "arccon", "dhel")
_WHY_NOT = {
    "vicreg": "it builds no (B, B) matrix, so there is nothing to tile",
    "cosent": "it ranks pairs of pairs by their scores, not rows against candidates",
    "angle": "it ranks pairs of pairs by their scores, not rows against candidates",
    "gist": "its negatives are filtered by a guide's similarities",
}


def check_tileable(name: str) -> None:
    """Raise :class:`~simcse.errors.SimCSEError` unless loss ``name`` can be computed in tiles."""
    if name not in TILEABLE:
        why = _WHY_NOT.get(name, "it is not of InfoNCE's family")
        raise SimCSEError(f"loss {name!r} cannot be tiled (`loss_tile_size`): {why}; the tiled losses are "
                          f"{', '.join(TILEABLE)}")


def check_tiled_masking(name: str) -> None:
    """Raise :class:`~simcse.errors.SimCSEError` unless tiled loss ``name`` can mask duplicate texts."""
    if name not in MASKED:
        raise SimCSEError(f"loss {name!r} cannot mask duplicate texts (`mask_duplicate_texts`) when tiled "
                          f"(`loss_tile_size`); the tiled losses that can: {', '.join(MASKED)}; drop one of the two")


@dataclass(frozen=True)
class _Batch:
    """Unit rows x, y (B, H) and x3 (K·B, H) or None, the text keys (B, 2 + K) or None, the rows
    [first, last) this call computes, and the tile."""

    x: torch.Tensor
    y: torch.Tensor
    x3: torch.Tensor | None
    keys: torch.Tensor | None
    first: int
    last: int
    tile: int

    @property
    def size(self) -> int:
        return self.x.shape[0]

    def rows(self, z: torch.Tensor) -> torch.Tensor:
        return z[self.first:self.last]

    def duplicates(self, columns: torch.Tensor | None, own: tuple[int, ...]) -> Duplicates | None:
        """The mask of candidates ``columns`` (one key per column) repeating a computed row's pair."""
        if self.keys is None:
            return None
        return Duplicates(self.rows(self.keys[:, :2]), columns, own)

    def candidate_keys(self, role: int, hard: bool) -> torch.Tensor | None:
        """The keys of candidates [role's sentences; the hard negatives, k-major when ``hard``]."""
        if self.keys is None:
            return None
        return torch.cat([self.keys[:, role]] + ([self.keys[:, 2:].T.reshape(-1)] if hard else []))

    def lse(self, rows: torch.Tensor, cols: torch.Tensor, diagonals=(), duplicates=None) -> torch.Tensor:
        return tiled_logsumexp(rows, cols, diagonals, duplicates, tile_size=self.tile)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=1)


def _or_zero(lse: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` where the log-sum-exp had a candidate, 0 where every one was masked (the plain losses' rule)."""
    return torch.where(lse > NEG_INF, values, torch.zeros_like(values))


def _infonce(b: _Batch, hp: dict) -> torch.Tensor:
    batch, first, temp = b.size, b.first, hp["temp"]
    cols = b.y if b.x3 is None else torch.cat([b.y, b.x3])
    weight = hp.get("hard_negative_weight", 0.0)
    hard = [] if (b.x3 is None or weight == 0) else [(k * batch + first, weight)
                                                      for k in range(1, cols.shape[0] // batch)]
    x, y = b.rows(b.x), b.rows(b.y)
    positive = _rowdot(x, y) / temp  # (n,)
    own = b.duplicates(b.candidate_keys(1, b.x3 is not None), (first,))
    loss = (b.lse(x / temp, cols, hard, own) - positive).sum() / batch
    if hp.get("symmetric", False):  # positive j against every anchor; hard negatives take no part
        column = b.lse(y / temp, b.x, (), b.duplicates(b.candidate_keys(0, False), (first,)))
        loss = (loss + (column - positive).sum() / batch) / 2
    return loss


def _nt_xent(b: _Batch, hp: dict) -> torch.Tensor:
    batch, first, temp = b.size, b.first, hp["temp"]
    both = torch.cat([b.x, b.y])  # (2B, H): row r's positive is row r ± B, itself excluded
    keys = None if b.keys is None else torch.cat([b.keys[:, 0], b.keys[:, 1]])
    x, y = b.rows(b.x), b.rows(b.y)
    positive = _rowdot(x, y) / temp
    own = b.duplicates(keys, (first, batch + first))
    anchors = b.lse(x / temp, both, [(first, NEG_INF)], own)
    positives = b.lse(y / temp, both, [(batch + first, NEG_INF)], own)
    return ((anchors - positive).sum() + (positives - positive).sum()) / (2 * batch)


def _decoupled(b: _Batch, anchors: torch.Tensor, positives: torch.Tensor, hard: torch.Tensor | None, temp: float,
               same_view: bool, roles: tuple[int, int]) -> torch.Tensor:
    """DCL's ℓ_i of the computed rows: log Σ over the negatives (the positive and the anchor itself
    removed) − the positive logit; 0 for a row whose every negative is a masked duplicate."""
    first = b.first
    blocks = [positives] + ([] if hard is None else [hard])
    keys = b.candidate_keys(roles[1], hard is not None)
    excluded = [(first, NEG_INF)]
    if same_view:
        excluded.append((sum(block.shape[0] for block in blocks) + first, NEG_INF))
        blocks.append(anchors)
        keys = None if keys is None else torch.cat([keys, b.keys[:, roles[0]]])
    own = b.duplicates(keys, tuple(offset for offset, _ in excluded))
    lse = b.lse(b.rows(anchors) / temp, torch.cat(blocks), excluded, own)
    return _or_zero(lse, lse - _rowdot(b.rows(anchors), b.rows(positives)) / temp)


def _dcl(b: _Batch, hp: dict) -> torch.Tensor:
    require_pairs("dcl", b.x)
    same_view = hp.get("same_view_negatives", False)
    losses = _decoupled(b, b.x, b.y, b.x3, hp["temp"], same_view, (0, 1))
    if not hp.get("symmetric", False):
        return losses.sum() / b.size
    reverse = _decoupled(b, b.y, b.x, None, hp["temp"], same_view, (1, 0))
    return (losses.sum() + reverse.sum()) / (2 * b.size)


def _dcl_pos(b: _Batch, hp: dict) -> torch.Tensor:
    require_pairs("dcl_pos", b.x)
    return F.relu(_decoupled(b, b.x, b.y, b.x3, hp["temp"], False, (0, 1))).sum() / b.size


def _arccon(b: _Batch, hp: dict) -> torch.Tensor:
    cols = b.y if b.x3 is None else torch.cat([b.y, b.x3])
    own = b.duplicates(b.candidate_keys(1, b.x3 is not None), (b.first,))
    x, y = b.rows(b.x), b.rows(b.y)
    negatives = b.lse(x / hp["temp"], cols, [(b.first, NEG_INF)], own)  # all but the positive
    positive = torch.cos(safe_arccos(_rowdot(x, y)) + math.radians(hp["margin"])) / hp["temp"]
    return (torch.logaddexp(negatives, positive) - positive).sum() / b.size


def _dhel(b: _Batch, hp: dict) -> torch.Tensor:
    require_pairs("dhel", b.x)
    temp = hp["temp"]

    def same_view(z: torch.Tensor, role: int) -> torch.Tensor:
        lse = b.lse(b.rows(z) / temp, z, [(b.first, NEG_INF)], b.duplicates(b.candidate_keys(role, False), (b.first,)))
        return _or_zero(lse, lse)

    losses = same_view(b.x, 0) - _rowdot(b.rows(b.x), b.rows(b.y)) / temp
    if hp.get("include_augs", True):
        losses = losses + same_view(b.y, 1)
    return losses.sum() / b.size


def _log_uniformity(b: _Batch, z: torch.Tensor, t: float) -> torch.Tensor:
    """log of the computed rows' share of mean_{i≠j} e^{−t‖z_i − z_j‖²} over unit rows: ‖z_i − z_j‖² =
    2 − 2 z_i·z_j, so it is logsumexp_i(lse_i) − 2t − log(B(B − 1)). Over every row, it is the
    uniformity log mean_{i<j} e^{−t‖z_i − z_j‖²} (the i ≠ j mean equals the i < j one)."""
    batch = b.size
    lse = b.lse(2 * t * b.rows(z), z, [(b.first, NEG_INF)])  # (n,) over j ≠ i
    return torch.logsumexp(lse, dim=0) - 2 * t - math.log(batch * (batch - 1))


def _align_uniform(b: _Batch, hp: dict) -> torch.Tensor:
    require_pairs("align_uniform", b.x)
    lam, t = hp["lam"], hp["t"]
    return (1 - lam) * alignment(b.x, b.y, hp["alpha"]) + lam * (_log_uniformity(b, b.x, t)
                                                                  + _log_uniformity(b, b.y, t)) / 2


def _kcl(b: _Batch, hp: dict) -> torch.Tensor:
    require_pairs("kcl", b.x)
    t = hp["t"]
    aligned = torch.exp(-t * paired_squared_distances(b.rows(b.x), b.rows(b.y))).sum() / b.size
    return -2 * aligned + hp["gamma"] * (_log_uniformity(b, b.x, t).exp() + _log_uniformity(b, b.y, t).exp())


def _margin(name: str, distance, scale: float = 1.0):
    def loss(b: _Batch, hp: dict) -> torch.Tensor:
        require_pairs(name, b.x)
        # Column j (positive y_j) against every other anchor x_i: the hardest is the most similar one.
        y = b.rows(b.y)
        hardest = tiled_hardest(y, b.x, [(b.first, NEG_INF)], tile_size=b.tile)  # the i of each column j
        positive, negative = _rowdot(b.rows(b.x), y), _rowdot(b.x[hardest], y)  # differentiable, O(n·H)
        return F.relu(hp["margin"] * scale + distance(positive) - distance(negative)).sum() / b.size

    return loss


_FORMULAS = {
    "infonce": _infonce, "nt_xent": _nt_xent, "dcl": _dcl, "dcl_pos": _dcl_pos, "arccon": _arccon,
    "dhel": _dhel, "kcl": _kcl, "align_uniform": _align_uniform,
    "met": _margin("met", lambda c: (2 - 2 * c).clamp_min(COSINE_EPS).sqrt()),
    "mpt": _margin("mpt", lambda c: -c),
    "mat": _margin("mat", safe_arccos, math.pi),
}


class TiledLoss(ContrastiveLoss):
    """A registered loss computed in (tile, tile) blocks: same value and gradient, O(B·tile) memory.

    ``TiledLoss(build_loss("infonce", temp=0.05), tile_size=4096)(z1, z2, z3)`` equals the wrapped loss on
    the same embeddings. It takes the wrapped loss's inputs (hard negatives where that loss takes them;
    text ``keys`` for the losses of :data:`MASKED`) and is not registered itself. ``hparams()`` reports the
    wrapped loss's hyperparameters. ``tile_size=None``: one block (the plain loss's memory), for
    :meth:`forward`'s ``rows``.

    ``forward(..., rows=(first, last))`` computes only rows [first, last) (anchors, and for the symmetric
    and column-wise forms the same examples' positives) against every candidate, returning their terms'
    sum divided by the whole batch's count: the parts of a partition of the rows add up to the loss. Under
    DDP each process computes its own rows of the gathered batch (:func:`row_local_form`).
    """

    def __init__(self, loss: ContrastiveLoss, tile_size: int | None) -> None:
        super().__init__()
        check_tileable(loss.name)
        self.loss = loss
        self.tile_size = None if tile_size is None else check_tile_size(tile_size)
        self.name = loss.name
        self.supports_hard_negatives = loss.supports_hard_negatives
        self.masks_duplicates = loss.masks_duplicates

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None = None, *,
                rows: tuple[int, int] | None = None, **kwargs: Any) -> torch.Tensor:
        if kwargs.get("keys") is not None:
            check_tiled_masking(self.name)
        args, extras = self._checked(z1, z2, z3, **kwargs)
        with torch.autocast(device_type=z1.device.type, enabled=False):
            return self.compute(*args, rows=rows, **extras)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                keys: torch.Tensor | None = None, rows: tuple[int, int] | None = None) -> torch.Tensor:
        batch = z1.shape[0]
        first, last = (0, batch) if rows is None else rows
        if not 0 <= first < last <= batch:
            raise SimCSEError(f"rows {rows!r} are not a non-empty range of the batch's {batch} rows")
        if (first, last) != (0, batch) and self.name not in LOCAL_ROWS:
            raise SimCSEError(f"loss {self.name!r} needs the whole batch (its terms are not a sum over rows); "
                              f"only {', '.join(LOCAL_ROWS)} compute a part of the rows")
        x, y = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
        x3 = None if z3 is None else F.normalize(flatten_hard_negatives(z3), dim=-1)  # (K·B, H), k-major
        tile = self.tile_size or sys.maxsize  # None: one block per row set
        return _FORMULAS[self.name](_Batch(x, y, x3, keys, first, last, tile), self.loss.hparams())

    def hparams(self) -> dict[str, Any]:
        return self.loss.hparams()

    def extra_repr(self) -> str:
        return f"tile_size={self.tile_size}"


def row_local_form(loss: ContrastiveLoss, keys: bool = False) -> TiledLoss | None:
    """The form of ``loss`` that computes a part of the rows (``rows=``), or None when it needs the whole
    batch: a :class:`TiledLoss` of :data:`LOCAL_ROWS` (``loss`` itself, or ``loss`` wrapped with one block
    per row set), and with ``keys`` (duplicate-text masking) of :data:`MASKED` too. Wrappers (Matryoshka)
    and the other losses keep the full form."""
    if isinstance(loss, TiledLoss):
        local = loss
    elif LOSSES.get(loss.name) is type(loss) and loss.name in LOCAL_ROWS:
        local = TiledLoss(loss, None)
    else:
        return None
    if local.name not in LOCAL_ROWS or (keys and local.name not in MASKED):
        return None
    return local


def tiled_loss(name: str, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None = None,
               hparams: dict[str, Any] | None = None, tile_size: int = 4096) -> torch.Tensor:
    """Loss ``name`` with hyperparameters ``hparams`` (the others keep their defaults) on (z1, z2, z3), tiled.

    Equal to ``build_loss(name, **hparams)(z1, z2, z3)`` in value and gradient; raises
    :class:`~simcse.errors.SimCSEError` for a loss that cannot be tiled (naming those that can), for
    hyperparameters the loss does not take, and for a tile size that is not a positive integer.
    """
    check_tileable(name)
    return TiledLoss(build_loss(name, **(hparams or {})), tile_size)(z1, z2, z3)
