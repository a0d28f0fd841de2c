"""Small shared helpers: the parameter object, file reading, correlation and seeding."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from senteval.classifier import CLASSIFIER_DEFAULTS
from senteval.errors import SentEvalError

# Classifier settings of the original protocol: facebookresearch/SentEval README ("prototyping" and default
# configurations) as used by princeton-nlp/SimCSE ``evaluation.py`` (``--mode dev/fasttest`` and ``test``).
FAST_CLASSIFIER = {"nhid": 0, "optim": "rmsprop", "batch_size": 128, "tenacity": 3, "epoch_size": 2}
TEST_CLASSIFIER = {"nhid": 0, "optim": "adam", "batch_size": 64, "tenacity": 5, "epoch_size": 4}

DEFAULT_PARAMS: dict[str, Any] = {
    "task_path": None,  # directory containing downstream/; None = resolve_data_dir()
    "usepytorch": True,
    "seed": 1111,
    "batch_size": 128,  # sentences per batcher call
    "kfold": 5,
    # As the original engine: no classifier given means {"nhid": 0}, completed with the MLP defaults.
    "classifier": {"nhid": 0},
    "device": None,  # classifier device; None = cuda when available, else cpu
    "sts_splits": None,  # STSBenchmark / SICKRelatedness splits to score; None = train, dev, test
}


class Params(dict):
    """A dict with attribute access that, unlike SentEval's ``dotdict``, fails loudly on typos.

    ``params.batch_size`` and ``params["batch_size"]`` are the same; reading a key that was never set
    raises ``AttributeError`` naming it instead of returning ``None``.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"SentEval params have no {name!r} (known: {sorted(self)})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    def __deepcopy__(self, memo):  # keep the subclass through copy.deepcopy
        return Params({k: copy.deepcopy(v, memo) for k, v in self.items()})


def make_params(user: dict[str, Any] | None = None) -> Params:
    """Defaults overlaid with the user's parameters.

    A user's classifier dict replaces the default one as a whole; keys it leaves out take the
    original MLP's defaults (nhid 0, adam, batch 64, tenacity 5, epoch size 4; see
    ``senteval.classifier.CLASSIFIER_DEFAULTS``), not the fast protocol's, as in facebookresearch/SentEval.
    """
    params = Params(copy.deepcopy(DEFAULT_PARAMS))
    for key, value in (user or {}).items():
        if key == "classifier" and value is not None:
            params["classifier"] = dict(value)
        else:
            params[key] = value
    params["classifier"] = {**CLASSIFIER_DEFAULTS, **params["classifier"]}
    return params


def read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    """Lines of a text file without line terminators (\\n, \\r\\n and a UTF-8 BOM handled)."""
    if not path.is_file():
        raise SentEvalError(f"missing SentEval data file {str(path)!r}; the data directory is incomplete")
    with open(path, encoding=encoding, newline=None) as handle:
        # Split on \n only, as the original iterates over a file's lines: str.splitlines() would also
        # break on \x85, \u2028, \x1c... which occur inside sentences (TREC is latin-1).
        lines = handle.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def sort_by_length(*columns: list, key_columns: int = 1) -> list[tuple]:
    """Rows of ``zip(*columns)`` sorted by the token counts of the first ``key_columns`` columns,
    then by the remaining values, as SentEval does so that batches hold sentences of similar length."""
    rows = list(zip(*columns))
    rows.sort(key=lambda r: tuple(len(r[i]) for i in range(key_columns)) + tuple(r[key_columns:]))
    return rows


def encode_in_batches(params: Params, batcher, sentences: list[list[str]]) -> np.ndarray:
    """Call the user's batcher on consecutive slices of ``params.batch_size`` sentences and stack."""
    chunks = []
    for start in range(0, len(sentences), params.batch_size):
        emb = batcher(params, sentences[start : start + params.batch_size])
        chunks.append(_to_numpy(emb))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    embeddings = np.concatenate(chunks, axis=0)
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        # The original zeroed NaN (np.nan_to_num) and reported a number computed on zero vectors; we
        # refuse instead, so that no table silently holds a score of partly meaningless embeddings.
        task = params.get("current_task", "this task")
        raise SentEvalError(
            f"the batcher returned {int(bad.sum())} embedding row(s) with NaN or inf out of {len(embeddings)} "
            f"in {task}; check the model (e.g. fp16 overflow, empty inputs) before scoring"
        )
    return embeddings


def _to_numpy(emb) -> np.ndarray:
    if hasattr(emb, "detach"):
        emb = emb.detach().float().cpu().numpy()
    emb = np.asarray(emb)
    if emb.ndim != 2:
        raise SentEvalError(f"the batcher must return a 2-D array (n_sentences, dim), got shape {emb.shape}")
    return emb
