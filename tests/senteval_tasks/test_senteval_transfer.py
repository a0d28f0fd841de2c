"""Tests of the transfer (linear-probe) tasks: the probe, the validation schemes, the loaders, the engine.

Offline and on the CPU. Known-answer tests use synthetic data whose structure fixes the answer; a
parity test pins the lock-step probe bank to a plain one-probe-at-a-time implementation of
SentEval's training loop written here.
"""

from __future__ import annotations

import copy
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import senteval
from helpers import make_transfer_tree, missing_data
from senteval.binary import CREval, MPQAEval, MREval, SUBJEval, read_sentences
from senteval.classifier import (
    OPTIMIZERS,
    ProbeBank,
    ProbeClassifier,
    _Updater,
    parse_optimizer,
    sklearn_probe,
)
from senteval.engine import SE
from senteval.errors import SentEvalError
from senteval.mrpc import MRPCEval, pair_features, read_mrpc
from senteval.registry import TASKS, TRANSFER_TASKS
from senteval.sst import SSTEval, read_sst
from senteval.trec import COARSE_CLASSES, TRECEval, read_trec
from senteval.utils import FAST_CLASSIFIER, make_params
from senteval.validation import (
    PYTORCH_PENALTIES,
    SKLEARN_C_KFOLD,
    SKLEARN_C_NESTED,
    InnerKFoldClassifier,
    KFoldClassifier,
    ProbeSettings,
    SplitClassifier,
)

FAST = dict(FAST_CLASSIFIER)  # rmsprop, batch 128, tenacity 3, epoch_size 2

