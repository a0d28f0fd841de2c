"""What the GPU check reads from a run without slowing it: step times, the fp16 scaler's skips, tokens, MFU.

* :class:`StepClock`: on CUDA an event recorded on the stream at the end of every step (no host wait);
  the host synchronises only at the two ends of the timed window (the end of the warm-up, the end of
  the last step). On CPU the host clock at every step end.
* :class:`ScaleTrace`: the fp16 ``GradScaler``'s scale after every optimizer step, kept on the device and
  read once at the end. A step the scaler skipped (inf/NaN gradients) is one after which the scale went
  down. accelerate's ``optimizer_step_was_skipped`` cannot be used: it is set when the optimizer's own
  ``step`` was not called, but ``GradScaler.step`` calls a fused optimizer's ``step`` always (the fused
  AdamW, the Trainer's default, skips inside its kernel), so the flag stays False on skipped steps.
* :class:`TokenCounter`: the token positions of every batch a collator makes (padding included: what
  the encoder computes on).
* :func:`training_flops` and :func:`peak_tflops`: model FLOPs utilisation, 6 x N x T per step over the
  GPU's dense peak for the precision.
"""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback


class StepClock:
    """Step-end marks; :meth:`window` gives the steady-state seconds from the end of step ``warmup`` to the
    end of the last step, by the host clock (synchronised at both ends, nowhere else) and, on CUDA, by
    the events."""

    def __init__(self, cuda: bool, warmup: int):
        self.cuda, self.warmup = cuda, warmup
        self.started = time.perf_counter()
        self.events: list[torch.cuda.Event] = []
        self.host: list[float] = []
        self.closed = False

    @property
    def steps(self) -> int:
        return len(self.host)

    def mark(self, last: bool = False) -> None:
        """Call at the end of every optimizer step, once it has been queued; ``last`` at the final one."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.events.append(event)
            if len(self.host) + 1 == self.warmup or last:
                torch.cuda.synchronize()  # the two ends of the timed window: the only waits in the run
        self.host.append(time.perf_counter())
        self.closed = last

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def window(self) -> dict:
        """``{"timed_steps", "seconds", "event_seconds"}`` of the steady state (None when too few steps)."""
        timed = self.steps - self.warmup
        if timed < 1:
            return {"timed_steps": max(timed, 0), "seconds": None, "event_seconds": None}
        if self.cuda and not self.closed:  # the run ended without a last mark: wait now (a later end)
            torch.cuda.synchronize()
            self.host[-1] = time.perf_counter()
        events = (self.events[self.warmup - 1].elapsed_time(self.events[-1]) / 1000) if self.cuda else None
        return {"timed_steps": timed, "seconds": self.host[-1] - self.host[self.warmup - 1], "event_seconds": events}


def scale_tensor(scaler) -> torch.Tensor | float:
    """The scaler's current scale without a host wait: its device tensor (a copy), or, before the first
    ``scale()`` call made it, the initial scale; ``get_scale()`` (which waits) if torch renamed them."""
    current = getattr(scaler, "_scale", None)
    if torch.is_tensor(current):
        return current.detach().clone().reshape(())
    initial = getattr(scaler, "_init_scale", None)
    return float(initial) if current is None and initial is not None else float(scaler.get_scale())


class ScaleTrace:
    """The scale before the first step and after every step; :meth:`skipped` says which steps the scaler
    skipped (the scale went down: ``backoff_factor`` < 1; it only grows, by ``growth_factor``, after
    ``growth_interval`` good steps)."""

    def __init__(self, scaler):
        self.scaler = scaler
        self.values: list[torch.Tensor | float] = [scale_tensor(scaler)]

    def after_step(self) -> None:
        self.values.append(scale_tensor(self.scaler))

    def scales(self) -> list[float]:
        return [float(v) for v in self.values]  # the host waits here, once the run is over

    def skipped(self) -> list[bool]:
        s = self.scales()
        return [after < before for before, after in zip(s, s[1:])]


class TrainerProbe(TrainerCallback):
    """For a Trainer (ours, the peer, train.py): the step clock, the scale trace when the accelerator
    has a gradient scaler, and a stop once ``max_seconds`` have passed since the start of training (the
    run then reports the steps it made). Set ``probe.trainer`` before ``train()``."""

    def __init__(self, clock: StepClock, max_seconds: float | None = None):
        self.clock, self.max_seconds = clock, max_seconds
        self.trainer = None
        self.trace: ScaleTrace | None = None
        self.stopped_early = False

    def on_train_begin(self, args, state, control, **kwargs):
        scaler = getattr(getattr(self.trainer, "accelerator", None), "scaler", None)
        self.trace = ScaleTrace(scaler) if scaler is not None else None
        self.clock.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.trace is not None:
            self.trace.after_step()
        last = state.global_step >= state.max_steps
        if self.max_seconds is not None and self.clock.elapsed() > self.max_seconds and not last:
            control.should_training_stop = True
            self.stopped_early = True
        self.clock.mark(last=self.stopped_early or last)

    def skipped(self) -> list[bool] | None:
        """Per step: did the fp16 scaler skip it (None: no scaler)."""
        return self.trace.skipped() if self.trace is not None else None


class TokenCounter:
    """A data collator that counts the token positions (``*input_ids`` tensors, padding included; not the
    MLM copy) of every batch it makes, then hands the batch on."""

    def __init__(self, collator):
        self.collator = collator
        self.batches: list[int] = []

    def __call__(self, features):
        batch = self.collator(features)
        self.batches.append(sum(v.numel() for k, v in batch.items()
                                if torch.is_tensor(v) and k.endswith("input_ids") and not k.startswith("mlm")))
        return batch

    def __getattr__(self, name):
        if name == "collator":
            raise AttributeError(name)
        return getattr(self.collator, name)

    def tokens_per_batch(self) -> float | None:
        return sum(self.batches) / len(self.batches) if self.batches else None


def training_flops(non_embedding_params: int, tokens: float) -> float:
    """FLOPs of one training step: 6 x N x T (forward 2NT, backward 4NT), N the parameters outside the
    embedding tables, T the token positions the encoder processed (padding included). The formula of
    ``transformers.Trainer.floating_point_ops``; it leaves out the attention scores (12 x layers x
    length x hidden per token: under 1% of 6N at length 32 for BERT-base)."""
    return 6.0 * non_embedding_params * tokens


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """N of :func:`training_flops`: every parameter except the embedding tables."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


