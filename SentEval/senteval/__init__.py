"""A SentEval-compatible evaluation package (import name ``senteval``).

The engine API is the one of facebookresearch/SentEval and of the SimCSE fork::

    import senteval
    se = senteval.engine.SE(params, batcher, prepare)
    results = se.eval(["STSBenchmark", "SICKRelatedness"])

Written from scratch for current Python, NumPy and PyTorch; runs on CPU and uses a GPU when present.
"""

from senteval import engine
from senteval.datapath import resolve_data_dir
from senteval.errors import SentEvalError
from senteval.utils import Params

__all__ = ["engine", "resolve_data_dir", "SentEvalError", "Params"]