# On separable data lbfgs keeps growing the weights until its iteration limit: expected, not a bug.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The reference loop below is tiny: extra threads only slow it down on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------ synthetic data
def blobs(n_per_class: int, nclasses: int, dim: int = 8, spread: float = 0.3, seed: int = 0):
    """Well-separated Gaussian clusters (linearly separable for small ``spread``)."""
    rs = np.random.RandomState(seed)
    centers = rs.randn(nclasses, dim) * 3.0
    X = np.concatenate([c + spread * rs.randn(n_per_class, dim) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(nclasses), n_per_class)
    order = rs.permutation(len(y))
    return X[order], y[order]


def noisy(X: np.ndarray, y: np.ndarray, fraction: float, nclasses: int, seed: int = 1):
    """Flip the labels of ``fraction`` of the samples (so no classifier can reach 100%)."""
    rs = np.random.RandomState(seed)
    y = y.copy()
    flip = rs.choice(len(y), int(fraction * len(y)), replace=False)
    y[flip] = (y[flip] + 1) % nclasses
    return X, y


# ------------------------------------------------------------------------------------------ probe
@pytest.mark.parametrize("nclasses", [2, 3])
@pytest.mark.parametrize("usepytorch", [True, False])
def test_probe_separates_separable_data(nclasses, usepytorch):
    X, y = blobs(60, nclasses)
    X_test, y_test = blobs(20, nclasses, seed=0)  # same centers, fresh points
    if usepytorch:
        probe = ProbeClassifier(X.shape[1], nclasses, l2reg=1e-4, **FAST)
        assert probe.fit(X, y, validation_split=0.1) == 1.0
    else:
        probe = sklearn_probe(C=1.0).fit(X, y)
    assert probe.score(X, y) == 1.0
    assert probe.score(X_test, y_test) == 1.0
    assert np.array_equal(probe.predict(X_test), y_test)


def test_probe_mlp_separates_separable_data():
    X, y = blobs(60, 3)
    probe = ProbeClassifier(X.shape[1], 3, l2reg=1e-5, nhid=16, optim="adam,lr=0.01", batch_size=32)
    probe.fit(X, y, validation_split=0.1)
    assert probe.score(X, y) == 1.0
    assert probe.predict_proba(X).shape == (len(y), 3)


def _scripted_accuracy(monkeypatch, sequence):
    """Make every held-out evaluation return the next value of ``sequence`` (one row per probe)."""
    values = iter(np.atleast_2d(np.asarray(sequence, dtype=float)).T)
    calls = []

    def fake(self, X, y):
        calls.append(1)
        return next(values).copy()

    monkeypatch.setattr(ProbeBank, "_accuracy", fake)
    return calls


def test_early_stopping_counts_non_improvements_without_reset(monkeypatch):
    # SentEval's rule: at a non-improving evaluation stop if `tenacity` non-improving evaluations came
    # before it; the count is never reset by an improvement. With tenacity 2 the 6th evaluation stops.
    calls = _scripted_accuracy(monkeypatch, [0.5, 0.6, 0.6, 0.7, 0.5, 0.5, 0.99, 0.99])
    X, y = blobs(10, 2)
    probe = ProbeClassifier(X.shape[1], 2, tenacity=2, epoch_size=3, batch_size=8)
    assert probe.fit(X, y, validation_data=(X, y)) == 0.7
    assert len(calls) == 6
    assert probe.nepoch == 6 * 3


def test_max_epoch_bounds_training_without_early_stop(monkeypatch):
    calls = _scripted_accuracy(monkeypatch, [0.5] * 10)
    X, y = blobs(10, 2)
    probe = ProbeClassifier(X.shape[1], 2, epoch_size=2, max_epoch=5, batch_size=8)
    probe.fit(X, y, validation_data=(X, y), early_stop=False)
    assert len(calls) == 3  # nepoch 0, 2, 4 are <= 5; 6 is not
    assert probe.nepoch == 6


def test_bank_stops_each_probe_on_its_own(monkeypatch):
    # probe 0 keeps improving, probe 1 never improves after its first evaluation (tenacity 1).
    rising = [0.1, 0.2, 0.3, 0.4, 0.5]
    flat = [0.6, 0.6, 0.6, 0.9, 0.9]  # stops at its 3rd evaluation: never sees the 0.9
    calls = _scripted_accuracy(monkeypatch, [rising, flat])
    X, y = blobs(10, 2)
    bank = ProbeBank(X.shape[1], 2, [1e-5, 1e-2], tenacity=1, epoch_size=1, max_epoch=4, batch_size=8)
    best = bank.fit(X, y, validation_data=(X, y))
    assert best.tolist() == [0.5, 0.6]
    assert len(calls) == 5


def test_fit_restores_best_weights_and_is_reproducible():
    X, y = noisy(*blobs(80, 3, spread=1.5), fraction=0.2, nclasses=3)
    Xv, yv = noisy(*blobs(30, 3, spread=1.5, seed=5), fraction=0.2, nclasses=3)
    first = ProbeClassifier(X.shape[1], 3, l2reg=1e-3, **FAST)
    best = first.fit(X, y, validation_data=(Xv, yv))
    assert first.score(Xv, yv) == best  # the restored weights are the best ones
    second = ProbeClassifier(X.shape[1], 3, l2reg=1e-3, **FAST)
    second.fit(X, y, validation_data=(Xv, yv))
    assert torch.equal(first.weights[0], second.weights[0])
    other_seed = ProbeClassifier(X.shape[1], 3, l2reg=1e-3, seed=7, **FAST)
    other_seed.fit(X, y, validation_data=(Xv, yv))
    assert not torch.equal(first.weights[0], other_seed.weights[0])


def test_fit_leaves_global_random_state_alone():
    X, y = blobs(20, 2)
    np.random.seed(3)
    torch.manual_seed(3)
    expected_np, expected_torch = np.random.rand(), torch.rand(1)
    np.random.seed(3)
    torch.manual_seed(3)
    ProbeClassifier(X.shape[1], 2, **FAST).fit(X, y, validation_split=0.2)
    assert np.random.rand() == expected_np
    assert torch.equal(torch.rand(1), expected_torch)


def _reference_fit(X, y, Xv, yv, nclasses, l2reg, optimizer, nhid=0, batch_size=32, tenacity=3, epoch_size=2):
    """SentEval's training loop, one probe at a time, with nn.Module, autograd and torch.optim."""
    np.random.seed(1111)
    torch.manual_seed(1111)
    dim = X.shape[1]
    if nhid == 0:
        model = torch.nn.Sequential(torch.nn.Linear(dim, nclasses))
    else:
        model = torch.nn.Sequential(
            torch.nn.Linear(dim, nhid),
            torch.nn.Dropout(0.0),
            torch.nn.Sigmoid(),
            torch.nn.Linear(nhid, nclasses),
        )
    loss_fn = torch.nn.CrossEntropyLoss()  # mean: the original's size_average=False line is dead since torch 0.4.1
    opt = optimizer(model.parameters())
    opt.param_groups[0]["weight_decay"] = l2reg
    X, y, Xv, yv = (torch.as_tensor(a) for a in (X, y, Xv, yv))
    nepoch, best_acc, count, stop = 0, -1.0, 0, False
    while not stop and nepoch <= 200:
        model.train()
        for _ in range(epoch_size):
            perm = torch.from_numpy(np.random.permutation(len(X)))
            for i in range(0, len(X), batch_size):
                idx = perm[i : i + batch_size]
                loss = loss_fn(model(X[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        nepoch += epoch_size
        model.eval()
        with torch.no_grad():
            acc = (model(Xv).argmax(1) == yv).sum().item() / len(yv)
        if acc > best_acc:
            best_acc, best_model = acc, copy.deepcopy(model)
        else:
            stop = count >= tenacity
            count += 1
    first = best_model[0]
    return best_acc, torch.cat([first.weight, first.bias[:, None]], dim=1).detach()


@pytest.mark.parametrize(
    "optim, optimizer, nhid",
    [
        ("rmsprop", torch.optim.RMSprop, 0),
        ("adam", torch.optim.Adam, 0),
        ("sgd,lr=0.001", lambda p: torch.optim.SGD(p, lr=0.001), 0),
        ("rmsprop", torch.optim.RMSprop, 6),
        ("rprop", torch.optim.Rprop, 0),  # the original sets weight_decay on Rprop, which ignores it
    ],
)
def test_bank_matches_one_probe_at_a_time_reference(optim, optimizer, nhid):
    X, y = noisy(*blobs(50, 3, dim=10, spread=1.5), fraction=0.15, nclasses=3)
    Xv, yv = noisy(*blobs(20, 3, dim=10, spread=1.5, seed=4), fraction=0.15, nclasses=3)
    regs = [1e-5, 1e-3, 1e-1]
    bank = ProbeBank(X.shape[1], 3, regs, nhid=nhid, optim=optim, batch_size=32, tenacity=3, epoch_size=2)
    accs = bank.fit(X, y, validation_data=(Xv, yv))
    for r, reg in enumerate(regs):
        ref_acc, ref_weight = _reference_fit(X, y, Xv, yv, 3, reg, optimizer, nhid=nhid)
        assert accs[r] == ref_acc
        torch.testing.assert_close(bank.weights[0][r], ref_weight, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", ["rmsprop", "adam", "rmsprop,lr=0.05,alpha=0.9", "adam,beta1=0.8,eps=1e-6"])
def test_fast_updates_equal_torch_optim(spec):
    name, kwargs = parse_optimizer(spec)
    torch.manual_seed(0)
    ours = [torch.randn(3, 4), torch.randn(2, 5)]
    theirs = [p.clone().requires_grad_(True) for p in ours]
    updater = _Updater(spec, ours)
    assert updater.kind == name  # the direct implementation is used
    optimizer = OPTIMIZERS[name](theirs, **kwargs)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in ours]
        updater.step(grads)
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        optimizer.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b.detach())


def test_closed_form_gradient_equals_autograd():
    X, y = blobs(8, 3, dim=5)
    bank = ProbeBank(5, 3, [1e-3, 1e-1])
    x = torch.cat([torch.as_tensor(X), torch.ones(len(X), 1)], dim=1)
    yt = torch.as_tensor(y)
    onehot_t = torch.nn.functional.one_hot(yt, 3).float().t()
    (ours,) = bank._gradients(x, yt, onehot_t)
    for r, reg in enumerate([1e-3, 1e-1]):
        w = bank.weights[0][r].clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(x @ w.t(), yt)
        (grad,) = torch.autograd.grad(loss, w)
        torch.testing.assert_close(ours[r], grad + reg * w.detach())


def test_parse_optimizer():
    assert parse_optimizer("adam") == ("adam", {})
    assert parse_optimizer("sgd,lr=0.1") == ("sgd", {"lr": 0.1})
    assert parse_optimizer("adam,beta1=0.8") == ("adam", {"betas": (0.8, 0.999)})
    assert parse_optimizer("sgd,lr=0.1,nesterov=true,momentum=0.9") == (
        "sgd",
        {"lr": 0.1, "nesterov": True, "momentum": 0.9},
    )


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lbfgs", "not one of"),
        ("adam,lr", "key=value"),
        ("adam,lr=fast", "not a number"),
        ("rmsprop,bogus=1", "has no option 'bogus'"),
        ("adam,weight_decay=0.1", "weight_decay"),
    ],
)
def test_parse_optimizer_errors_name_the_problem(spec, message):
    with pytest.raises(SentEvalError, match=message):
        parse_optimizer(spec)


def test_probe_config_and_input_errors():
    with pytest.raises(SentEvalError, match="unknown key.*'nhidden'"):
        ProbeBank.from_config({"nhidden": 0}, 4, 2, [1e-5])
    probe = ProbeClassifier(4, 2)
    with pytest.raises(SentEvalError, match=r"shape \(n, 4\)"):
        probe.fit(np.zeros((5, 3)), np.zeros(5, dtype=int), validation_split=0.2)
    with pytest.raises(SentEvalError, match="labels must lie in 0..1"):
        probe.fit(np.zeros((5, 4)), np.array([0, 1, 2, 0, 1]), validation_split=0.2)
    with pytest.raises(SentEvalError, match="validation_split"):
        probe.fit(np.zeros((5, 4)), np.zeros(5, dtype=int))


# ------------------------------------------------------------------------------------- validation
def settings(nclasses: int, usepytorch: bool = True, kfold: int = 3) -> ProbeSettings:
    return ProbeSettings(nclasses=nclasses, usepytorch=usepytorch, kfold=kfold, classifier=FAST, device="cpu")


@pytest.mark.parametrize("usepytorch", [True, False])
def test_inner_kfold_on_separable_and_noisy_data(usepytorch):
    X, y = blobs(40, 2)
    result = InnerKFoldClassifier(X, y, settings(2, usepytorch)).run()
    assert result.devacc == result.acc == 100.0
    grid = PYTORCH_PENALTIES if usepytorch else SKLEARN_C_NESTED
    assert len(result.penalties) == 3 and set(result.penalties) <= set(grid)

    Xn, yn = noisy(*blobs(40, 2), fraction=0.2, nclasses=2)
    noisy_result = InnerKFoldClassifier(Xn, yn, settings(2, usepytorch)).run()
    assert 60.0 < noisy_result.acc < 100.0
    assert 60.0 < noisy_result.devacc < 100.0


@pytest.mark.parametrize("usepytorch", [True, False])
def test_kfold_on_separable_and_noisy_data(usepytorch):
    train, test = blobs(40, 3), blobs(15, 3, seed=0)
    result = KFoldClassifier(train, test, settings(3, usepytorch)).run()
    assert result.devacc == result.acc == 100.0
    assert np.array_equal(result.predictions, test[1])
    grid = PYTORCH_PENALTIES if usepytorch else SKLEARN_C_KFOLD
    assert result.penalties[0] in grid

    noisy_train = noisy(*train, fraction=0.25, nclasses=3)
    noisy_test = noisy(*test, fraction=0.25, nclasses=3)
    noisy_result = KFoldClassifier(noisy_train, noisy_test, settings(3, usepytorch)).run()
    assert 50.0 < noisy_result.devacc < 100.0
    assert 50.0 < noisy_result.acc < 100.0


@pytest.mark.parametrize("usepytorch", [True, False])
def test_split_on_separable_and_noisy_data(usepytorch):
    splits = {"train": blobs(50, 2), "valid": blobs(20, 2, seed=0), "test": blobs(20, 2, seed=0)}
    X = {k: v[0] for k, v in splits.items()}
    y = {k: v[1] for k, v in splits.items()}
    result = SplitClassifier(X, y, settings(2, usepytorch)).run()
    assert result.devacc == result.acc == 100.0

    y_noisy = {k: noisy(X[k], y[k], 0.2, 2, seed=i)[1] for i, k in enumerate(y)}
    noisy_result = SplitClassifier(X, y_noisy, settings(2, usepytorch)).run()
    assert noisy_result.acc < 100.0 and noisy_result.devacc < 100.0


def test_split_winner_equals_a_refit_with_the_chosen_penalty():
    X_all, y_all = noisy(*blobs(70, 2, spread=1.5), fraction=0.15, nclasses=2)
    X = {"train": X_all[:100], "valid": X_all[100:120], "test": X_all[120:]}
    y = {"train": y_all[:100], "valid": y_all[100:120], "test": y_all[120:]}
    result = SplitClassifier(X, y, settings(2)).run()
    refit = ProbeClassifier(X_all.shape[1], 2, l2reg=result.penalties[0], **FAST)
    refit.fit(X["train"], y["train"], validation_data=(X["valid"], y["valid"]))
    assert round(100 * refit.score(X["test"], y["test"]), 2) == result.acc


def test_validation_rejects_bad_kfold():
    with pytest.raises(SentEvalError, match="kfold"):
        InnerKFoldClassifier(*blobs(10, 2), settings(2, kfold=1))


# ---------------------------------------------------------------------------------------- loaders
def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_trec_latin1_byte_and_coarse_labels(tmp_path):
    lines = [f"{c}:sub What is class {c} ?" for c in COARSE_CLASSES]
    data = ("\n".join(lines) + "\n").encode() + b"ENTY:other What is a sister\xf0city ?\n"
    samples, labels = read_trec(write(tmp_path / "t.label", data))
    assert labels == [0, 1, 2, 3, 4, 5, 2]
    assert samples[0] == ["What", "is", "class", "ABBR", "?"]  # the COARSE:fine token is dropped
    assert samples[-1] == ["What", "is", "a", "sister\xf0city", "?"]


def test_trec_unknown_class_names_file_and_line(tmp_path):
    path = write(tmp_path / "t.label", b"HUM:ind Who ?\nFOO:bar What ?\n")
    with pytest.raises(SentEvalError, match=r"t\.label:2: .*FOO:bar"):
        read_trec(path)


def test_mrpc_bom_and_header_do_not_leak(tmp_path):
    text = (
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "1\t11\t12\tThe cat sat .\tA cat sat .\n"
        "0\t13\t14\tIt rains .\tStocks fell 3 % .\n"
    )
    path = write(tmp_path / "m.txt", b"\xef\xbb\xbf" + text.encode())
    sent_a, sent_b, labels = read_mrpc(path)
    assert labels == [1, 0]
    assert sent_a == [["The", "cat", "sat", "."], ["It", "rains", "."]]
    assert sent_b[1] == ["Stocks", "fell", "3", "%", "."]
    assert not any("\ufeff" in tok or tok == "Quality" for s in sent_a + sent_b for tok in s)


def test_mrpc_bad_row_and_pair_features(tmp_path):
    path = write(tmp_path / "m.txt", b"Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\nyes\t1\t2\ta\tb\n")
    with pytest.raises(SentEvalError, match=r"m\.txt:2: expected 5 tab-separated"):
        read_mrpc(path)
    u, v = np.array([[1.0, -2.0]]), np.array([[3.0, 2.0]])
    assert pair_features(u, v).tolist() == [[2.0, 4.0, 3.0, -4.0]]


def test_binary_labels_and_empty_lines(tmp_path):
    write(tmp_path / "SUBJ" / "subj.objective", b"the film is set in paris .\nit opens in 1950 .\n")
    write(tmp_path / "SUBJ" / "subj.subjective", b"a dazzling mess .\n")
    task = SUBJEval(tmp_path)
    assert task.labels == [1, 1, 0]  # objective is class 1, as in SentEval
    assert task.samples[2] == ["a", "dazzling", "mess", "."]
    blank = write(tmp_path / "x.pos", b"good .\n\n  \ngreat \xe9t\xe9\n")
    assert read_sentences(blank) == [["good", "."], [], [], ["great", "\xe9t\xe9"]]  # kept, latin-1


def test_sst_bad_label_names_file_and_line(tmp_path):
    path = write(tmp_path / "sentiment-dev", b"fine film \t1\nbad film \t7\n")
    with pytest.raises(SentEvalError, match=r"sentiment-dev:2: .*label in 0..1"):
        read_sst(path)


def test_missing_file_is_a_sentevalerror(tmp_path):
    with pytest.raises(SentEvalError, match="rt-polarity.pos"):
        MREval(tmp_path)


def real_downstream() -> Path:
    try:
        return senteval.resolve_data_dir() / "downstream"
    except SentEvalError:
        missing_data("SentEval data (see senteval.datapath)")


@pytest.mark.parametrize(
    "cls, expected, positives",
    [(MREval, 10662, 5331), (CREval, 3775, 2407), (SUBJEval, 10000, 5000), (MPQAEval, 10606, 3312)],
)
def test_real_binary_counts(cls, expected, positives):
    task = cls(real_downstream())
    assert len(task.samples) == len(task.labels) == expected
    assert sum(task.labels) == positives


def test_real_split_task_counts():
    downstream = real_downstream()
    sst = SSTEval(downstream)
    assert [len(sst.data[s][0]) for s in ("train", "dev", "test")] == [67349, 872, 1821]
    trec = TRECEval(downstream)
    assert (len(trec.train[0]), len(trec.test[0])) == (5452, 500)
    assert sorted(set(trec.train[1])) == list(range(6))
    mrpc = MRPCEval(downstream)
    assert (len(mrpc.data["train"][2]), len(mrpc.data["test"][2])) == (4076, 1725)
    assert (sum(mrpc.data["train"][2]), sum(mrpc.data["test"][2])) == (2753, 1147)


# ----------------------------------------------------------------------------------------- engine
DIM = 64
_TABLE = np.random.RandomState(0).randn(4096, DIM).astype(np.float32)


def hashed_bow(params, batch):
    """A cheap deterministic batcher: the mean of per-word random vectors."""
    out = np.zeros((len(batch), DIM), dtype=np.float32)
    for i, sentence in enumerate(batch):
        if sentence:
            out[i] = _TABLE[[zlib.crc32(w.lower().encode()) % len(_TABLE) for w in sentence]].mean(axis=0)
    return out


def test_every_transfer_task_is_registered():
    assert set(TRANSFER_TASKS) <= set(TASKS)


def test_engine_runs_every_transfer_task(tmp_path):
    make_transfer_tree(tmp_path)
    prepared = []
    params = {"task_path": str(tmp_path), "kfold": 3, "classifier": FAST, "device": "cpu"}
    se = SE(params, hashed_bow, prepare=lambda p, samples: prepared.append(len(samples)))
    results = se.eval(TRANSFER_TASKS)
    assert prepared == [60, 60, 60, 60, 72, 96, 168]  # every sentence of each task, pairs counted twice
    for name, result in results.items():
        expected = {"devacc", "acc", "ndev", "ntest"} | ({"f1"} if name == "MRPC" else set())
        assert set(result) == expected, name
        for key in expected - {"ndev", "ntest"}:
            assert isinstance(result[key], float) and 80.0 <= result[key] <= 100.0, (name, key, result[key])
    assert (results["MR"]["ndev"], results["MR"]["ntest"]) == (60, 60)
    assert (results["SST2"]["ndev"], results["SST2"]["ntest"]) == (16, 16)
    assert (results["TREC"]["ndev"], results["TREC"]["ntest"]) == (72, 24)
    assert (results["MRPC"]["ndev"], results["MRPC"]["ntest"]) == (60, 24)


def test_engine_sklearn_path(tmp_path):
    make_transfer_tree(tmp_path)
    params = {"task_path": str(tmp_path), "kfold": 3, "usepytorch": False, "classifier": FAST}
    result = SE(params, hashed_bow).eval("MRPC")
    assert result["acc"] == 100.0 and result["f1"] == 100.0


def test_settings_from_params():
    params = make_params({"kfold": 10, "seed": 7, "usepytorch": False, "device": "cpu"})
    s = ProbeSettings.from_params(params, nclasses=6)
    assert (s.nclasses, s.kfold, s.seed, s.usepytorch, s.device) == (6, 10, 7, False, "cpu")


@pytest.mark.slow
def test_real_data_end_to_end_beats_chance():
    """TREC and MRPC on the real files with the hashed bag-of-words batcher (a few seconds)."""
    root = real_downstream().parent
    se = SE({"task_path": str(root), "kfold": 5, "classifier": FAST, "device": "cpu"}, hashed_bow)
    results = se.eval(["TREC", "MRPC"])
    # Bars well above the majority class (TREC 27.6%, MRPC 66.5%), which a probe that learned nothing from
    # the features scores; this batcher reaches 60.6 and 69.8 (seed 1111, 5 folds).
    assert results["TREC"]["acc"] > 55.0
    assert results["MRPC"]["acc"] > 68.5
    assert results["MRPC"]["ntest"] == 1725


def _mrpc_pair_features(n, dim, seed):
    """MRPC's features of a sentence pair as the original builds them: [|u - v|, u * v]."""
    rng = np.random.RandomState(seed)
    u = rng.randn(n, dim).astype(np.float32)
    y = rng.randint(0, 2, n)
    v = (u + rng.randn(n, dim).astype(np.float32) * np.where(y[:, None] == 1, 0.5, 2.0)).astype(np.float32)
    return np.concatenate([np.abs(u - v), u * v], axis=1), y


@pytest.mark.parametrize(
    "setting, optimizer",
    [
        ({"nhid": 0, "optim": "rmsprop", "batch_size": 128, "tenacity": 3, "epoch_size": 2}, torch.optim.RMSprop),
        ({"nhid": 0, "optim": "adam", "batch_size": 64, "tenacity": 5, "epoch_size": 4}, torch.optim.Adam),
    ],
    ids=["fasttest", "test"],
)
@pytest.mark.parametrize("features", ["blobs", "mrpc_pairs"])
def test_probe_matches_original_training_loop(setting, optimizer, features):
    """Same held-out accuracy and test accuracy as the original's loop (mean CE) on fixed features."""
    if features == "blobs":
        X, y = noisy(*blobs(150, 3, dim=12, spread=1.5), fraction=0.15, nclasses=3)
        Xv, yv = noisy(*blobs(40, 3, dim=12, spread=1.5, seed=4), fraction=0.15, nclasses=3)
        nclasses = 3
    else:
        X, y = _mrpc_pair_features(300, 8, seed=0)
        Xv, yv = _mrpc_pair_features(80, 8, seed=1)
        nclasses = 2
    for reg in (1e-5, 1e-2):
        probe = ProbeClassifier(X.shape[1], nclasses, l2reg=reg, **setting)
        acc = probe.fit(X, y, validation_data=(Xv, yv))
        ref_acc, ref_weight = _reference_fit(
            X, y, Xv, yv, nclasses, reg, optimizer, nhid=0, batch_size=setting["batch_size"],
            tenacity=setting["tenacity"], epoch_size=setting["epoch_size"],
        )
        assert acc == ref_acc
        torch.testing.assert_close(probe.weights[0], ref_weight, atol=1e-5, rtol=1e-5)


def test_partial_classifier_dict_takes_the_original_defaults():
    params = make_params({"classifier": {"nhid": 0}})
    assert {k: params.classifier[k] for k in ("optim", "batch_size", "tenacity", "epoch_size")} == {
        "optim": "adam", "batch_size": 64, "tenacity": 5, "epoch_size": 4,
    }
    assert make_params({}).classifier["optim"] == "adam"  # no classifier: the original's {"nhid": 0}
    assert make_params({"classifier": {"optim": "rprop"}}).classifier["batch_size"] == 64


def test_trec_latin1_next_line_character_stays_inside_the_question(tmp_path):
    """\\x85 (NEL in latin-1) is a line break for str.splitlines() but not for the original's loop."""
    path = tmp_path / "train_5500.label"
    path.write_bytes("DESC:manner How did serfdom develop in \x85 Russia ?\nNUM:date When was it ?\n".encode("latin-1"))
    questions, labels = read_trec(path)
    assert len(questions) == 2 and labels == [COARSE_CLASSES.index("DESC"), COARSE_CLASSES.index("NUM")]
