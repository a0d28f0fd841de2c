"""Non-finite steps, decided after backward from the gradient norm: no host sync in forward or backward.

A NaN/inf loss used to be checked before every backward (``bool(loss)``: the CPU waited for the GPU on
every micro-step of every run). Now the step is judged once per optimizer step, on the gradient norm that
clipping computes anyway:

* :func:`nan_gradient_if_nonfinite` makes a non-finite loss give NaN gradients (a finite one is left
  exactly as it is), so the norm is non-finite whenever a loss was. Under DDP the gradients are
  all-reduced, so the norm is the same on every process, and every process decides the same without a
  collective of its own, even when only one process's MLM term went NaN.
* Default: the decision stays on the device (the first bad step and its norm, kept in two device
  scalars) and is read at the next logging, evaluation or save step and at the end of training (its
  summary line), which wait for the device anyway. The run stops there with
  :func:`~simcse.training.reliability.nonfinite_error`, naming the first bad step; nothing trained after
  it is saved or evaluated.
* ``--skip_nonfinite``: the host reads the norm once per optimizer step (the one sync of the step: the
  host must know whether to run the optimizer and the scheduler). A bad step drops every gradient of the
  optimizer step (all its accumulated micro-steps), so the optimizer leaves the weights and its state
  alone, and the scheduler does not step, as for a skipped fp16 overflow.
* fp16 (a ``GradScaler``): a non-finite norm is also an ordinary overflow, and the scaler skips the
  update itself (on the device with the default fused AdamW). So this process's loss is what is judged
  (a device scalar per optimizer step), read at the same points: a non-finite loss stops the run, or
  with ``--skip_nonfinite`` is counted and reported. The scheduler then steps as accelerate decides for
  any overflow (with a fused optimizer it cannot see the skip, and steps).

The Trainer's ``logging_nan_inf_filter`` (a ``bool(isnan(loss))`` per micro-step in its loop) is replaced
by the same filter on the device.
"""

from __future__ import annotations

import logging
import math

import torch

from simcse.training.reliability import nonfinite_error

logger = logging.getLogger(__name__)


def nan_gradient_if_nonfinite(loss: torch.Tensor) -> torch.Tensor:
    """``loss`` itself when finite (times exactly 1); when NaN/inf, every gradient it back-propagates is NaN
    (times ``1 + 0·loss`` = NaN), so a non-finite loss cannot leave finite gradients. No host sync."""
    return loss * (1 + 0 * loss.detach())