# Dense peak TFLOPS (without 2:4 sparsity: half of the datasheets' "with sparsity" figures) by precision:
# fp32 on the CUDA cores, TF32 / bf16 / fp16 on the tensor cores. NVIDIA's H100, H200 and A100 datasheets.
# The first entry whose key is in the GPU's name wins (so "H100 NVL" and "H100 PCIe" come before "H100").
PEAK_TFLOPS = {
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM5 ("H100 80GB HBM3")
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
}


def peak_tflops(gpu_name: str | None, precision: str, tf32: bool) -> tuple[float | None, str]:
    """(peak TFLOPS, what it is) for a side's precision; fp32 counts the TF32 peak when fp32 matmuls may
    use TF32. (None, why) for a CPU or a GPU not in :data:`PEAK_TFLOPS`."""
    if not gpu_name:
        return None, "no GPU: MFU is defined against a GPU's peak"
    for key, peaks in PEAK_TFLOPS.items():
        if key.lower() in gpu_name.lower():
            kind = "tf32" if precision == "fp32" and tf32 else precision
            return peaks[kind], f"{key} dense {kind} peak, {peaks[kind]} TFLOPS"
    return None, f"no peak figure for {gpu_name!r} in bench/gpucheck/probes.py PEAK_TFLOPS"


def utilisation(flops_per_step: float | None, steps_per_s: float | None, peak: float | None) -> dict:
    """Achieved TFLOPS and MFU (achieved / peak) of a side; None where an input is missing."""
    achieved = flops_per_step * steps_per_s / 1e12 if flops_per_step and steps_per_s else None
    return {"achieved_tflops": round(achieved, 2) if achieved is not None else None,
            "mfu": round(achieved / peak, 4) if achieved is not None and peak else None}
