"""Reliability: checkpoints that are known to be complete, resuming, atomic final saves, bad-input checks.

The Hugging Face ``Trainer`` writes ``checkpoint-N`` in place, file by file, and a run killed while
it writes leaves a directory that looks like a checkpoint but is not one. So:

* **Completeness marker.** When a checkpoint has been fully written, :func:`mark_complete` writes
  ``simcse_checkpoint.json`` into it LAST (atomically), listing every file with its size.
  :func:`is_complete` trusts a checkpoint only when the marker is there and every listed file still has
  its size. A checkpoint saved again in place (after resuming from an earlier one) loses its marker
  first (:func:`unmark`), so a crash during that re-save cannot leave a stale marker behind. The
  marker follows the Trainer's ``--save_total_limit`` rotation; a crash in that instant leaves the
  newest checkpoint unmarked, so ``last`` picks an older one (never a damaged one).
* **Resuming.** ``--resume_from_checkpoint last`` resolves to the newest complete checkpoint of
  ``output_dir`` *of the same run* (:func:`resolve_resume_checkpoint`): the marker records a run
  fingerprint (:func:`run_record`: a hash of the arguments that change training), and a checkpoint
  of other arguments, e.g. left in the folder by an earlier run with ``--overwrite_output_dir``, is
  skipped with a message naming the arguments that differ; the one picked is logged. An explicit
  path must be a complete checkpoint (another run's is resumed, with a warning listing the differences).
  The Trainer then restores weights, optimizer, scheduler, RNG states and its state (best metric and
  best checkpoint included) and skips the batches already seen, so the resumed run ends with the
  weights of an uninterrupted one.
* **Atomic final save.** :func:`staged_directory` gives the final ``save_model`` a scratch directory
  inside the target; each file is then moved into place with ``os.replace`` (atomic on POSIX), so the
  model files in ``output_dir`` are always a whole old file or a whole new one, never half-written.
* **Non-finite losses.** Judged after backward, from the gradient norm (:mod:`simcse.training.nonfinite`):
  the trainer stops with :func:`nonfinite_error` or, with ``--skip_nonfinite``, skips the step (no
  gradient, so the optimizer leaves the weights and its state alone, and the scheduler does not step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from simcse.errors import SimCSEError
from simcse.files import atomic_write_text

logger = logging.getLogger(__name__)

MARKER = "simcse_checkpoint.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STAGING = ".simcse-staging"  # scratch directory of the final save, inside the target
RESUME_LAST = "last"


# ----- completeness markers --------------------------------------------------------------------------


# Arguments that do not change the trained weights: where files go, logging, evaluation-only settings.
_NOT_TRAINING = frozenset({"cache_dir", "trust_remote_code", "overwrite_cache", "preprocessing_num_workers",
                           "senteval_data", "eval_custom_sts", "loss_tile_size"})
# TrainingArguments that do change them (the rest of its ~150 fields are I/O, logging, hub, hardware).
_TRAINING_FIELDS = ("seed", "data_seed", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                    "max_grad_norm", "num_train_epochs", "max_steps", "lr_scheduler_type", "lr_scheduler_kwargs",
                    "warmup_ratio", "warmup_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                    "optim", "optim_args", "fp16", "bf16", "label_smoothing_factor", "group_by_length",
                    "grad_cache_mini_batch", "no_duplicates_in_batch", "mask_duplicate_texts", "skip_nonfinite",
                    "ddp_original_gradient_scale", "fsdp_shard")


def run_record(*argument_groups) -> dict:
    """``{"fingerprint": hash, "args": {name: value}}`` of the arguments that change training: every
    field of the model and data argument dataclasses except I/O and evaluation-only ones, and the
    optimisation fields of TrainingArguments (:data:`_TRAINING_FIELDS`). Two runs with the same
    fingerprint continue each other's checkpoints; any other difference (logging, saving, evaluation
    data, output paths) does not count."""
    args: dict = {}
    for group in argument_groups:
        if isinstance(group, dict):
            values = group
        elif hasattr(group, "to_dict") and hasattr(group, "per_device_train_batch_size"):  # TrainingArguments
            values = {name: getattr(group, name) for name in _TRAINING_FIELDS if hasattr(group, name)}
        else:
            values = {f.name: getattr(group, f.name) for f in dataclasses.fields(group)}
        args.update({k: v for k, v in values.items() if k not in _NOT_TRAINING})
    args = json.loads(json.dumps(args, sort_keys=True, default=str))  # plain JSON values, as stored
    fingerprint = hashlib.sha256(json.dumps(args, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return {"fingerprint": fingerprint, "args": args}


def mark_complete(checkpoint: str | os.PathLike, global_step: int, run: dict | None = None) -> None:
    """Record that ``checkpoint`` is complete: its files and sizes (and the :func:`run_record` of the run
    that wrote it), written last and atomically."""
    root = Path(checkpoint)
    files = {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
             if p.is_file() and p.name != MARKER and not p.name.startswith(f".{MARKER}")}
    record = {"global_step": global_step, "files": files, **({"run": run} if run is not None else {})}
    atomic_write_text(root / MARKER, json.dumps(record, indent=1) + "\n")


def other_run_reason(checkpoint: str | os.PathLike, run: dict) -> str | None:
    """None when the complete ``checkpoint`` was written by a run with ``run``'s fingerprint, else why not
    (the differing arguments, at most three named)."""
    try:
        recorded = json.loads((Path(checkpoint) / MARKER).read_text(encoding="utf-8")).get("run")
    except (OSError, ValueError):
        return f"its {MARKER} is unreadable"
    if not isinstance(recorded, dict) or "fingerprint" not in recorded:
        return "its marker records no run fingerprint (written by an older train.py)"
    if recorded["fingerprint"] == run["fingerprint"]:
        return None
    theirs, ours = recorded.get("args", {}), run["args"]
    changed = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k, "(unset)") != ours.get(k, "(unset)")]
    shown = ", ".join(f"{k} {theirs.get(k, '(unset)')!r} there, {ours.get(k, '(unset)')!r} now" for k in changed[:3])
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    processes = ""
    if "world_size" in changed and isinstance(theirs.get("world_size"), int):  # other global batches
        processes = (f"; it ran on {theirs['world_size']} process(es), this run on {ours.get('world_size')}: to "
                     f"continue it, relaunch on {theirs['world_size']} (torchrun --nproc_per_node "
                     f"{theirs['world_size']} on one node)")
    return f"another run ({shown or 'different arguments'}{more}{processes})"


def unmark(checkpoint: str | os.PathLike) -> None:
    """Forget that ``checkpoint`` was complete (it is about to be written again in place)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(Path(checkpoint) / MARKER)