class NonFiniteSteps:
    """Mixin of :class:`~simcse.training.trainers.SimCSETrainer` (before ``Trainer`` in its bases): the
    non-finite decision of each optimizer step. The trainer calls :meth:`_init_nonfinite` in its
    ``__init__`` and passes each micro-step's loss through :meth:`_after_micro_step`."""

    def _init_nonfinite(self, skip: bool) -> None:
        self.skip_nonfinite = skip
        self.skipped_nonfinite = 0
        self._nan_inf_filter = True

    def _scaler(self):
        return getattr(getattr(self, "accelerator", None), "scaler", None)

    def _reset_nonfinite(self) -> None:
        def scalar(dtype=torch.float32):
            return torch.zeros((), dtype=dtype, device=self.args.device)

        self._bad_step, self._bad_value = scalar(torch.long), scalar()  # the first bad step (0: none), its value
        self._bad_loss = scalar()  # fp16: a non-finite loss of this optimizer step on this process, else 0
        self._scaler_skipped = scalar(torch.long)  # fp16 with skip_nonfinite: such steps, skipped by the scaler

    def train(self, *args, **kwargs):
        self._reset_nonfinite()
        self._nan_inf_filter = self.args.logging_nan_inf_filter
        self.args.logging_nan_inf_filter = False  # the Trainer's own filter syncs; _after_micro_step filters
        try:  # the end-of-training summary (the trainer's ``log``) reads the record a last time
            return super().train(*args, **kwargs)
        finally:
            self.args.logging_nan_inf_filter = self._nan_inf_filter

    def _after_micro_step(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss a micro-step returns to the Trainer's loop: with ``logging_nan_inf_filter`` a non-finite
        one becomes the running mean, as the Trainer does, but on the device. Under a scaler the loss is also
        remembered for the step's decision."""
        finite = torch.isfinite(loss)
        if self._scaler() is not None:
            self._bad_loss = torch.where(finite, self._bad_loss, loss.detach().float())
        if self._nan_inf_filter and hasattr(self, "_tr_loss"):
            running = self._tr_loss / (1 + self.state.global_step - self._globalstep_last_logged)
            loss = torch.where(finite, loss, running.to(loss.dtype))
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        """The Trainer's gradient norm (clipping computed it), judged before the optimizer step."""
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        step = self.state.global_step + 1
        if self._scaler() is not None:  # fp16: a non-finite norm is also an ordinary overflow; judge the loss
            bad, value = self._bad_loss != 0, self._bad_loss
            self._bad_loss = torch.zeros_like(value)
            if self.skip_nonfinite:  # the scaler skips the update itself (the gradients are non-finite)
                self._scaler_skipped = self._scaler_skipped + bad
                self._bad_step = torch.where(bad, step, self._bad_step)  # the last one, for the warning
            else:
                self._remember_first(bad, value, step)
        elif norm is None:
            pass
        elif self.skip_nonfinite:
            value = float(norm)  # the one host sync of the step: run the optimizer and scheduler or not
            self._mark_step_skipped(not math.isfinite(value))
            if not math.isfinite(value):
                model.zero_grad(set_to_none=True)  # optimizers leave parameters without a gradient alone
                self.skipped_nonfinite += 1
                logger.warning("step %d: the loss or its gradient is %s; skipped it without an update "
                               "(--skip_nonfinite), %d step(s) skipped so far", step, value, self.skipped_nonfinite)
        elif not torch.is_tensor(norm):  # DeepSpeed hands over a float: already on the host
            if not math.isfinite(norm):
                raise nonfinite_error(norm, step, self.args.output_dir)
        else:  # stays on the device until the next logging, evaluation or save step
            self._remember_first(~torch.isfinite(norm), norm.detach().float(), step)
        return norm

    def _remember_first(self, bad: torch.Tensor, value: torch.Tensor, step: int) -> None:
        first = bad & (self._bad_step == 0)
        self._bad_step = torch.where(first, step, self._bad_step)
        self._bad_value = torch.where(first, value, self._bad_value)

    def _mark_step_skipped(self, skipped: bool) -> None:
        """Tell accelerate the optimizer step was skipped, so the Trainer does not step the scheduler (what
        GradScaler's overflow sets; without a scaler nothing else writes it)."""
        optimizer = self.optimizer
        if hasattr(optimizer, "_is_overflow"):
            optimizer._is_overflow = skipped

    def _maybe_log_save_evaluate(self, *args, **kwargs):
        if self.control.should_log or self.control.should_evaluate or self.control.should_save:
            self._check_nonfinite()  # before anything is logged, evaluated or saved
        return super()._maybe_log_save_evaluate(*args, **kwargs)

    def _check_nonfinite(self) -> None:
        """Read the device's record, at a step that waits for the device anyway: stop at the first bad step
        or, fp16 with ``skip_nonfinite``, count the steps the scaler skipped for a non-finite loss."""
        if not hasattr(self, "_bad_step") or (self.skip_nonfinite and self._scaler() is None):
            return
        if self.skip_nonfinite:
            skipped = int(self._scaler_skipped)
            if skipped > self.skipped_nonfinite:
                logger.warning("step %d: the loss is non-finite; fp16's GradScaler skipped it without an update "
                               "(--skip_nonfinite), %d step(s) skipped so far", int(self._bad_step), skipped)
                self.skipped_nonfinite = skipped
            return
        step = int(self._bad_step)
        if step:
            raise nonfinite_error(float(self._bad_value), step, self.args.output_dir)
