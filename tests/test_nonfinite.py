"""Non-finite steps (simcse/training/nonfinite.py) and the host syncs of a training step.

A host sync (``.item()``, ``bool(tensor)``, ``float(tensor)``, ``.tolist()``, a boolean-mask index, ...)
makes the CPU wait for the GPU to finish everything queued so far, so the GPU idles while Python prepares
the next kernels. On CPU nothing waits, so the tests count the calls that WOULD wait on a GPU, by patching
them on ``torch.Tensor``: a training step of every configuration makes none inside forward and backward,
and at most the stated few per optimizer step.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from test_train import base_args, write_train_file
from transformers import TrainerCallback

import train
from helpers import save_tiny_model, slow_except_first
from simcse.training.trainers import SimCSETrainer

# Tensor methods that copy a value (or a data-dependent shape) to the host: each one waits for the device.
SYNCING_METHODS = ("item", "tolist", "numpy", "cpu", "nonzero", "masked_select", "__bool__", "__int__",
                   "__float__", "__index__")


class SyncCounter(TrainerCallback):
    """Counts syncing calls by phase: ``micro`` (inside ``training_step``: forward and backward), ``step``
    (the rest of an optimizer step: clipping, the non-finite decision, the optimizer and scheduler) and
    ``other`` (set-up, logging, saving, the end of training). Each call is kept with its caller's file:line."""

    def __init__(self):
        self.phase = "other"
        self.calls: list[tuple[str, str, str]] = []
        self.micro_steps = 0

    def record(self, name: str, depth: int = 2) -> None:
        frame = sys._getframe(depth)
        self.calls.append((self.phase, name, f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"))

    def on_step_begin(self, args, state, control, **kwargs):
        self.phase = "step"

    def on_step_end(self, args, state, control, **kwargs):
        self.phase = "other"

    def count(self, phase: str, exclude: tuple[str, ...] = ()) -> int:
        return sum(p == phase and not where.startswith(exclude) for p, _, where in self.calls)

    def where(self, phase: str) -> Counter:
        return Counter(f"{name} at {where}" for p, name, where in self.calls if p == phase)


@contextlib.contextmanager
def counting_syncs(monkeypatch):
    counter = SyncCounter()

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            counter.record(name)
            return original(self, *args, **kwargs)
        return counted

    for name in SYNCING_METHODS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    getitem, setitem = torch.Tensor.__getitem__, torch.Tensor.__setitem__

    def boolean(index) -> bool:  # a boolean mask selects a data-dependent number of elements: a nonzero
        items = index if isinstance(index, tuple) else (index,)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool and i.dim() > 0 for i in items)

    def counted_getitem(self, index):
        if boolean(index):
            counter.record("boolean index")
        return getitem(self, index)

    def counted_setitem(self, index, value):
        if boolean(index):
            counter.record("boolean index")
        return setitem(self, index, value)

    monkeypatch.setattr(torch.Tensor, "__getitem__", counted_getitem)
    monkeypatch.setattr(torch.Tensor, "__setitem__", counted_setitem)
    def wrap_function(name, original):
        def counted(*args, **kwargs):
            counter.record(name)
            return original(*args, **kwargs)
        return counted

    for module, name in ((torch, "nonzero"), (torch, "masked_select"), (torch.cuda, "synchronize")):
        monkeypatch.setattr(module, name, wrap_function(name, getattr(module, name)))

    step = SimCSETrainer.training_step

    def micro(self, *args, **kwargs):
        counter.phase = "micro"
        counter.micro_steps += 1
        try:
            return step(self, *args, **kwargs)
        finally:
            counter.phase = "step"

    monkeypatch.setattr(SimCSETrainer, "training_step", micro)
    run = SimCSETrainer.train

    def with_counter(self, *args, **kwargs):
        self.add_callback(counter)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(SimCSETrainer, "train", with_counter)
    yield counter


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sync-models")
    return {kind: save_tiny_model(root / kind, kind) for kind in ("bert", "roberta")}


# The optimizer's step counters live on the host (torch keeps them on the CPU unless ``capturable``), so its
# ``.item()`` on them is no device sync; on CPU it cannot be told apart from one and is left out by file.
OPTIMIZER_FILES = ("optimizer.py", "adamw.py", "adam.py")
# transformers' SDPA mask builder asks whether the batch has any padding (``padding_mask.all()``) in every
# encoder forward, so that an unpadded batch may take the flash kernel: a sync, but not ours (README).
TRANSFORMERS_MASKS = ("masking_utils.py",)
OURS = ("trainers.py", "nonfinite.py", "gradcache.py", "models.py", "guide.py")  # the collator works on the host

SCALER = "(a CPU GradScaler)"


def install_cpu_scaler(monkeypatch) -> list:
    """accelerate makes no GradScaler on CPU: one is installed by hand, so a CPU run takes fp16's path."""
    make, scalers = SimCSETrainer.create_accelerator_and_postprocess, []

    def with_scaler(self):
        make(self)
        self.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=1000)
        scalers.append(self.accelerator.scaler)

    monkeypatch.setattr(SimCSETrainer, "create_accelerator_and_postprocess", with_scaler)
    return scalers