def incomplete_reason(checkpoint: str | os.PathLike) -> str | None:
    """None when ``checkpoint`` is complete, otherwise why not (one short phrase)."""
    root = Path(checkpoint)
    if not root.is_dir():
        return "not a directory"
    try:
        record = json.loads((root / MARKER).read_text(encoding="utf-8"))
        files = dict(record["files"])
    except FileNotFoundError:
        return f"no {MARKER} (it was interrupted while being written, or not written by this train.py)"
    except (ValueError, KeyError, TypeError):
        return f"its {MARKER} is unreadable"
    for name, size in files.items():
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def is_complete(checkpoint: str | os.PathLike) -> bool:
    return incomplete_reason(checkpoint) is None


def checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every ``checkpoint-N`` directory in ``output_dir``, newest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found, reverse=True)


def newest_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    return next((path for _, path in checkpoints(output_dir) if is_complete(path)), None)


def resolve_resume_checkpoint(value: str | None, output_dir: str | os.PathLike, run: dict | None = None) -> str | None:
    """The checkpoint directory ``--resume_from_checkpoint VALUE`` means, or a one-line SimCSEError.

    ``last`` (any case): the newest complete checkpoint of ``output_dir`` whose marker holds ``run``'s
    fingerprint (any complete one when ``run`` is None); newer checkpoints of other runs are skipped
    with a warning naming them and the choice is logged. A path: it must be a complete checkpoint (see
    :func:`is_complete`); the error names the newest complete one as the fix. A path from another run is
    resumed as asked, with a warning.
    """
    if value is None or value == "":
        return None
    if value.lower() == RESUME_LAST:
        if not Path(output_dir).is_dir():
            raise SimCSEError(f"`resume_from_checkpoint` last: `output_dir` {str(output_dir)!r} does not exist, "
                              "so there is nothing to resume; drop `resume_from_checkpoint` to start a fresh run")
        skipped = []
        for _, path in checkpoints(output_dir):
            reason = incomplete_reason(path)
            if reason is None and run is not None:
                reason = other_run_reason(path, run)
            if reason is None:
                for name in skipped:
                    logger.warning("--resume_from_checkpoint last: skipped %s", name)
                logger.info("--resume_from_checkpoint last: resuming from %s (this run%s)", path,
                            f", fingerprint {run['fingerprint']}" if run is not None else "")
                return str(path)
            skipped.append(f"{path.name} ({reason})")
        found = f" (skipped: {'; '.join(skipped)})" if skipped else ""
        raise SimCSEError(
            f"`resume_from_checkpoint` last: no complete checkpoint in {str(output_dir)!r}"
            f"{' from this run' if run is not None else ''}{found}; drop "
            "`resume_from_checkpoint` and add `overwrite_output_dir` to start afresh, or pass a checkpoint directory"
        )
    path = Path(value).expanduser()
    if not path.is_dir():
        raise SimCSEError(f"`resume_from_checkpoint` {value!r} is not a directory; pass a checkpoint-N directory "
                          f"of a previous run, or 'last' for the newest one in `output_dir`")
    reason = incomplete_reason(path)
    if reason is not None:
        newest = newest_complete_checkpoint(path.parent)
        fix = (f"resume from {str(newest)!r} (the newest complete one there) instead" if newest is not None
               else "no complete checkpoint is beside it; start a fresh run")
        raise SimCSEError(f"`resume_from_checkpoint` {value!r} is not a complete checkpoint: {reason}; {fix}")
    other = other_run_reason(path, run) if run is not None else None
    if other is not None:
        logger.warning("--resume_from_checkpoint %s: %s; resuming it as asked", value, other)
    return str(path)


