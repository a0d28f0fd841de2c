"""Helper of tests/test_fault_injection.py, run under torchrun: train.py with rank 1 writing its RNG state
``SLOW_RANK_DELAY`` seconds late; ``NO_BARRIER=1`` makes every ``torch.distributed.barrier`` a no-op (the
control that shows the test can fail)."""

from __future__ import annotations

import os
import sys
import time

import torch.distributed
import transformers.trainer as trainer_module

real_save_rng_state = trainer_module.Trainer._save_rng_state


def late_on_rank_1(self, output_dir):
    if int(os.environ.get("RANK", "0")) == 1:
        time.sleep(float(os.environ.get("SLOW_RANK_DELAY", "2")))
    return real_save_rng_state(self, output_dir)


trainer_module.Trainer._save_rng_state = late_on_rank_1
if os.environ.get("NO_BARRIER") == "1":  # every barrier skipped, on both ranks alike: racy, never stuck
    torch.distributed.barrier = lambda *args, **kwargs: None

import train  # noqa: E402

if __name__ == "__main__":
    train.main(sys.argv[1:])
