"""Test-only start-up hook (on PYTHONPATH of a launched train.py, Python imports it at start-up): sleep
$STEP_DELAY seconds after every optimizer step, so a test can kill a real run between two checkpoints
whatever the speed of the machine. The production code carries no such hook."""

import os
import time

from transformers import TrainerCallback

import simcse.training.trainers as trainers


class _StepDelay(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(float(os.environ["STEP_DELAY"]))


_init = trainers.SimCSETrainer.__init__


def _init_with_delay(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.add_callback(_StepDelay())


trainers.SimCSETrainer.__init__ = _init_with_delay
