"""Fault injection for ``tests/test_fault_injection.py``: a real train.py run SIGKILLed at file operations.

    python tests/fault_harness.py WORK MODEL_DIR TRAIN_FILE [--instants 20] [--seed 0]  -> WORK/report.json

1. An uninterrupted reference run records every file operation under its output_dir that Python can see
   (open for writing, safetensors and torch.save, os.replace / rename / remove / unlink, shutil.rmtree),
   in order; the tokenizer's own Rust writer is not among them.
2. Instants are drawn from those operations by a seeded generator (``--instants`` of them, plus the first
   checkpoint rotation and the first move of the final save's switch, so that every phase is hit).
3. For each instant a fresh run is SIGKILLed just before that operation (the process kills itself with
   ``os.kill(getpid(), SIGKILL)``: no ``finally``, no ``atexit``, no buffered write reaches disk). What it
   left is inspected: a final model that carries its completeness marker must be whole and equal to the
   reference's; every marked checkpoint must be whole. Then the same command is run again with
   ``--resume_from_checkpoint last`` (or afresh, with ``--overwrite_output_dir``, when no checkpoint is
   complete yet), and its final weights are compared with the reference's.

Every run happens in a child forked from this process, which never runs a tensor operation itself (the
weights are compared as numpy arrays), so there is no thread pool or autograd engine to inherit; the
heavy imports happen once.
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path

import numpy as np


def train_args(model: str, train_file: str, out: Path, *extra: str) -> list[str]:
    """3 steps, a checkpoint after each, only the newest kept (rotation at every save), dropout on."""
    return ["--model_name_or_path", model, "--train_file", train_file, "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--max_steps", "3", "--learning_rate", "1e-3", "--seed", "7",
            "--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "1", "--eval_strategy", "no",
            "--logging_steps", "1", "--max_seq_length", "16", "--report_to", "none", "--use_cpu",
            "--disable_tqdm", "true", *extra]


class Operations:
    """Counts file operations under ``root``; SIGKILLs the process just before operation ``kill_at``."""

    def __init__(self, root: Path, kill_at: int | None = None):
        self.root = str(root.resolve())
        self.kill_at = kill_at
        self.log: list[tuple[str, str]] = []

    def hit(self, kind: str, *paths) -> None:
        inside = [os.path.abspath(os.fspath(p)) for p in paths if isinstance(p, (str, os.PathLike))]
        inside = [p for p in inside if p.startswith(self.root + os.sep) or p == self.root]
        if not inside:
            return
        self.log.append((kind, os.path.relpath(inside[-1], self.root)))
        if len(self.log) == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        import torch
        import transformers.modeling_utils as modeling_utils

        def wrap(owner, name, kind, writes_only=False):
            real = getattr(owner, name)

            def hooked(*args, **kwargs):
                if not writes_only or _writing(args, kwargs):
                    self.hit(kind, *args[:2])
                return real(*args, **kwargs)

            setattr(owner, name, hooked)

        wrap(builtins, "open", "open-write", writes_only=True)
        wrap(io, "open", "open-write", writes_only=True)  # pathlib's write_text / open go through io.open
        for name in ("replace", "rename", "remove", "unlink"):
            wrap(os, name, name)
        wrap(shutil, "rmtree", "rmtree")
        real_save = modeling_utils.safe_save_file

        def hooked_save(tensors, filename, *args, **kwargs):
            self.hit("safetensors", filename)
            return real_save(tensors, filename, *args, **kwargs)

        modeling_utils.safe_save_file = hooked_save
        real_torch_save = torch.save  # optimizer.pt, scheduler.pt, rng_state.pth, training_args.bin (C++ writer)

        def hooked_torch_save(obj, f, *args, **kwargs):
            self.hit("torch.save", f)
            return real_torch_save(obj, f, *args, **kwargs)

        torch.save = hooked_torch_save


def _writing(args, kwargs) -> bool:
    mode = kwargs.get("mode", args[1] if len(args) > 1 else "r")
    return isinstance(mode, str) and any(c in mode for c in "wax+")


def run_child(argv: list[str], root: Path, kill_at: int | None, log_file: Path | None = None,
              output: Path | None = None) -> str:
    """Run train.main(argv) in a forked child (its stdout and stderr go to ``output``); 'killed',
    'finished' or 'failed: ...'."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        if output is not None:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        try:
            import train

            ops = Operations(root, kill_at)
            ops.install()
            train.main(argv)
            if log_file is not None:
                log_file.write_text(json.dumps(ops.log))
        except BaseException:  # noqa: BLE001 - reported to the parent through the exit code and stderr
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "finished"
    return f"failed: status {status}"


def weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    if a.keys() != b.keys():
        return float("inf")
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)


def phase(kind: str, path: str) -> str:
    """rotation (deleting an old checkpoint), checkpoint (writing one) or final save (output_dir itself)."""
    if path.startswith("checkpoint-"):
        return "rotation" if kind == "rmtree" else "checkpoint"
    return "final save"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("model")
    parser.add_argument("train_file")
    parser.add_argument("--instants", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    import train  # noqa: F401 - the heavy imports, once, before any fork
    from simcse.training.reliability import (
        MARKER,
        SAVE_MARKER,
        STAGING,
        final_save_incomplete,
        is_complete,
        newest_complete_checkpoint,
    )

    reference = work / "reference"
    log_file = work / "reference_ops.json"
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    outcome = run_child(train_args(args.model, args.train_file, reference), reference, None, log_file,
                        logs / "reference.log")
    if outcome != "finished":
        raise SystemExit(f"the reference run {outcome}")
    ops = [tuple(op) for op in json.loads(log_file.read_text())]
    expected = weights(reference)

    rng = np.random.default_rng(args.seed)
    chosen = set(int(i) for i in rng.choice(np.arange(1, len(ops) + 1), size=min(args.instants, len(ops)),
                                           replace=False))
    phases = [phase(kind, path) for kind, path in ops]
    chosen.add(phases.index("rotation") + 1)
    chosen.add(next(i for i, (kind, path) in enumerate(ops, start=1) if kind == "replace" and path.startswith(STAGING)))

    report = {"operations": len(ops), "seed": args.seed, "instants": []}
    for at in sorted(chosen):
        out = work / f"kill-{at:03d}"
        kind, path = ops[at - 1]
        entry = {"at": at, "operation": kind, "path": path, "phase": phases[at - 1]}
        entry["first_run"] = run_child(train_args(args.model, args.train_file, out), out, at, None,
                                       logs / f"kill-{at:03d}.log")
        # what the kill left: a marked final model is whole and the reference's; marked checkpoints are whole
        if (out / SAVE_MARKER).exists():
            entry["final_model_after_kill"] = final_save_incomplete(out) or "whole"
            if entry["final_model_after_kill"] == "whole":
                entry["final_model_diff"] = max_difference(weights(out), expected)
        else:
            entry["final_model_after_kill"] = "none (no completeness marker)"
        entry["broken_marked_checkpoints"] = [p.name for p in out.glob("checkpoint-*")
                                              if (p / MARKER).exists() and not is_complete(p)]
        newest = newest_complete_checkpoint(out) if out.is_dir() else None
        extra = ["--resume_from_checkpoint", "last"] if newest is not None else ["--overwrite_output_dir"]
        entry["resumed_from"] = newest.name if newest is not None else None
        entry["second_run"] = run_child(train_args(args.model, args.train_file, out, *extra), out, None, None,
                                        logs / f"resume-{at:03d}.log")
        entry["final_complete"] = final_save_incomplete(out) is None and not (out / STAGING).exists()
        entry["final_diff"] = max_difference(weights(out), expected) if (out / "model.safetensors").is_file() \
            else float("inf")
        report["instants"].append(entry)
        shutil.rmtree(out)
    (work / "report.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
