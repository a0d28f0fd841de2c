"""Start-up hook of the train.py runs that bench/fsdp_memory.py launches (this folder is on their PYTHONPATH
only; Python imports ``sitecustomize`` at start-up). Active only when ``FSDP_MEMORY_TRACE`` names a folder:
each process writes ``rank<R>.json`` there when training ends, with its resident memory (``VmRSS``) when
training begins (the model loaded, sharded or wrapped) and the largest at the end of any optimizer step,
its peak so far (``VmHWM``) at both points, and the bytes of the model state it holds right after its first
optimizer step: its weights, their gradients and the optimizer's state (a sharded tensor counts its local
shard). The production code carries no such hook."""

import json
import os


def _status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _local_bytes(tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def _install(folder: str) -> None:
    from transformers import TrainerCallback

    import simcse.training.trainers as trainers

    class Recorder(TrainerCallback):
        def __init__(self):
            self.record = {"step_rss_mb": 0.0}

        def on_train_begin(self, args, state, control, **kwargs):
            self.record.update(begin_rss_mb=_status_mb("VmRSS"), begin_hwm_mb=_status_mb("VmHWM"))

        def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
            if "weights_mb" in self.record or model is None or optimizer is None:
                return
            params = list(model.parameters())
            moments = [t for s in optimizer.state.values() for t in s.values() if hasattr(t, "numel") and t.dim() > 0]
            self.record.update(weights_mb=sum(map(_local_bytes, params)) / 2**20,
                               grads_mb=sum(_local_bytes(p.grad) for p in params if p.grad is not None) / 2**20,
                               optimizer_mb=sum(map(_local_bytes, moments)) / 2**20)

        def on_step_end(self, args, state, control, **kwargs):
            self.record["step_rss_mb"] = max(self.record["step_rss_mb"], _status_mb("VmRSS"))

        def on_train_end(self, args, state, control, **kwargs):
            self.record["end_hwm_mb"] = _status_mb("VmHWM")
            rank = os.environ.get("RANK", "0")
            with open(os.path.join(folder, f"rank{rank}.json"), "w", encoding="utf-8") as handle:
                json.dump(self.record, handle)

    init = trainers.SimCSETrainer.__init__

    def init_with_recorder(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(Recorder())

    trainers.SimCSETrainer.__init__ = init_with_recorder


if os.environ.get("FSDP_MEMORY_TRACE"):
    _install(os.environ["FSDP_MEMORY_TRACE"])
