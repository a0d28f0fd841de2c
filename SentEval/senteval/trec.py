"""TREC question classification: 6 coarse classes (Li & Roth 2002), train 5452 / test 500 questions.

Files ``TREC/train_5500.label`` and ``TREC/TREC_10.label``, read as latin-1 (the train file holds a
byte that is not UTF-8). Each line is ``COARSE:fine question words``; the label is the coarse class,
``ABBR DESC ENTY HUM LOC NUM`` -> 0..5, and the sentence is the line without its first token.

Model selection by :class:`~senteval.validation.KFoldClassifier`: k-fold cross-validation on train
picks the penalty (``devacc``), then the probe refitted on all of train is scored on test (``acc``).
"""

from __future__ import annotations

from pathlib import Path

from senteval.binary import encode_labelled
from senteval.errors import SentEvalError
from senteval.utils import Params, read_lines
from senteval.validation import KFoldClassifier, ProbeSettings

COARSE_CLASSES = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
CLASS_INDEX = {name: i for i, name in enumerate(COARSE_CLASSES)}


def read_trec(path: Path) -> tuple[list[list[str]], list[int]]:
    """(questions, coarse labels) of one TREC ``.label`` file; blank lines are skipped."""
    samples, labels = [], []
    for lineno, line in enumerate(read_lines(path, encoding="latin-1"), start=1):
        if not line.strip():
            continue
        tag, _, question = line.strip().partition(" ")
        coarse = tag.partition(":")[0]
        if coarse not in CLASS_INDEX or ":" not in tag:
            raise SentEvalError(
                f"{path}:{lineno}: expected 'COARSE:fine question' with COARSE in {COARSE_CLASSES}, got {line!r}"
            )
        samples.append(question.split())
        labels.append(CLASS_INDEX[coarse])
    return samples, labels


class TRECEval:
    name = "TREC"

    def __init__(self, downstream: Path, seed: int = 1111):
        self.seed = seed
        root = Path(downstream) / "TREC"
        self.train = read_trec(root / "train_5500.label")
        self.test = read_trec(root / "TREC_10.label")
        self.samples: list[list[str]] = self.train[0] + self.test[0]

    def do_prepare(self, params: Params, prepare) -> object:
        return prepare(params, self.samples)

    def run(self, params: Params, batcher) -> dict:
        train = encode_labelled(params, batcher, *self.train)
        test = encode_labelled(params, batcher, *self.test)
        settings = ProbeSettings.from_params(params, nclasses=len(COARSE_CLASSES))
        result = KFoldClassifier(train, test, settings).run()
        return {
            "devacc": result.devacc,
            "acc": result.acc,
            "ndev": len(self.train[0]),
            "ntest": len(self.test[0]),
        }
