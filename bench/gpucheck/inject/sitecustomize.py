"""Start-up hook of the train.py runs that bench/gpu_check.py launches (this folder is on their PYTHONPATH
only; Python imports ``sitecustomize`` at start-up). Active only when ``GPU_CHECK_TRACE`` names a file:

* records, for every optimizer step, the step number, the fp16 scaler's scale (read once at the end:
  :class:`gpucheck.probes.ScaleTrace`) and accelerate's ``optimizer_step_was_skipped`` (for comparison),
  and writes them to ``GPU_CHECK_TRACE`` when training ends or the run is stopped;
* ``GPU_CHECK_NAN_STEP=K``: the contrastive loss of step K is NaN (train.py's ``--skip_nonfinite`` then
  skips the step, and under a gradient scaler the scale must go down at K);
* ``GPU_CHECK_EXIT_AFTER_CHECKPOINT=K``: the process ends with status 3 right after checkpoint-K is
  complete, as a kill would end it (the next run resumes with ``--resume_from_checkpoint last``);
* ``GPU_CHECK_CPU_SCALER=1``: installs a CPU ``GradScaler`` (accelerate makes none on CPU), so that a CPU
  run goes through the fp16 scaler's code path.

The production code carries no such hook.
"""

import json
import os

EXIT_STATUS = 3


def _install(trace_path: str) -> None:
    import torch
    from gpucheck.probes import ScaleTrace
    from transformers import TrainerCallback

    import simcse.training.trainers as trainers

    nan_step = int(os.environ.get("GPU_CHECK_NAN_STEP", "0"))
    exit_after = int(os.environ.get("GPU_CHECK_EXIT_AFTER_CHECKPOINT", "0"))
    cpu_scaler = os.environ.get("GPU_CHECK_CPU_SCALER") == "1"

    class Recorder(TrainerCallback):
        def __init__(self, trainer):
            self.trainer, self.trace, self.steps, self.flags, self.first_step = trainer, None, [], [], None

        def on_train_begin(self, args, state, control, **kwargs):
            scaler = getattr(self.trainer.accelerator, "scaler", None)
            self.trace = ScaleTrace(scaler) if scaler is not None else None
            self.first_step = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)
            self.flags.append(bool(self.trainer.accelerator.optimizer_step_was_skipped))
            if self.trace is not None:
                self.trace.after_step()

        def write(self, ended: str) -> None:
            record = {"ended": ended, "start_step": self.first_step, "steps": self.steps,
                      "scaler": type(self.trace.scaler).__name__ if self.trace else None,
                      "scales": self.trace.scales() if self.trace else None,
                      "scaler_skipped": self.trace.skipped() if self.trace else None,
                      "accelerate_step_was_skipped": self.flags, "nan_step": nan_step or None}
            with open(trace_path, "w", encoding="utf-8") as handle:
                json.dump(record, handle, indent=1)

        def on_train_end(self, args, state, control, **kwargs):
            self.write("train_end")

    init = trainers.SimCSETrainer.__init__

    def init_with_recorder(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._gpu_check_recorder = Recorder(self)
        self.add_callback(self._gpu_check_recorder)

    trainers.SimCSETrainer.__init__ = init_with_recorder

    if cpu_scaler:
        make = trainers.SimCSETrainer.create_accelerator_and_postprocess

        def with_cpu_scaler(self):
            make(self)
            if self.accelerator.scaler is None and not torch.cuda.is_available():
                self.accelerator.scaler = torch.amp.GradScaler("cpu")

        trainers.SimCSETrainer.create_accelerator_and_postprocess = with_cpu_scaler

    if nan_step:
        loss_of_embeddings = trainers.SimCSETrainer._loss_of_embeddings

        def poisoned(self, *args, **kwargs):
            loss = loss_of_embeddings(self, *args, **kwargs)
            return loss * float("nan") if self.state.global_step == nan_step - 1 else loss  # computing step K

        trainers.SimCSETrainer._loss_of_embeddings = poisoned

    if exit_after:
        save_checkpoint = trainers.SimCSETrainer._save_checkpoint

        def save_then_exit(self, *args, **kwargs):
            save_checkpoint(self, *args, **kwargs)  # complete: its marker is written last
            if self.state.global_step == exit_after:
                self._gpu_check_recorder.write(f"exit after checkpoint-{exit_after}")
                import sys

                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(EXIT_STATUS)

        trainers.SimCSETrainer._save_checkpoint = save_then_exit


if os.environ.get("GPU_CHECK_TRACE"):
    _install(os.environ["GPU_CHECK_TRACE"])
