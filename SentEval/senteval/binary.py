"""Binary sentence classification with nested cross-validation: MR, CR, SUBJ and MPQA.

Each task is two files of one sentence per line, one file per class (label 1 for the first, 0 for
the second, as in SentEval):

=====  ==============================  ==============================
task   label 1                         label 0
=====  ==============================  ==============================
MR     ``MR/rt-polarity.pos``          ``MR/rt-polarity.neg``
CR     ``CR/custrev.pos``              ``CR/custrev.neg``
SUBJ   ``SUBJ/subj.objective``         ``SUBJ/subj.subjective``
MPQA   ``MPQA/mpqa.pos``               ``MPQA/mpqa.neg``
=====  ==============================  ==============================

Files are read as latin-1 (SentEval's choice; every byte decodes) and each line is split on
whitespace. Empty lines are kept as empty sentences, as SentEval does: CR has 4 and MPQA 3, and the
published sample counts (CR 3775, MPQA 10606) include them; the batcher receives them as ``[]``.

The probe is scored by :class:`~senteval.validation.InnerKFoldClassifier` on the embeddings of every
sentence; ``devacc`` is the mean best inner-CV accuracy, ``acc`` the mean outer test-fold accuracy
(both ×100), and ``ndev`` = ``ntest`` = the number of sentences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from senteval.utils import Params, encode_in_batches, read_lines, sort_by_length
from senteval.validation import InnerKFoldClassifier, ProbeSettings


def read_sentences(path: Path) -> list[list[str]]:
    """One whitespace-tokenised sentence per line of a latin-1 file (empty lines give ``[]``)."""
    return [line.split() for line in read_lines(path, encoding="latin-1")]


def encode_labelled(
    params: Params, batcher, samples: list[list[str]], labels: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Embed sentences sorted by (length, label) as SentEval does; return (embeddings, labels) in that order."""
    rows = sort_by_length(samples, labels)
    sentences = [sentence for sentence, _ in rows]
    embeddings = encode_in_batches(params, batcher, sentences)  # (n, dim)
    return embeddings, np.array([label for _, label in rows], dtype=np.int64)


class BinaryClassifierEval:
    """Base class: subclasses name the folder and the label-1 / label-0 files."""

    name = "binary"
    folder = ""
    files: tuple[str, str] = ("", "")  # (label 1, label 0)

    def __init__(self, downstream: Path, seed: int = 1111):
        self.seed = seed
        root = Path(downstream) / self.folder
        positive = read_sentences(root / self.files[0])
        negative = read_sentences(root / self.files[1])
        self.samples: list[list[str]] = positive + negative
        self.labels: list[int] = [1] * len(positive) + [0] * len(negative)

    def do_prepare(self, params: Params, prepare) -> object:
        return prepare(params, self.samples)

    def run(self, params: Params, batcher) -> dict:
        X, y = encode_labelled(params, batcher, self.samples, self.labels)
        result = InnerKFoldClassifier(X, y, ProbeSettings.from_params(params, nclasses=2)).run()
        n = len(self.samples)
        return {"devacc": result.devacc, "acc": result.acc, "ndev": n, "ntest": n}


class MREval(BinaryClassifierEval):
    name, folder, files = "MR", "MR", ("rt-polarity.pos", "rt-polarity.neg")


class CREval(BinaryClassifierEval):
    name, folder, files = "CR", "CR", ("custrev.pos", "custrev.neg")


class SUBJEval(BinaryClassifierEval):
    name, folder, files = "SUBJ", "SUBJ", ("subj.objective", "subj.subjective")


class MPQAEval(BinaryClassifierEval):
    name, folder, files = "MPQA", "MPQA", ("mpqa.pos", "mpqa.neg")
