"""Unsupervised semantic textual similarity: cosine of the two embeddings against the gold score.

Tasks STS12-STS16 (test subsets only) and STSBenchmark / SICKRelatedness (train, dev and test splits,
as in the SimCSE fork). Scores are Pearson and Spearman correlations between the cosine similarities
and the gold scores, per subset, plus three aggregations over the subsets (facebookresearch/SentEval ``senteval/sts.py``
reports ``mean`` and ``wmean``; the SimCSE fork, princeton-nlp/SimCSE ``SentEval/senteval/sts.py``, adds ``all``):

* ``all``: one correlation over the concatenation of every subset (the SimCSE paper's setting);
* ``mean``: the plain mean of the per-subset correlations;
* ``wmean``: the per-subset correlations weighted by the number of scored pairs.

Each distinct sentence of a task is encoded once, in batches of similar length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from senteval.errors import SentEvalError
from senteval.utils import Params, encode_in_batches, read_lines

AGGREGATIONS = ("all", "mean", "wmean")
Pair = tuple[list[list[str]], list[list[str]], np.ndarray]  # sentences A, sentences B, gold scores


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def word_count(sentence: tuple[str, ...] | list[str]) -> int:
    """Whitespace-separated words in a sentence given as tokens: the length the tasks sort by.

    For the built-in tasks' whitespace-split tokens this is ``len(sentence)``; for a raw string passed
    as one token (:mod:`senteval.custom`) it is the number of words of that string, so both kinds of
    task hand the same sentences to the batcher in the same order.
    """
    return sum(len(token.split()) for token in sentence)


class Correlation(float):
    """A correlation coefficient that is a float (``json.dumps`` writes it as a plain number) and also
    answers the access patterns of scipy's result objects that the original SentEval returned:
    ``r[0]``, ``r.correlation``, ``r.statistic`` (the coefficient), ``r[1]`` and ``r.pvalue``."""

    pvalue: float

    def __new__(cls, statistic: float, pvalue: float = float("nan")) -> Correlation:
        obj = super().__new__(cls, statistic)
        obj.pvalue = float(pvalue)
        return obj

    @property
    def statistic(self) -> float:
        return float(self)

    correlation = statistic

    def __getitem__(self, index: int) -> float:
        return (float(self), self.pvalue)[index]

    def __reduce__(self):  # pickle / deepcopy keep the p-value
        return (Correlation, (float(self), self.pvalue))


def correlations(sys_scores: np.ndarray, gold: np.ndarray) -> tuple[Correlation, Correlation]:
    """(Pearson, Spearman), each a :class:`Correlation` carrying its p-value."""
    pearson, spearman = pearsonr(sys_scores, gold), spearmanr(sys_scores, gold)
    return Correlation(pearson[0], pearson[1]), Correlation(spearman[0], spearman[1])


def aggregate(per_subset: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    """The ``all`` / ``mean`` / ``wmean`` aggregations of Pearson and Spearman over subsets.

    per_subset maps a subset name to (system scores, gold scores) of equal length.
    """
    names = list(per_subset)
    sizes = np.array([len(per_subset[n][1]) for n in names], dtype=np.float64)
    pear, spear = zip(*((float(p), float(s)) for p, s in (correlations(*per_subset[n]) for n in names)))
    all_sys = np.concatenate([per_subset[n][0] for n in names])
    all_gold = np.concatenate([per_subset[n][1] for n in names])
    all_p, all_s = (float(c) for c in correlations(all_sys, all_gold))
    weights = sizes / sizes.sum()
    return {
        "pearson": {"all": all_p, "mean": float(np.mean(pear)), "wmean": float(np.dot(weights, pear))},
        "spearman": {"all": all_s, "mean": float(np.mean(spear)), "wmean": float(np.dot(weights, spear))},
    }


class STSEval:
    """Base class: subclasses fill ``self.data`` = {subset: (sentences A, sentences B, gold)}."""

    name = "STS"

    def __init__(self, downstream: Path, seed: int = 1111):
        self.seed = seed
        self.data: dict[str, Pair] = {}
        self.load(downstream)
        self.samples = [s for a, b, _ in self.data.values() for s in a + b]

    def load(self, downstream: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def subsets(self, params: Params) -> list[str]:
        return list(self.data)

    def keep_only(self, subsets: list[str]) -> None:
        """Drop every other subset's data, e.g. keep STS-B's dev split for the evaluations during training."""
        unknown = [s for s in subsets if s not in self.data]
        if unknown:
            raise SentEvalError(f"{self.name} has no subset(s) {unknown}; it has {list(self.data)}")
        self.data = {name: self.data[name] for name in subsets}
        self.samples = [s for a, b, _ in self.data.values() for s in a + b]

    def do_prepare(self, params: Params, prepare) -> object:
        return prepare(params, self.samples)

    def run(self, params: Params, batcher) -> dict:
        subsets = self.subsets(params)
        # Encode each distinct sentence of the evaluated subsets once, shortest first.
        unique: dict[tuple[str, ...], int] = {}
        for name in subsets:
            a, b, _ = self.data[name]
            for sent in a + b:
                unique.setdefault(tuple(sent), len(unique))
        order = sorted(unique, key=word_count)
        embeddings = encode_in_batches(params, batcher, [list(s) for s in order])
        row_of = {sent: i for i, sent in enumerate(order)}

        results: dict = {}
        per_subset = {}
        for name in subsets:
            a, b, gold = self.data[name]
            ea = embeddings[[row_of[tuple(s)] for s in a]]
            eb = embeddings[[row_of[tuple(s)] for s in b]]
            sys_scores = cosine_rows(ea, eb)
            pearson, spearman = correlations(sys_scores, gold)
            results[name] = {"pearson": pearson, "spearman": spearman, "nsamples": len(gold)}
            per_subset[name] = (sys_scores, gold)
        results["all"] = aggregate(per_subset)
        return results


def _parse_gold(line: str, path: Path, lineno: int) -> float:
    try:
        return float(line)
    except ValueError:
        raise SentEvalError(f"{path}:{lineno}: gold score {line!r} is not a number") from None


class _STSYearEval(STSEval):
    """STS12-STS16: ``STS.input.<subset>.txt`` (tab-separated pairs) + ``STS.gs.<subset>.txt``."""

    folder = ""
    subset_names: tuple[str, ...] = ()

    def load(self, downstream: Path) -> None:
        root = downstream / "STS" / self.folder
        for subset in self.subset_names:
            inputs = read_lines(root / f"STS.input.{subset}.txt", encoding="utf-8")
            golds = read_lines(root / f"STS.gs.{subset}.txt", encoding="utf-8")
            if len(inputs) != len(golds):
                raise SentEvalError(
                    f"{root}/STS.input.{subset}.txt has {len(inputs)} lines but the gold file has {len(golds)}"
                )
            sent_a, sent_b, gold = [], [], []
            for lineno, (pair, score) in enumerate(zip(inputs, golds), start=1):
                if not score.strip():  # unscored pair: dropped, as in SentEval
                    continue
                cols = pair.split("\t")
                sent_a.append(cols[0].split())
                sent_b.append(cols[1].split())
                gold.append(_parse_gold(score.strip(), root / f"STS.gs.{subset}.txt", lineno))
            self.data[subset] = (sent_a, sent_b, np.asarray(gold, dtype=np.float64))


class STS12Eval(_STSYearEval):
    name, folder = "STS12", "STS12-en-test"
    subset_names = ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews")


class STS13Eval(_STSYearEval):
    name, folder = "STS13", "STS13-en-test"
    subset_names = ("FNWN", "headlines", "OnWN")  # the SMT subset has no public input


class STS14Eval(_STSYearEval):
    name, folder = "STS14", "STS14-en-test"
    subset_names = ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news")


class STS15Eval(_STSYearEval):
    name, folder = "STS15", "STS15-en-test"
    subset_names = ("answers-forums", "answers-students", "belief", "headlines", "images")


class STS16Eval(_STSYearEval):
    name, folder = "STS16", "STS16-en-test"
    subset_names = ("answer-answer", "headlines", "plagiarism", "postediting", "question-question")


class _SplitSTSEval(STSEval):
    """Tasks with train/dev/test splits; ``params.sts_splits`` restricts the splits scored."""

    splits = ("train", "dev", "test")

    def subsets(self, params: Params) -> list[str]:
        wanted = params.get("sts_splits") or self.splits
        unknown = [s for s in wanted if s not in self.splits]
        if unknown:
            raise SentEvalError(f"params['sts_splits'] has unknown split(s) {unknown}; choose from {self.splits}")
        chosen = [s for s in self.splits if s in wanted]
        dropped = [s for s in chosen if s not in self.data]
        if dropped:
            raise SentEvalError(f"{self.name}: split(s) {dropped} were dropped (keep_only); build the task again")
        return chosen


class STSBenchmarkEval(_SplitSTSEval):
    """STS-B: ``sts-{train,dev,test}.csv``, tab-separated, score in column 4, sentences in 5 and 6."""

    name = "STSBenchmark"

    def load(self, downstream: Path) -> None:
        for split in self.splits:
            path = downstream / "STS" / "STSBenchmark" / f"sts-{split}.csv"
            sent_a, sent_b, gold = [], [], []
            for lineno, line in enumerate(read_lines(path, encoding="utf-8"), start=1):
                if not line.strip():
                    continue
                cols = line.split("\t")
                if len(cols) < 7:
                    raise SentEvalError(f"{path}:{lineno}: expected at least 7 tab-separated columns, got {len(cols)}")
                sent_a.append(cols[5].split())
                sent_b.append(cols[6].split())
                gold.append(_parse_gold(cols[4], path, lineno))
            self.data[split] = (sent_a, sent_b, np.asarray(gold, dtype=np.float64))


class SICKRelatednessEval(_SplitSTSEval):
    """SICK-R: header line, then sentence A, sentence B and relatedness in columns 1, 2, 3.

    The trial file is the dev split; the test file has CRLF line ends.
    """

    name = "SICKRelatedness"
    files = {"train": "SICK_train.txt", "dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}

    def load(self, downstream: Path) -> None:
        for split in self.splits:
            path = downstream / "SICK" / self.files[split]
            sent_a, sent_b, gold = [], [], []
            for lineno, line in enumerate(read_lines(path, encoding="utf-8")[1:], start=2):
                if not line.strip():
                    continue
                cols = line.split("\t")
                sent_a.append(cols[1].split())
                sent_b.append(cols[2].split())
                gold.append(_parse_gold(cols[3], path, lineno))
            self.data[split] = (sent_a, sent_b, np.asarray(gold, dtype=np.float64))
