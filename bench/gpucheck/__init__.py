"""The parts of ``bench/gpu_check.py``, the one command for a CUDA machine.

environment: one visible GPU, the modules the check needs, library versions, TF32 state; probes: step
timing (CUDA events), the fp16 scaler's skipped steps read from its scale, token counts and MFU; sides:
the throughput sides (floor, ours, peer); paths: the real train.py path on the device (checkpoint,
resume, an injected non-finite step), gradient caching on the device, and the STS side. ``inject/`` holds
the start-up hook of the train.py runs it launches. Imports: torch, transformers, simcse and senteval,
the benches beside it (``eval_speed``); never a top-level script (train.py runs as a subprocess).
"""
