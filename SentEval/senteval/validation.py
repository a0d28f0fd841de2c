"""Model selection for the transfer tasks: how the L2 penalty is chosen and how accuracy is reported.

Three schemes, as in SentEval (Conneau & Kiela 2018, arXiv:1803.05449). Accuracies are reported ×100
and rounded to 2 decimals; each grid point is scored by its mean accuracy, rounded the same way, and
the first best point wins ties.

* :class:`InnerKFoldClassifier` (MR, CR, SUBJ, MPQA: one labelled set). Outer
  ``StratifiedKFold(k, shuffle=True)``; inside each outer training fold an inner
  ``StratifiedKFold(k, shuffle=True)`` scores every penalty (each inner fit early-stops on its inner
  test fold and is scored on it); the best penalty is refitted on the whole outer training fold (5%
  held out for early stopping) and scored on the outer test fold.
  ``devacc`` = mean over outer folds of the best inner score, ``acc`` = mean of the outer test scores
  (each rounded before averaging).
* :class:`KFoldClassifier` (TREC, MRPC: train and test splits). ``StratifiedKFold(k, shuffle=True)`` on
  the train split scores every penalty; the best is refitted on all of train (5% held out) and scored
  on test. ``devacc`` = the best cross-validation score; the test predictions are returned too (F1).
* :class:`SplitClassifier` (SST2: train, dev and test splits). Each penalty is fitted on train,
  early-stopping on dev, and scored on dev; the best one is scored on test.

Penalty grids: PyTorch weight decay ``{1e-5, 1e-4, 1e-3, 1e-2}``; scikit-learn's inverse penalty ``C``
in ``{2^-2 .. 2^3}`` (nested and split schemes) or ``{2^-1 .. 2^5}`` (k-fold on train).

Decisions beyond the original code: every fold split uses ``seed`` (SentEval hard-coded 1111 for the
nested scheme; identical at the default seed); the PyTorch grid is trained in lock-step by
:class:`~senteval.classifier.ProbeBank` (same probes, one loop); the split scheme scores on test the very
probe that won on dev, where SentEval refitted it with the same seed and data (the same model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from senteval.classifier import ProbeBank, ProbeClassifier, sklearn_probe
from senteval.errors import SentEvalError
from senteval.utils import FAST_CLASSIFIER, Params

PYTORCH_PENALTIES: tuple[float, ...] = tuple(10.0**t for t in range(-5, -1))  # weight decay
SKLEARN_C_NESTED: tuple[float, ...] = tuple(2.0**t for t in range(-2, 4))  # nested and split schemes
SKLEARN_C_KFOLD: tuple[float, ...] = tuple(2.0**t for t in range(-1, 6))  # k-fold on the train split
REFIT_VALIDATION_SPLIT = 0.05  # held out for early stopping when refitting on a whole training set


@dataclass(frozen=True)
class ProbeSettings:
    """What a validation scheme needs to know about the probe (SentEval's ``config`` dict)."""

    nclasses: int
    seed: int = 1111
    usepytorch: bool = True
    kfold: int = 5
    classifier: Mapping[str, Any] = field(default_factory=lambda: dict(FAST_CLASSIFIER))
    device: str | None = None

    @classmethod
    def from_params(cls, params: Params, nclasses: int) -> ProbeSettings:
        return cls(
            nclasses=nclasses,
            seed=params.seed,
            usepytorch=bool(params.usepytorch),
            kfold=params.kfold,
            classifier=dict(params.classifier),
            device=params.get("device"),
        )


@dataclass
class ProbeResult:
    """Outcome of a validation scheme: accuracies ×100 (2 decimals) and what was chosen."""

    devacc: float
    acc: float
    penalties: list[float]  # the chosen L2 penalty (PyTorch) or C (scikit-learn), per outer fold
    predictions: np.ndarray | None = None  # test predictions (k-fold and split schemes)


def _percent(fraction: float) -> float:
    return float(round(100 * fraction, 2))


def _check_features(X: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise SentEvalError(f"{what}: features must be (n, dim) and labels (n,), got {X.shape} and {y.shape}")
    return X, y


class _Scheme:
    """Shared machinery: the penalty grid, grid scoring on a held-out set, and single refits."""

    sklearn_grid: tuple[float, ...] = SKLEARN_C_NESTED

    def __init__(self, settings: ProbeSettings):
        if not isinstance(settings.kfold, int) or settings.kfold < 2:
            raise SentEvalError(f"params['kfold'] must be an integer >= 2, got {settings.kfold!r}")
        self.settings = settings
        self.grid = PYTORCH_PENALTIES if settings.usepytorch else self.sklearn_grid

    def _fit_grid(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray
    ) -> tuple[np.ndarray, Callable[[int], Any]]:
        """Fit one probe per grid point, early-stopping on (and scored on) the held-out set.

        Returns (accuracy per grid point in [0, 1], the fitted grid as a predictor factory).
        """
        s = self.settings
        if s.usepytorch:
            bank = ProbeBank.from_config(
                s.classifier, X.shape[1], s.nclasses, self.grid, seed=s.seed, device=s.device
            )
            bank.fit(X, y, validation_data=(X_val, y_val))
            return bank.score(X_val, y_val), bank.probe
        models = [sklearn_probe(C, seed=s.seed).fit(X, y) for C in self.grid]
        return np.array([m.score(X_val, y_val) for m in models]), models.__getitem__

    def _refit(self, X: np.ndarray, y: np.ndarray, penalty: float):
        """Fit the chosen penalty on a whole training set (5% held out for early stopping)."""
        s = self.settings
        if s.usepytorch:
            probe = ProbeClassifier.from_config(
                s.classifier, X.shape[1], s.nclasses, penalty, seed=s.seed, device=s.device
            )
            probe.fit(X, y, validation_split=REFIT_VALIDATION_SPLIT)
            return probe
        return sklearn_probe(penalty, seed=self.settings.seed).fit(X, y)

    def _folds(self) -> StratifiedKFold:
        return StratifiedKFold(n_splits=self.settings.kfold, shuffle=True, random_state=self.settings.seed)


class InnerKFoldClassifier(_Scheme):
    """Nested cross-validation on one labelled set (MR, CR, SUBJ, MPQA)."""

    sklearn_grid = SKLEARN_C_NESTED

    def __init__(self, X: np.ndarray, y: np.ndarray, settings: ProbeSettings):
        super().__init__(settings)
        self.X, self.y = _check_features(X, y, "InnerKFoldClassifier")

    def run(self) -> ProbeResult:
        dev_scores, test_scores, chosen = [], [], []
        for train_idx, test_idx in self._folds().split(self.X, self.y):
            X_train, y_train = self.X[train_idx], self.y[train_idx]
            inner = []  # (k, grid) accuracies in [0, 1]
            for in_train, in_test in self._folds().split(X_train, y_train):
                acc, _ = self._fit_grid(
                    X_train[in_train], y_train[in_train], X_train[in_test], y_train[in_test]
                )
                inner.append(acc)
            grid_scores = [_percent(m) for m in np.mean(inner, axis=0)]
            best = int(np.argmax(grid_scores))
            dev_scores.append(grid_scores[best])
            chosen.append(self.grid[best])
            model = self._refit(X_train, y_train, self.grid[best])
            test_scores.append(_percent(model.score(self.X[test_idx], self.y[test_idx])))
        return ProbeResult(
            devacc=float(round(np.mean(dev_scores), 2)),
            acc=float(round(np.mean(test_scores), 2)),
            penalties=chosen,
        )


class KFoldClassifier(_Scheme):
    """k-fold cross-validation on the train split picks the penalty; scored on the test split (TREC, MRPC)."""

    sklearn_grid = SKLEARN_C_KFOLD

    def __init__(
        self,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        settings: ProbeSettings,
    ):
        super().__init__(settings)
        self.X, self.y = _check_features(*train, "KFoldClassifier train split")
        self.X_test, self.y_test = _check_features(*test, "KFoldClassifier test split")

    def run(self) -> ProbeResult:
        per_fold = []  # (k, grid) accuracies in [0, 1]
        for train_idx, test_idx in self._folds().split(self.X, self.y):
            acc, _ = self._fit_grid(self.X[train_idx], self.y[train_idx], self.X[test_idx], self.y[test_idx])
            per_fold.append(acc)
        grid_scores = [_percent(m) for m in np.mean(per_fold, axis=0)]
        best = int(np.argmax(grid_scores))
        model = self._refit(self.X, self.y, self.grid[best])
        return ProbeResult(
            devacc=grid_scores[best],
            acc=_percent(model.score(self.X_test, self.y_test)),
            penalties=[self.grid[best]],
            predictions=np.asarray(model.predict(self.X_test)),
        )


class SplitClassifier(_Scheme):
    """Train / dev / test splits: the penalty is chosen on dev and the winner scored on test (SST2)."""

    sklearn_grid = SKLEARN_C_NESTED

    def __init__(self, X: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], settings: ProbeSettings):
        super().__init__(settings)
        missing = [k for k in ("train", "valid", "test") if k not in X or k not in y]
        if missing:
            raise SentEvalError(
                f"SplitClassifier needs 'train', 'valid' and 'test' splits; missing {missing}"
            )
        self.X, self.y = {}, {}
        for split in ("train", "valid", "test"):
            self.X[split], self.y[split] = _check_features(
                X[split], y[split], f"SplitClassifier {split} split"
            )

    def run(self) -> ProbeResult:
        acc, fitted = self._fit_grid(self.X["train"], self.y["train"], self.X["valid"], self.y["valid"])
        grid_scores = [_percent(a) for a in acc]
        best = int(np.argmax(grid_scores))
        model = fitted(best)
        return ProbeResult(
            devacc=grid_scores[best],
            acc=_percent(model.score(self.X["test"], self.y["test"])),
            penalties=[self.grid[best]],
            predictions=np.asarray(model.predict(self.X["test"])),
        )
