"""Hard-negative mining for (anchor, positive) pairs (``python -m simcse.mine``): embed a corpus once into
memory-mapped arrays (:mod:`~simcse.mine.embeddings`), retrieve each anchor's nearest texts with the
project's exact search, optionally rescore them with a cross-encoder, and keep negatives by rank range,
margin and score bounds (:mod:`~simcse.mine.select`), as sentence-transformers' ``mine_hard_negatives``
does (:mod:`~simcse.mine.mining`); the output is a training file ``train.py`` reads.

Imports: the encoder (:mod:`simcse.modeling`), the training-file reader (:mod:`simcse.data`) and the
foundation (:mod:`simcse.errors`, :mod:`simcse.files`, :mod:`simcse.search`); never evaluation, inference,
training or the scripts.
"""

from simcse.mine.mining import Mined, mine_hard_negatives
from simcse.mine.select import Selection

__all__ = ["Mined", "Selection", "mine_hard_negatives"]