CONFIGS = [  # (id, flags, syncs per micro-step, syncs per optimizer step outside them)
    ("plain", [], 0, 0),
    ("mlm", ["--do_mlm"], 0, 0),
    ("grad_cache", ["--grad_cache_mini_batch", "2"], 0, 0),
    ("grad_cache-mlm", ["--grad_cache_mini_batch", "2", "--do_mlm"], 0, 0),
    ("accumulation-mlm", ["--gradient_accumulation_steps", "2", "--do_mlm"], 0, 0),
    ("gist-same-vocabulary", ["--loss_type", "gist", "--guide_model", "bert"], 0, 0),
    # the guide decodes the batch's ids to text for its own tokenizer: one transfer of the ids (the floor)
    ("gist-other-vocabulary", ["--loss_type", "gist", "--guide_model", "roberta"], 1, 0),
    # the host decides whether the optimizer and scheduler step: one read of the gradient norm
    ("skip_nonfinite", ["--skip_nonfinite"], 0, 1),
    ("skip_nonfinite-grad_cache-mlm", ["--skip_nonfinite", "--grad_cache_mini_batch", "2", "--do_mlm"], 0, 1),
    # fp16's GradScaler (its CPU form, installed by hand): it skips overflows itself, on the device with the
    # default fused AdamW; the loss is judged on the device too
    ("fp16-scaler", [SCALER], 0, 0),
    ("fp16-scaler-skip_nonfinite", [SCALER, "--skip_nonfinite", "--do_mlm"], 0, 0),
    # duplicate texts masked in the loss: masks, not boolean indexing (a row or pair mean left empty too)
    ("mask_duplicate_texts", ["--mask_duplicate_texts"], 0, 0),
    ("mask_duplicate_texts-kcl-grad_cache", ["--mask_duplicate_texts", "--loss_type", "kcl",
                                             "--grad_cache_mini_batch", "2"], 0, 0),
    ("mask_duplicate_texts-align_uniform", ["--mask_duplicate_texts", "--loss_type", "align_uniform"], 0, 0),
    ("mask_duplicate_texts-met", ["--mask_duplicate_texts", "--loss_type", "met"], 0, 0),
]


def run_counting(monkeypatch, models, tmp_path, flags, steps: int = 2) -> SyncCounter:
    if SCALER in flags:
        install_cpu_scaler(monkeypatch)
    flags = [str(models[f]) if f in models else f for f in flags if f != SCALER]
    args = base_args(models["bert"], write_train_file(tmp_path, 1), tmp_path / "out", "--max_steps", str(steps),
                     "--logging_steps", "1", *flags)
    with counting_syncs(monkeypatch) as counter:
        train.main(args)
    return counter


@pytest.mark.parametrize("flags, per_micro, per_step", slow_except_first(
    [c[1:] for c in CONFIGS], [c[0] for c in CONFIGS]))
def test_no_host_sync_in_forward_and_backward(flags, per_micro, per_step, models, tmp_path, monkeypatch):
    """Forward and backward (``training_step``, every micro-step) wait for the device nowhere, in every
    configuration; the rest of an optimizer step only where the table says; a logging step adds at most
    two of ours (the diagnostics, one transfer, and the non-finite check), the end of training one."""
    steps = 2
    counter = run_counting(monkeypatch, models, tmp_path, flags, steps)
    assert counter.count("micro", exclude=TRANSFORMERS_MASKS) == per_micro * counter.micro_steps, \
        counter.where("micro")
    assert counter.count("step", exclude=OPTIMIZER_FILES) == per_step * steps, counter.where("step")
    ours = sum(phase == "other" and where.startswith(OURS) for phase, _, where in counter.calls)
    assert ours <= 2 * steps + 1, counter.where("other")