# ----- atomic final save -----------------------------------------------------------------------------


SAVE_MARKER = "simcse_model.json"  # completeness marker of a final save, written last
SWITCHING = ".switching"  # inside the staging folder: the move into the target has begun


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish_switch(target: Path, staging: Path) -> None:
    """Move the staged files into ``target`` (roll forward), then write the completeness marker last.

    Idempotent: a save killed during the switch is finished by the next call (the staged files are never
    deleted once ``SWITCHING`` exists), so the target ends up holding the whole new model.
    """
    for item in sorted(staging.iterdir()):
        if item.name in (SWITCHING, SAVE_MARKER):
            continue
        destination = target / item.name
        if item.is_dir() and destination.is_dir():
            shutil.rmtree(destination)
        os.replace(item, destination)
    _fsync_path(target)
    record = (staging / SAVE_MARKER).read_text(encoding="utf-8")
    atomic_write_text(target / SAVE_MARKER, record)
    _fsync_path(target)
    shutil.rmtree(staging)


def final_save_incomplete(target: str | os.PathLike) -> str | None:
    """Why ``target`` does not hold one whole final save (None when it does): the marker must be there
    and every file it lists present with its recorded size. A marker present during a pending switch
    is consistent too: the old one (the switch had not removed it yet; the old files are all in place)
    or the new one (the switch had moved every file; only the scratch folder was left to delete)."""
    target = Path(target)
    if not (target / SAVE_MARKER).exists():
        if (target / STAGING / SWITCHING).exists():
            return f"a save into {str(target)!r} was interrupted while switching files; the next save finishes it"
        return f"no {SAVE_MARKER} in {str(target)!r}"
    try:
        files = dict(json.loads((target / SAVE_MARKER).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"the {SAVE_MARKER} of {str(target)!r} is unreadable"
    for name, size in files.items():
        path = target / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{name} in {str(target)!r} is missing or not the size the save recorded"
    return None


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike, write: bool = True) -> Iterator[str]:
    """Yield a scratch directory inside ``target``; on success switch its files into ``target``.

    Order: write and fsync the staged files and folder, record the file list in the staging folder,
    mark the switch as begun, remove the target's old completeness marker, move the files one by one
    (``os.replace``), fsync, write ``SAVE_MARKER`` last. An exception before the switch leaves ``target``
    as it was and removes the scratch folder; once the switch has begun the staged files are kept and the
    next call finishes the move. What this guarantees: ``target`` holds the whole old model or the whole
    new one whenever ``SAVE_MARKER`` is present; during the switch the marker is absent (a plain
    ``from_pretrained`` reader that ignores the marker may see a mix in that window).
    ``write=False`` (processes that do not save, under DDP) yields the same path and moves nothing.
    """
    target = Path(target)
    staging = target / STAGING
    if not write:
        yield str(staging)
        return
    target.mkdir(parents=True, exist_ok=True)
    if (staging / SWITCHING).exists():
        _finish_switch(target, staging)  # a previous save was killed mid-switch: roll it forward
    shutil.rmtree(staging, ignore_errors=True)  # left over from a save that died before its switch
    staging.mkdir()
    switching = False
    try:
        yield str(staging)
        files = {}
        for item in sorted(staging.rglob("*")):
            if item.is_file():
                with open(item, "rb") as handle:
                    os.fsync(handle.fileno())
                files[str(item.relative_to(staging))] = item.stat().st_size
        atomic_write_text(staging / SAVE_MARKER, json.dumps({"files": files}, indent=1) + "\n")
        _fsync_path(staging)
        (staging / SWITCHING).touch()
        _fsync_path(staging)
        switching = True
        if (target / SAVE_MARKER).exists():
            os.remove(target / SAVE_MARKER)
            _fsync_path(target)
        _finish_switch(target, staging)
    finally:
        if not switching:
            shutil.rmtree(staging, ignore_errors=True)


# ----- non-finite losses -----------------------------------------------------------------------------


def nonfinite_error(value: float, step: int, output_dir: str | os.PathLike) -> SimCSEError:
    """The one-line error for a non-finite loss (or gradient) at ``step``, naming the last good checkpoint."""
    newest = newest_complete_checkpoint(output_dir)
    where = (f"the last good checkpoint is {str(newest)!r}: resume from it with `resume_from_checkpoint` last"
             if newest is not None else "no checkpoint was saved yet: restart the run")
    return SimCSEError(
        f"the training loss or its gradient became {value} at step {step}; {where}, with a lower "
        "`learning_rate` (or `skip_nonfinite` to skip such steps)"
    )


# ----- bad input that would otherwise fail late ------------------------------------------------------


def check_task_data(data_dir: str | os.PathLike, tasks: Sequence[str]) -> None:
    """Load every task's data once, so a missing or broken file fails now, not at the first evaluation."""
    from senteval.datapath import HOW_TO_GET_DATA
    from senteval.errors import SentEvalError
    from senteval.registry import build_task

    for task in tasks:
        try:
            build_task(task, Path(data_dir) / "downstream")
        except SentEvalError as err:
            raise SentEvalError(f"{err} (needed by {task} for evaluation during training); {HOW_TO_GET_DATA}, "
                                "or train without evaluation (`eval_strategy` no)") from None
