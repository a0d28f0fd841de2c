"""MRPC: Microsoft Research paraphrase corpus (Dolan & Brockett 2005), train 4076 / test 1725 pairs.

Files ``MRPC/msr_paraphrase_{train,test}.txt``: UTF-8 with a byte-order mark (read as ``utf-8-sig`` so
the BOM never reaches the data), a header line ``Quality  #1 ID  #2 ID  #1 String  #2 String``, then
tab-separated rows; label = Quality (1 = paraphrase).

Features of a pair with embeddings u, v (SentEval's choice): ``[|u - v|, u * v]`` (n, 2·dim). Pairs are
sorted by (len A, len B, label) before encoding, each side encoded in batches. Model selection by
:class:`~senteval.validation.KFoldClassifier`; the result adds ``f1`` = F1 of the paraphrase class
on test (×100).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from senteval.errors import SentEvalError
from senteval.utils import Params, encode_in_batches, read_lines, sort_by_length
from senteval.validation import KFoldClassifier, ProbeSettings

Pairs = tuple[list[list[str]], list[list[str]], list[int]]  # sentences A, sentences B, labels


def read_mrpc(path: Path) -> Pairs:
    """Pairs and labels of one MRPC file; the header line is dropped and blank lines skipped."""
    lines = read_lines(path, encoding="utf-8-sig")
    if lines and not lines[0].split("\t")[0].strip().isdigit():  # the "Quality\t#1 ID\t..." header
        lines, first = lines[1:], 2
    else:
        first = 1
    sent_a, sent_b, labels = [], [], []
    for lineno, line in enumerate(lines, start=first):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 5 or cols[0].strip() not in ("0", "1"):
            raise SentEvalError(
                f"{path}:{lineno}: expected 5 tab-separated columns 'Quality, #1 ID, #2 ID, #1 String, "
                f"#2 String' with Quality 0 or 1, got {line!r}"
            )
        labels.append(int(cols[0]))
        sent_a.append(cols[3].split())
        sent_b.append(cols[4].split())
    return sent_a, sent_b, labels


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``[|u - v|, u * v]``: (n, d), (n, d) -> (n, 2d)."""
    return np.c_[np.abs(u - v), u * v]


class MRPCEval:
    name = "MRPC"

    def __init__(self, downstream: Path, seed: int = 1111):
        self.seed = seed
        root = Path(downstream) / "MRPC"
        self.data = {
            "train": read_mrpc(root / "msr_paraphrase_train.txt"),
            "test": read_mrpc(root / "msr_paraphrase_test.txt"),
        }
        self.samples: list[list[str]] = [
            s for split in ("train", "test") for s in self.data[split][0] + self.data[split][1]
        ]

    def do_prepare(self, params: Params, prepare) -> object:
        return prepare(params, self.samples)

    def _encode(self, params: Params, batcher, split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = sort_by_length(*self.data[split], key_columns=2)
        u = encode_in_batches(params, batcher, [a for a, _, _ in rows])  # (n, dim)
        v = encode_in_batches(params, batcher, [b for _, b, _ in rows])  # (n, dim)
        return pair_features(u, v), np.array([label for _, _, label in rows], dtype=np.int64)

    def run(self, params: Params, batcher) -> dict:
        train = self._encode(params, batcher, "train")
        test = self._encode(params, batcher, "test")
        result = KFoldClassifier(train, test, ProbeSettings.from_params(params, nclasses=2)).run()
        f1 = float(round(100 * f1_score(test[1], result.predictions), 2))
        return {
            "devacc": result.devacc,
            "acc": result.acc,
            "f1": f1,
            "ndev": len(train[1]),
            "ntest": len(test[1]),
        }