def test_the_count_sees_the_former_check_before_backward(models, tmp_path, monkeypatch):
    """The former ``_check_finite`` (``bool(~isfinite(loss).all())`` before every backward) is what the test
    above exists to keep out: put back, it is counted once per micro-step."""
    compute_loss = SimCSETrainer.compute_loss

    def checked(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        if ~torch.isfinite(loss.detach()).all():
            raise AssertionError("non-finite")
        return loss

    monkeypatch.setattr(SimCSETrainer, "compute_loss", checked)
    counter = run_counting(monkeypatch, models, tmp_path, [])
    assert counter.count("micro", exclude=TRANSFORMERS_MASKS) == counter.micro_steps == 2


# ----- what a skipped or failed step leaves ----------------------------------------------------------


@pytest.fixture
def nan_at(monkeypatch):
    """``nan_at({2: [1]})``: the contrastive loss of optimizer step 2 (micro-step 1 of it, counted from 0)
    becomes NaN."""
    loss_of_embeddings = SimCSETrainer._loss_of_embeddings
    seen = Counter()

    def install(where: dict[int, list[int]]):
        def poisoned(self, z, extras=None):
            loss = loss_of_embeddings(self, z, extras)
            step = self.state.global_step + 1
            micro = seen[step]
            seen[step] += 1
            return loss * float("nan") if micro in where.get(step, ()) else loss

        monkeypatch.setattr(SimCSETrainer, "_loss_of_embeddings", poisoned)

    return install


class Snapshots(TrainerCallback):
    """Weights, optimizer state and scheduler position at the end of every optimizer step."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        moments = {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items()}
                   for i, st in enumerate(optimizer.state.values())}
        self.steps.append((weights, moments, lr_scheduler.last_epoch, lr_scheduler.get_last_lr()))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        same(a[k], b[k]) if isinstance(a[k], dict) else torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k]))
        for k in a)


def train_with_snapshots(monkeypatch, model, tmp_path, *flags) -> tuple[dict, Snapshots]:
    snapshots = Snapshots()
    run = SimCSETrainer.train

    def with_snapshots(self, *args, **kwargs):
        self.add_callback(snapshots)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(SimCSETrainer, "train", with_snapshots)
    args = base_args(model, write_train_file(tmp_path, 1), tmp_path / "out", "--max_steps", "3",
                     "--learning_rate", "1e-2", "--warmup_steps", "1", "--per_device_train_batch_size", "2",
                     "--logging_steps", "1", *flags)
    return train.main(args), snapshots


ACCUMULATION = [([], {2: [0]}), (["--gradient_accumulation_steps", "2"], {2: [1]}),
                (["--grad_cache_mini_batch", "1", "--do_mlm"], {2: [0]})]


@pytest.mark.parametrize("flags, where", slow_except_first(ACCUMULATION, ["plain", "accumulation", "grad_cache-mlm"]))
def test_a_skipped_step_leaves_weights_optimizer_and_scheduler_as_they_were(flags, where, models, tmp_path,
                                                                            monkeypatch, nan_at, caplog):
    """--skip_nonfinite: the optimizer step whose loss went NaN (with gradient accumulation: in its last
    micro-step, after a good one) changes neither the weights nor AdamW's moments and step counts nor
    the scheduler; the next step trains."""
    nan_at(where)
    with caplog.at_level("WARNING", logger="simcse.training.nonfinite"):
        metrics, snapshots = train_with_snapshots(monkeypatch, models["bert"], tmp_path, "--skip_nonfinite", *flags)
    (w1, m1, s1, lr1), (w2, m2, s2, lr2), (w3, m3, s3, lr3) = snapshots.steps
    assert same(w1, w2) and same(m1, m2) and (s1, lr1) == (s2, lr2), "the skipped step changed something"
    assert not same(w2, w3) and not same(m2, m3) and s3 == s2 + 1, "training did not go on after it"
    assert metrics["skipped_nonfinite_steps"] == 1 and torch.isfinite(torch.tensor(metrics["train_loss"]))
    assert [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()] == [
        "step 2: the loss or its gradient is nan; skipped it without an update (--skip_nonfinite), "
        "1 step(s) skipped so far"]


def test_without_skipping_the_run_stops_at_the_next_save_naming_the_first_bad_step(models, tmp_path, nan_at,
                                                                                   monkeypatch):
    """No sync per step: the bad step 3 is found at the save of step 4 (the next step that waits for the
    device anyway), before it writes anything; the error names step 3 and the checkpoint of step 2."""
    from simcse.errors import SimCSEError

    nan_at({3: [0]})
    args = base_args(models["bert"], write_train_file(tmp_path, 1), tmp_path / "out", "--max_steps", "4",
                     "--save_strategy", "steps", "--save_steps", "2", "--logging_strategy", "no")
    saves = []
    save = SimCSETrainer._save_checkpoint
    monkeypatch.setattr(SimCSETrainer, "_save_checkpoint", lambda self, *a: (saves.append(self.state.global_step),
                                                                             save(self, *a))[1])
    with pytest.raises(SimCSEError, match=r"the training loss or its gradient became nan at step 3; the last good "
                                          r"checkpoint is '.*checkpoint-2'"):
        train.main(args)
    assert saves == [2]


def test_under_a_grad_scaler_an_overflow_is_skipped_and_a_nonfinite_loss_stops_the_run(models, tmp_path, nan_at,
                                                                                      monkeypatch):
    """fp16: the gradient norm is also non-finite on an ordinary overflow (here a huge initial scale), which
    the scaler skips and trains on from; the loss decides. A NaN loss at step 3 stops the run, naming it."""
    from simcse.errors import SimCSEError

    make = SimCSETrainer.create_accelerator_and_postprocess
    scalers = []

    def with_huge_scale(self):
        make(self)
        self.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1000)
        scalers.append(self.accelerator.scaler)

    monkeypatch.setattr(SimCSETrainer, "create_accelerator_and_postprocess", with_huge_scale)
    nan_at({3: [0]})
    args = base_args(models["bert"], write_train_file(tmp_path, 1), tmp_path / "out", "--max_steps", "3",
                     "--logging_steps", "1")
    with pytest.raises(SimCSEError, match=r"the training loss or its gradient became nan at step 3; no checkpoint"):
        train.main(args)
    assert scalers[0].get_scale() < 2.0 ** 126  # the overflows at the first steps were skipped, no error
