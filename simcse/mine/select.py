"""Which retrieved candidates become hard negatives: exclusions, margins, score bounds, the rank range.

The rules are those of sentence-transformers' ``mine_hard_negatives`` (UKPLab/sentence-transformers,
``sentence_transformers/util/hard_negatives.py``), applied to the candidates of one anchor at a time and
counted by reason:

1. a candidate whose text is the anchor's, or is one of the anchor's positives, is excluded (the corpus
   holds each text once, so this also drops duplicates of them);
2. ``absolute_margin`` m drops a candidate scoring above ``p - m``, where p is the anchor's lowest positive
   score; ``relative_margin`` r drops one scoring above ``p - |p| r`` (a negative must sit that far below the
   positive); ``max_score`` drops candidates above it, ``min_score`` those below it;
3. the survivors are ranked (score descending, corpus id ascending on ties: one answer whatever the
   backend), the first ``range_min`` skipped, and ``num_negatives`` taken from the next ones up to rank
   ``range_max`` (the top ones, or a seeded random sample of them).

Everything here is numpy on small per-anchor arrays; retrieval and scoring live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simcse.errors import SimCSEError

REASONS = ("anchor_text", "positive", "absolute_margin", "relative_margin", "max_score", "min_score")


@dataclass
class Selection:
    """The rules of step 2 and 3 (see the module docstring); ``range_max`` None = as the peer derives it."""

    num_negatives: int = 3
    range_min: int = 0
    range_max: int | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    sampling: str = "top"
    seed: int = 0

    def resolved_range_max(self, max_positives: int, rescoring: bool = False) -> int:
        """``range_max``, or the peer's default: range_min + num_negatives + max_positives, with ten times the
        negatives when a margin or score bound may drop candidates."""
        if self.range_max is not None:
            return self.range_max
        filtering = (self.absolute_margin is not None or self.relative_margin is not None
                     or self.max_score is not None or (rescoring and self.min_score is not None))
        return self.range_min + self.num_negatives * (10 if filtering else 1) + max_positives

    def check(self, max_positives: int = 1) -> None:
        if self.num_negatives < 1:
            raise SimCSEError(f"`num_negatives` must be at least 1, got {self.num_negatives}")
        if self.range_min < 0:
            raise SimCSEError(f"`range_min` must be >= 0, got {self.range_min}")
        if self.sampling not in ("top", "random"):
            raise SimCSEError(f"`sampling` must be top or random, got {self.sampling!r}")
        range_max = self.resolved_range_max(max_positives)
        if self.range_min >= range_max:
            raise SimCSEError(f"`range_min` {self.range_min} must be below `range_max` {range_max}")
        if self.num_negatives > range_max - self.range_min:
            raise SimCSEError(f"{self.num_negatives} negatives cannot come from ranks {self.range_min}..{range_max}"
                              f" ({range_max - self.range_min} candidates): lower `num_negatives` or `range_min`, "
                              "or raise `range_max`")


@dataclass
class Counts:
    """What the selection kept and dropped, over all anchors."""

    candidates: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    skipped_by_range_min: int = 0
    kept: int = 0


def select(ids: np.ndarray, scores: np.ndarray, anchor_id: int, positive_ids: np.ndarray,
           positive_scores: np.ndarray, rule: Selection, range_max: int, counts: Counts,
           rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The negatives of one anchor: (corpus ids, scores), best first, at most ``rule.num_negatives``.

    ids, scores: the retrieved candidates (-1 ids are padding); anchor_id: the corpus id of the anchor's
    own text (-1 when the corpus lacks it); positive_ids / positive_scores: the anchor's positives."""
    valid = ids >= 0
    ids, scores = ids[valid], np.asarray(scores[valid], dtype=np.float64)
    counts.candidates += len(ids)
    keep = np.ones(len(ids), dtype=bool)

    def drop(reason: str, mask: np.ndarray) -> None:
        newly = mask & keep
        counts.dropped[reason] += int(newly.sum())
        keep[newly] = False

    drop("anchor_text", ids == anchor_id)
    drop("positive", np.isin(ids, positive_ids))
    worst_positive = float(np.min(positive_scores))
    if rule.absolute_margin is not None:
        drop("absolute_margin", scores + rule.absolute_margin > worst_positive)
    if rule.relative_margin is not None:
        drop("relative_margin", scores > worst_positive - abs(worst_positive) * rule.relative_margin)
    if rule.max_score is not None:
        drop("max_score", scores > rule.max_score)
    if rule.min_score is not None:
        drop("min_score", scores < rule.min_score)
    ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:range_max]  # score descending, then corpus id
    counts.skipped_by_range_min += min(rule.range_min, len(order))
    order = order[rule.range_min:]
    if rule.sampling == "random" and len(order) > rule.num_negatives:
        picked = (rng or np.random.default_rng(rule.seed)).choice(len(order), rule.num_negatives, replace=False)
        order = order[np.sort(picked)]  # still best first
    order = order[:rule.num_negatives]
    counts.kept += len(order)
    return ids[order], scores[order]
