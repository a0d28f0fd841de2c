"""SST2: binary sentiment of Stanford Sentiment Treebank sentences, with train / dev / test splits.

Files ``SST/binary/sentiment-{train,dev,test}`` (UTF-8), one ``sentence<TAB>label`` line each, label 0
(negative) or 1 (positive); 67349 / 872 / 1821 lines. The train split holds phrases as well as
sentences, as in SentEval. Blank lines, if any, are skipped (they carry no label).

Model selection by :class:`~senteval.validation.SplitClassifier`: the L2 penalty is chosen by dev
accuracy (``devacc``) and the winning probe scored on test (``acc``), both ×100.
"""

from __future__ import annotations

from pathlib import Path

from senteval.binary import encode_labelled
from senteval.errors import SentEvalError
from senteval.utils import Params, read_lines
from senteval.validation import ProbeSettings, SplitClassifier

SPLITS = ("train", "dev", "test")


def read_sst(path: Path, nclasses: int = 2) -> tuple[list[list[str]], list[int]]:
    """(sentences, labels) of one ``sentence<TAB>label`` file."""
    samples, labels = [], []
    for lineno, line in enumerate(read_lines(path, encoding="utf-8"), start=1):
        if not line.strip():
            continue
        text, sep, raw_label = line.strip().rpartition("\t")
        try:
            label = int(raw_label)
        except ValueError:
            label = -1
        if not sep or not 0 <= label < nclasses:
            raise SentEvalError(
                f"{path}:{lineno}: expected 'sentence<TAB>label' with a label in 0..{nclasses - 1}, got {line!r}"
            )
        samples.append(text.split())
        labels.append(label)
    return samples, labels


class SSTEval:
    """SST2 (``nclasses = 2``, ``SST/binary``)."""

    name = "SST2"
    nclasses = 2
    folder = "binary"

    def __init__(self, downstream: Path, seed: int = 1111):
        self.seed = seed
        root = Path(downstream) / "SST" / self.folder
        self.data = {split: read_sst(root / f"sentiment-{split}", self.nclasses) for split in SPLITS}
        self.samples: list[list[str]] = [s for split in SPLITS for s in self.data[split][0]]

    def do_prepare(self, params: Params, prepare) -> object:
        return prepare(params, self.samples)

    def run(self, params: Params, batcher) -> dict:
        X, y = {}, {}
        for split, key in zip(SPLITS, ("train", "valid", "test")):
            X[key], y[key] = encode_labelled(params, batcher, *self.data[split])
        result = SplitClassifier(X, y, ProbeSettings.from_params(params, nclasses=self.nclasses)).run()
        return {"devacc": result.devacc, "acc": result.acc, "ndev": len(y["valid"]), "ntest": len(y["test"])}
