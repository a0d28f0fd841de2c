"""The probes of the SentEval transfer protocol: PyTorch logistic regression (or a one-hidden-layer MLP)
with early stopping on held-out accuracy, and scikit-learn logistic regression as the alternative.

PyTorch probe (SentEval's ``PyTorchClassifier`` / ``MLP``, Conneau & Kiela 2018, arXiv:1803.05449):

* model: ``nhid == 0``: one linear layer ``logits = x W^T + b``; ``nhid > 0``:
  Linear(d, nhid) -> Dropout(dropout) -> Sigmoid -> Linear(nhid, C);
* loss: cross-entropy **averaged** over the minibatch. SentEval's classifier assigns
  ``loss_fn.size_average = False``, but since PyTorch 0.4.1 that attribute is no longer read, so the
  original (as SimCSE ran it on torch 1.7.1, and today) trains on the mean loss; we follow what it
  computes, not what the dead line says;
* the L2 penalty λ is the optimizer's ``weight_decay``: the gradient of every parameter, biases
  included, becomes ``g + λ θ`` before the optimizer's update (torch's coupled weight decay).
  ``rprop`` is the exception: SentEval writes ``weight_decay`` into the param group after building
  the optimizer and torch's Rprop never reads it, so its probes train without the penalty, here too;
* training: ``while not stopped and nepoch <= max_epoch``: ``epoch_size`` passes over the training set
  (each pass a fresh random permutation, minibatches of ``batch_size``), then the accuracy on the
  held-out set. A better accuracy keeps a copy of the weights; otherwise, with early stopping, training
  stops if ``tenacity`` non-improving evaluations happened before this one (the count is never reset,
  exactly as in SentEval). The best weights are restored and the best held-out accuracy returned;
* the held-out set is ``validation_data`` or, when absent, a random ``validation_split`` fraction of
  the training data (``int(fraction * n)`` samples, at least one);
* seeding: weights are drawn like ``torch.manual_seed(seed); nn.Linear(...)`` and permutations like
  ``np.random.seed(seed); np.random.permutation(n)``, but from private generators, so the numbers are
  SentEval's while the global random state is left alone.

Speed (same protocol, same numbers): the penalties of a grid search are trained in lock-step as one
:class:`ProbeBank`. Every probe of the grid starts from the same seeded weights and sees the same
minibatches (SentEval re-seeds before each fit), so R penalties cost one loop instead of R. For
``nhid == 0`` the gradient of the mean cross-entropy is computed in closed form,
``dL/dW = (softmax(W x) - onehot(y)) x^T / b``, with the bias folded into ``W`` through a constant input
column; Adam and RMSprop updates are applied as the same tensor operations torch uses (a parity test
pins them to ``torch.optim``); any other optimizer runs through ``torch.optim`` itself.

Example::

    probe = ProbeClassifier(inputdim=384, nclasses=2, l2reg=1e-4, optim="rmsprop", batch_size=128)
    held_out_acc = probe.fit(X_train, y_train, validation_split=0.05)
    test_acc = probe.score(X_test, y_test)
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from senteval.errors import SentEvalError

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "adamax": torch.optim.Adamax,
    "asgd": torch.optim.ASGD,
    "rprop": torch.optim.Rprop,
}

# Optimizers that ignore the L2 penalty in the original (their torch class reads no weight_decay).
NO_WEIGHT_DECAY = frozenset(name for name, cls in OPTIMIZERS.items()
                            if "weight_decay" not in inspect.signature(cls.__init__).parameters)

# Keys of params["classifier"] and their defaults (those of SentEval's MLP class).
CLASSIFIER_DEFAULTS: dict[str, Any] = {
    "nhid": 0,
    "optim": "adam",
    "batch_size": 64,
    "tenacity": 5,
    "epoch_size": 4,
    "max_epoch": 200,
    "dropout": 0.0,
}

# Optimizer arguments that are not hyperparameters (or that the protocol sets itself).
_NOT_OPTIONS = (
    "self",
    "params",
    "weight_decay",
    "foreach",
    "fused",
    "capturable",
    "differentiable",
    "maximize",
    "decoupled_weight_decay",
)

SCORE_CHUNK = 16384  # rows per forward pass when scoring or predicting
CPU_TRAIN_THREADS = 1  # intra-op threads while a probe trains on the CPU (see _cpu_threads)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` (or "" / "auto") means CUDA when available, else the CPU; a CUDA device without a visible
    GPU, or a name torch does not know, is an error saying what to pass instead. The one device rule of
    the engine and of :mod:`simcse` (``simcse.modeling.encoder`` re-exports it)."""
    if isinstance(device, torch.device):
        resolved = device
    elif device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError:
            raise SentEvalError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SentEvalError(f"--device {str(device)!r} asks for CUDA but no GPU is visible; use --device cpu")
    return resolved


@contextlib.contextmanager
def _cpu_threads(device: torch.device) -> Iterator[None]:
    """Train with ``CPU_TRAIN_THREADS`` intra-op threads on the CPU, then restore the setting.

    A training step multiplies a (batch, d) block by a (d, R*C) one: far too small to gain from
    threads, while on a busy machine idle-spinning OpenMP workers made the loop 2-8x slower (measured
    on a 2-core box sharing its CPUs). Results do not depend on the thread count.
    """
    previous, nthreads = torch.get_num_threads(), CPU_TRAIN_THREADS
    if device.type != "cpu" or previous <= nthreads:
        yield
        return
    torch.set_num_threads(nthreads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def parse_optimizer(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse SentEval's optimizer string ``"name[,key=value,...]"``.

    ``"adam"`` -> ``("adam", {})``; ``"sgd,lr=0.1"`` -> ``("sgd", {"lr": 0.1})``. Values are numbers
    (``true``/``false`` for flags); SentEval's ``beta1``/``beta2`` become Adam's ``betas``. Unset
    hyperparameters keep torch's defaults for that optimizer. ``weight_decay`` is refused: the protocol
    sets it to the L2 penalty under selection.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SentEvalError(f"classifier optim must be a string like 'adam' or 'sgd,lr=0.1', got {spec!r}")
    name, *pairs = [part.strip() for part in spec.split(",")]
    if name not in OPTIMIZERS:
        raise SentEvalError(f"classifier optim {name!r} (from {spec!r}) is not one of {sorted(OPTIMIZERS)}")
    signature = inspect.signature(OPTIMIZERS[name].__init__).parameters
    kwargs: dict[str, Any] = {}
    betas: dict[str, float] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            raise SentEvalError(f"optimizer option {pair!r} in {spec!r} is not of the form key=value")
        if key == "weight_decay":
            raise SentEvalError(
                f"optimizer option weight_decay in {spec!r} is not allowed: the L2 penalty is chosen by "
                "the protocol's grid search; remove it"
            )
        if key in ("beta1", "beta2") and "betas" in signature:
            betas[key] = _parse_number(raw, key, spec)
            continue
        if key not in signature or key in _NOT_OPTIONS:
            valid = [k for k in signature if k not in _NOT_OPTIONS]
            raise SentEvalError(
                f"optimizer {name!r} has no option {key!r} (in {spec!r}); valid options: {valid}"
            )
        default = signature[key].default
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false"):
                raise SentEvalError(f"optimizer option {key}={raw!r} in {spec!r} must be true or false")
            kwargs[key] = raw.lower() == "true"
        else:
            kwargs[key] = _parse_number(raw, key, spec)
    if betas:
        beta1, beta2 = signature["betas"].default
        kwargs["betas"] = (betas.get("beta1", beta1), betas.get("beta2", beta2))
    return name, kwargs


def _parse_number(raw: str, key: str, spec: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SentEvalError(f"optimizer option {key}={raw!r} in {spec!r} is not a number") from None


class _Updater:
    """Applies one optimizer step to tensors whose gradients (L2 term included) are given.

    Adam and RMSprop with only ``lr``/``betas``/``alpha``/``eps`` set use a direct implementation of
    torch's single-tensor update (same operations, same order); anything else delegates to torch.optim.
    """

    FAST = {"adam": {"lr", "betas", "eps"}, "rmsprop": {"lr", "alpha", "eps"}}

    def __init__(self, spec: str, params: list[torch.Tensor]):
        name, kwargs = parse_optimizer(spec)
        self.params = params
        defaults = {
            k: p.default
            for k, p in inspect.signature(OPTIMIZERS[name].__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        self.hyper = {**defaults, **kwargs}
        self.kind = name if name in self.FAST and set(kwargs) <= self.FAST[name] else "torch"
        self.nstep = 0
        if self.kind == "adam":
            self.exp_avg = [torch.zeros_like(p) for p in params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        elif self.kind == "rmsprop":
            self.square_avg = [torch.zeros_like(p) for p in params]
        else:
            extra = {} if name in NO_WEIGHT_DECAY else {"weight_decay": 0.0}
            self.optimizer = OPTIMIZERS[name](params, **kwargs, **extra)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        self.nstep += 1
        if self.kind == "rmsprop":
            lr, alpha, eps = self.hyper["lr"], self.hyper["alpha"], self.hyper["eps"]
            for p, g, sq in zip(self.params, grads, self.square_avg):
                sq.mul_(alpha).addcmul_(g, g, value=1 - alpha)
                p.addcdiv_(g, sq.sqrt().add_(eps), value=-lr)
        elif self.kind == "adam":
            lr, (beta1, beta2), eps = self.hyper["lr"], self.hyper["betas"], self.hyper["eps"]
            step_size = lr / (1 - beta1**self.nstep)
            bias_correction2_sqrt = math.sqrt(1 - beta2**self.nstep)
            for p, g, m, v in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                p.addcdiv_(m, (v.sqrt() / bias_correction2_sqrt).add_(eps), value=-step_size)
        else:
            for p, g in zip(self.params, grads):
                p.grad = g
            self.optimizer.step()


def _linear_init(out_features: int, in_features: int, generator: torch.Generator) -> torch.Tensor:
    """``nn.Linear(in, out)``'s default initialisation, bias appended as the last column: (out, in+1)."""
    weight = torch.empty(out_features, in_features)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    bias = torch.empty(out_features)
    bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
    torch.nn.init.uniform_(bias, -bound, bound, generator=generator)
    return torch.cat([weight, bias[:, None]], dim=1)


def _with_ones(x: torch.Tensor) -> torch.Tensor:
    """Append the constant input that carries the bias: (n, d) -> (n, d+1)."""
    return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)


class ProbeBank:
    """R probes, one per L2 penalty, trained in lock-step on identical minibatches.

    Each probe is the probe SentEval would train alone with that penalty and the same seed (same
    initial weights, same permutations, its own early stopping; equal up to float rounding, which a
    parity test checks). ``fit`` and ``score`` return one accuracy per penalty; ``probe(r)`` is the
    r-th probe as a :class:`ProbeClassifier`. As in SentEval, the optimizer state persists across
    calls to ``fit`` on the same object.
    """

    def __init__(
        self,
        inputdim: int,
        nclasses: int,
        l2regs: Sequence[float],
        *,
        nhid: int = 0,
        optim: str = "adam",
        batch_size: int = 64,
        tenacity: int = 5,
        epoch_size: int = 4,
        max_epoch: int = 200,
        dropout: float = 0.0,
        seed: int = 1111,
        device: str | torch.device | None = None,
    ):
        if nclasses < 2:
            raise SentEvalError(f"a probe needs at least 2 classes, got nclasses={nclasses}")
        if not l2regs:
            raise SentEvalError("ProbeBank needs at least one L2 penalty")
        if not 0.0 <= dropout < 1.0:
            raise SentEvalError(f"classifier dropout must be in [0, 1), got {dropout!r}")
        for key, value in (("batch_size", batch_size), ("tenacity", tenacity), ("epoch_size", epoch_size)):
            if not isinstance(value, int) or value < 1:
                raise SentEvalError(f"classifier {key} must be a positive integer, got {value!r}")
        if not isinstance(nhid, int) or nhid < 0:
            raise SentEvalError(f"classifier nhid must be a non-negative integer, got {nhid!r}")
        if not isinstance(max_epoch, int) or max_epoch < 0:
            raise SentEvalError(f"classifier max_epoch must be a non-negative integer, got {max_epoch!r}")
        parse_optimizer(optim)  # fail at construction, not after the data is loaded
        self.inputdim, self.nclasses, self.nhid = inputdim, nclasses, nhid
        self.l2regs = [float(r) for r in l2regs]
        self.optim, self.batch_size, self.dropout = optim, batch_size, dropout
        self.tenacity, self.epoch_size, self.max_epoch = tenacity, epoch_size, max_epoch
        self.seed = seed
        self.device = resolve_device(device)
        self.rng = np.random.RandomState(seed)  # SentEval: np.random.seed(seed)
        self.torch_gen = torch.Generator().manual_seed(seed)  # SentEval: torch.manual_seed(seed)
        if dropout > 0:
            self.dropout_gen = torch.Generator(device=self.device).manual_seed(seed)
        nprobes = len(self.l2regs)
        if nhid == 0:
            shapes = [_linear_init(nclasses, inputdim, self.torch_gen)]  # (C, d+1)
        else:
            shapes = [
                _linear_init(nhid, inputdim, self.torch_gen),
                _linear_init(nclasses, nhid, self.torch_gen),
            ]
        # One copy of the seeded initial weights per probe: (R, out, in+1).
        self.weights = [w.unsqueeze(0).repeat(nprobes, 1, 1).to(self.device) for w in shapes]
        # The penalty enters through the gradient; optimizers that never read weight_decay skip it.
        applied = [0.0] * nprobes if parse_optimizer(optim)[0] in NO_WEIGHT_DECAY else self.l2regs
        penalties = torch.tensor(applied, dtype=torch.float32, device=self.device)
        self.penalties = penalties.view(nprobes, 1, 1)  # broadcasts over each probe's weights
        self.nepoch = 0
        self._updater: _Updater | None = None  # created by the first fit, kept afterwards

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        inputdim: int,
        nclasses: int,
        l2regs: Sequence[float],
        seed: int = 1111,
        device: str | torch.device | None = None,
    ) -> ProbeBank:
        """Build from SentEval's ``params["classifier"]`` dict (unknown keys are an error)."""
        unknown = sorted(set(config) - set(CLASSIFIER_DEFAULTS))
        if unknown:
            raise SentEvalError(
                f"params['classifier'] has unknown key(s) {unknown}; valid keys: {sorted(CLASSIFIER_DEFAULTS)}"
            )
        settings = {**CLASSIFIER_DEFAULTS, **config}
        return cls(inputdim, nclasses, l2regs, seed=seed, device=device, **settings)

    @property
    def nprobes(self) -> int:
        return len(self.l2regs)

    # ----------------------------------------------------------------------------------------- data
    def _features(self, X: Any) -> torch.Tensor:
        X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        if X.ndim != 2 or X.shape[1] != self.inputdim:
            raise SentEvalError(f"probe expects features of shape (n, {self.inputdim}), got {tuple(X.shape)}")
        return _with_ones(X.to(self.device))  # (n, d+1)

    def _labels(self, y: Any, n: int) -> torch.Tensor:
        y = np.asarray(y)
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise SentEvalError(
                f"probe labels must be {n} integers, got an array of shape {y.shape} ({y.dtype})"
            )
        if n and (y.min() < 0 or y.max() >= self.nclasses):
            raise SentEvalError(f"probe labels must lie in 0..{self.nclasses - 1}, got {y.min()}..{y.max()}")
        return torch.as_tensor(y, dtype=torch.long, device=self.device)

    # ---------------------------------------------------------------------------------------- model
    def _logits(self, x: torch.Tensor, weights: list[torch.Tensor], train: bool) -> torch.Tensor:
        """Logits of every probe for a batch: x (b, d+1) -> (R, b, C)."""
        if self.nhid == 0:
            return torch.matmul(x, weights[0].transpose(1, 2))  # (R, b, C)
        hidden = torch.matmul(x, weights[0].transpose(1, 2))  # (R, b, H)
        if train and self.dropout > 0:
            keep = torch.empty_like(hidden).bernoulli_(1 - self.dropout, generator=self.dropout_gen)
            hidden = hidden * keep / (1 - self.dropout)
        hidden = _with_ones_3d(torch.sigmoid(hidden))  # (R, b, H+1)
        return torch.bmm(hidden, weights[1].transpose(1, 2))  # (R, b, C)

    def _gradients(self, x: torch.Tensor, y: torch.Tensor, onehot_t: torch.Tensor) -> list[torch.Tensor]:
        """Gradients of the mean cross-entropy plus the L2 term, one per weight tensor."""
        nprobes, b = self.nprobes, x.shape[0]
        if self.nhid == 0:
            w = self.weights[0].view(nprobes * self.nclasses, -1)  # (R*C, d+1)
            # Class axis in the middle: a softmax over a short middle axis is much cheaper on CPU.
            probs = torch.softmax((w @ x.t()).view(nprobes, self.nclasses, b), dim=1)  # (R, C, b)
            resid = probs.sub_(onehot_t).div_(b).view(nprobes * self.nclasses, b)  # d(mean CE)/d logits
            grad = (resid @ x).view_as(self.weights[0])  # (R, C, d+1)
            return [grad.addcmul_(self.penalties, self.weights[0])]
        with torch.enable_grad():
            leaves = [w.detach().requires_grad_(True) for w in self.weights]
            logits = self._logits(x, leaves, train=True)  # (R, b, C)
            # Sum over probes of each probe's mean over the batch: probes stay independent.
            loss = F.cross_entropy(logits.reshape(nprobes * b, -1), y.repeat(nprobes), reduction="sum") / b
            grads = torch.autograd.grad(loss, leaves)
        return [g.addcmul_(self.penalties, w) for g, w in zip(grads, self.weights)]

    @torch.no_grad()
    def _train_passes(
        self, X: torch.Tensor, y: torch.Tensor, onehot_t: torch.Tensor, updater: _Updater
    ) -> None:
        n = X.shape[0]
        for _ in range(self.epoch_size):
            permutation = torch.from_numpy(self.rng.permutation(n)).to(self.device)
            for start in range(0, n, self.batch_size):
                idx = permutation[start : start + self.batch_size]
                grads = self._gradients(
                    X.index_select(0, idx), y.index_select(0, idx), onehot_t.index_select(1, idx)
                )
                updater.step(grads)
        self.nepoch += self.epoch_size

    @torch.no_grad()
    def _predict_tensor(self, X: torch.Tensor) -> torch.Tensor:
        """Predicted classes of every probe: (R, n)."""
        chunks = [
            self._logits(X[i : i + SCORE_CHUNK], self.weights, train=False).argmax(dim=2)
            for i in range(0, X.shape[0], SCORE_CHUNK)
        ]
        if not chunks:
            return torch.zeros(self.nprobes, 0, dtype=torch.long, device=self.device)
        return torch.cat(chunks, dim=1)

    def _accuracy(self, X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        correct = (self._predict_tensor(X) == y.unsqueeze(0)).sum(dim=1).cpu().numpy()  # (R,)
        return correct / max(len(y), 1)

    # ------------------------------------------------------------------------------------- public
    def fit(
        self,
        X: Any,
        y: Any,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float | None = None,
        early_stop: bool = True,
    ) -> np.ndarray:
        """Train every probe with early stopping; return the best held-out accuracy of each (R,)."""
        X_t = self._features(X)
        y_t = self._labels(y, X_t.shape[0])
        if validation_data is not None:
            dev_X = self._features(validation_data[0])
            dev_y = self._labels(validation_data[1], dev_X.shape[0])
            train_X, train_y = X_t, y_t
        else:
            if validation_split is None or not 0.0 < validation_split < 1.0:
                raise SentEvalError(
                    f"fit needs validation_data or a validation_split in (0, 1), got {validation_split!r}"
                )
            n = X_t.shape[0]
            permutation = torch.from_numpy(self.rng.permutation(n)).to(self.device)
            ndev = max(1, int(validation_split * n))
            dev_idx, train_idx = permutation[:ndev], permutation[ndev:]
            train_X, train_y = X_t.index_select(0, train_idx), y_t.index_select(0, train_idx)
            dev_X, dev_y = X_t.index_select(0, dev_idx), y_t.index_select(0, dev_idx)
        if train_X.shape[0] == 0 or dev_X.shape[0] == 0:
            raise SentEvalError(
                f"probe fit got {train_X.shape[0]} training and {dev_X.shape[0]} held-out samples; both must be > 0"
            )
        onehot_t = F.one_hot(train_y, self.nclasses).to(torch.float32).t().contiguous()  # (C, n)
        if self._updater is None:
            self._updater = _Updater(self.optim, self.weights)

        self.nepoch = 0
        best_acc = np.full(self.nprobes, -1.0)
        best_weights = [w.clone() for w in self.weights]
        nonimproved = np.zeros(self.nprobes, dtype=np.int64)
        active = np.ones(self.nprobes, dtype=bool)
        with _cpu_threads(self.device):
            while active.any() and self.nepoch <= self.max_epoch:
                self._train_passes(train_X, train_y, onehot_t, self._updater)
                acc = self._accuracy(dev_X, dev_y)
                improved = active & (acc > best_acc)
                if improved.any():
                    best_acc[improved] = acc[improved]
                    rows = torch.from_numpy(np.flatnonzero(improved)).to(self.device)
                    for best, current in zip(best_weights, self.weights):
                        best.index_copy_(0, rows, current.index_select(0, rows))
                if early_stop:
                    worse = active & ~improved
                    active &= ~(worse & (nonimproved >= self.tenacity))
                    nonimproved[worse] += 1
        for current, best in zip(self.weights, best_weights):
            current.copy_(best)
        return best_acc

    def score(self, X: Any, y: Any) -> np.ndarray:
        """Accuracy of every probe, in [0, 1]: (R,)."""
        X_t = self._features(X)
        return self._accuracy(X_t, self._labels(y, X_t.shape[0]))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class of every probe: (R, n)."""
        return self._predict_tensor(self._features(X)).cpu().numpy()

    @torch.no_grad()
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of every probe: (R, n, C)."""
        X_t = self._features(X)
        chunks = [
            torch.softmax(self._logits(X_t[i : i + SCORE_CHUNK], self.weights, train=False), dim=2)
            for i in range(0, X_t.shape[0], SCORE_CHUNK)
        ]
        if not chunks:
            return np.zeros((self.nprobes, 0, self.nclasses), dtype=np.float32)
        return torch.cat(chunks, dim=1).cpu().numpy()

    def probe(self, index: int) -> ProbeClassifier:
        """The ``index``-th probe alone, with a copy of its trained weights and of the random state."""
        bank = copy.copy(self)
        bank.rng = copy.deepcopy(self.rng)
        bank.torch_gen = torch.Generator().set_state(self.torch_gen.get_state())
        if self.dropout > 0:
            bank.dropout_gen = torch.Generator(device=self.device).set_state(self.dropout_gen.get_state())
        bank.l2regs = [self.l2regs[index]]
        bank.weights = [w[index : index + 1].clone() for w in self.weights]
        bank.penalties = self.penalties[index : index + 1].clone()
        bank._updater = None  # a fresh optimizer if the probe is trained further
        single = ProbeClassifier.__new__(ProbeClassifier)
        single.bank = bank
        return single


def _with_ones_3d(h: torch.Tensor) -> torch.Tensor:
    """(R, b, H) -> (R, b, H+1) with a constant last feature for the bias."""
    return torch.cat([h, h.new_ones(*h.shape[:-1], 1)], dim=-1)


class ProbeClassifier:
    """One PyTorch probe with one L2 penalty (the API of SentEval's ``MLP`` / ``PyTorchClassifier``).

    Keyword arguments are those of :class:`ProbeBank`: nhid, optim, batch_size, tenacity, epoch_size,
    max_epoch, dropout, seed, device.
    """

    def __init__(self, inputdim: int, nclasses: int, l2reg: float = 0.0, **kwargs: Any):
        self.bank = ProbeBank(inputdim, nclasses, [l2reg], **kwargs)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        inputdim: int,
        nclasses: int,
        l2reg: float,
        seed: int = 1111,
        device: str | torch.device | None = None,
    ) -> ProbeClassifier:
        single = cls.__new__(cls)
        single.bank = ProbeBank.from_config(config, inputdim, nclasses, [l2reg], seed=seed, device=device)
        return single

    @property
    def nepoch(self) -> int:
        """Training passes run by the last ``fit``."""
        return self.bank.nepoch

    @property
    def weights(self) -> list[torch.Tensor]:
        """The trained weights, bias as the last column: [(C, d+1)] or [(H, d+1), (C, H+1)]."""
        return [w[0] for w in self.bank.weights]

    def fit(
        self,
        X: Any,
        y: Any,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float | None = None,
        early_stop: bool = True,
    ) -> float:
        """Train with early stopping; return the best held-out accuracy in [0, 1]."""
        return float(self.bank.fit(X, y, validation_data, validation_split, early_stop)[0])

    def score(self, X: Any, y: Any) -> float:
        return float(self.bank.score(X, y)[0])

    def predict(self, X: Any) -> np.ndarray:
        return self.bank.predict(X)[0]

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.bank.predict_proba(X)[0]


class SklearnProbe(LogisticRegression):
    """The ``usepytorch=False`` probe: scikit-learn's L2 logistic regression, inverse penalty ``C``.

    Current scikit-learn defaults (lbfgs, 100 iterations) replace the liblinear solver of 2017-era
    SentEval; the objective is the same except that liblinear also penalised the intercept. ``fit``
    runs with ``CPU_TRAIN_THREADS`` BLAS threads, for the reason given in :func:`_cpu_threads`
    (lbfgs on MR-sized data was 4x faster with one thread on a busy 2-core machine).
    """

    def fit(self, X, y, sample_weight=None):
        with threadpool_limits(limits=CPU_TRAIN_THREADS):
            return super().fit(X, y, sample_weight)


def sklearn_probe(C: float, seed: int = 1111) -> SklearnProbe:
    """An unfitted :class:`SklearnProbe` with inverse L2 penalty ``C``."""
    return SklearnProbe(C=C, random_state=seed)
