"""The original train.py's flags (princeton-nlp/SimCSE, on transformers 4.2.1's TrainingArguments),
translated to ours: every flag of the original that our parser does not know is listed in
:data:`LEGACY_FLAGS` with what it becomes, each change announced in one notice line; the others keep
their meaning (tests/test_legacy_flags.py checks all).

Imports: the foundation only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from simcse.errors import SimCSEError


@dataclass(frozen=True)
class LegacyFlag:
    """What an original flag becomes. action: "ignore" (dropped with a notice: it has no effect here),
    "rename" (rewritten as ``replacement``, with a notice) or "refuse" (an error naming the replacement).
    boolean: the flag is a switch (``--flag`` or ``--flag true``), otherwise it takes one value."""

    action: str
    why: str
    replacement: str = ""
    boolean: bool = False


LEGACY_FLAGS: dict[str, LegacyFlag] = {
    "model_type": LegacyFlag("ignore", "the model class comes from the checkpoint's config.model_type"),
    "use_auth_token": LegacyFlag("ignore", "a saved login (`hf auth login`) or $HF_TOKEN is used automatically",
                                 boolean=True),
    "validation_split_percentage": LegacyFlag("ignore", "no validation split is taken from the training file; "
                                              "evaluation uses the SentEval dev sets"),
    "fp16_opt_level": LegacyFlag("ignore", "apex is not used; --fp16 is PyTorch's native AMP"),
    "fp16_backend": LegacyFlag("ignore", "--fp16 is always PyTorch's native AMP"),
    "past_index": LegacyFlag("ignore", "no model here returns past states"),
    "tpu_metrics_debug": LegacyFlag("ignore", "TPUs are not supported", boolean=True),
    "per_gpu_train_batch_size": LegacyFlag("rename", "the flag was renamed", "--per_device_train_batch_size"),
    "per_gpu_eval_batch_size": LegacyFlag("rename", "the flag was renamed", "--per_device_eval_batch_size"),
    "no_cuda": LegacyFlag("rename", "the flag was renamed", "--use_cpu", boolean=True),
    "adafactor": LegacyFlag("rename", "the optimizer is chosen with --optim", "--optim adafactor", boolean=True),
    "logging_dir": LegacyFlag("rename", "TensorBoard's directory is an environment variable now",
                              "$TENSORBOARD_LOGGING_DIR"),
    "dataset_name": LegacyFlag("refuse", "training reads a local file", "--train_file (export a hub dataset "
                               "with datasets' to_csv / to_json first)"),
    "dataset_config_name": LegacyFlag("refuse", "training reads a local file", "--train_file"),
    "model_parallel": LegacyFlag("refuse", "naive model parallelism was removed from transformers",
                                 "torchrun with one process per GPU", boolean=True),
    "sharded_ddp": LegacyFlag("refuse", "fairscale sharding was removed from transformers",
                              "torchrun (DDP) with --grad_cache_mini_batch for large batches"),
    "tpu_num_cores": LegacyFlag("refuse", "TPUs are not supported", "a GPU or CPU run"),
    "group_by_length": LegacyFlag("refuse", "length-grouped batches are not supported (they would also bias "
                                  "the in-batch negatives)", "plain shuffled batches (drop the flag)", boolean=True),
}
_TRUE, _FALSE = {"true", "yes", "1", "y", "t"}, {"false", "no", "0", "n", "f"}


def _legacy_value(argv: list[str], i: int, inline: str | None, flag: LegacyFlag) -> tuple[str | None, int]:
    """(value, index of the next token) of the legacy flag at argv[i]."""
    if inline is not None:
        return inline, i + 1
    nxt = argv[i + 1] if i + 1 < len(argv) else None
    if flag.boolean:
        if nxt is not None and nxt.lower() in _TRUE | _FALSE:
            return nxt, i + 2
        return "true", i + 1
    if nxt is None or nxt.startswith("--"):
        raise SimCSEError(f"--{argv[i].lstrip('-').split('=')[0]} expects a value")
    return nxt, i + 2


def _apply_legacy(name: str, value: str, notices: list[str]) -> list[str]:
    """The modern tokens for one legacy flag (raising for refused ones); appends a one-line notice."""
    flag = LEGACY_FLAGS[name]
    on = value.lower() not in _FALSE
    if flag.action == "refuse":
        raise SimCSEError(f"--{name} (a flag of the original train.py) is not supported: {flag.why}; "
                          f"use {flag.replacement}")
    if flag.action == "ignore":
        notices.append(f"--{name} ignored: {flag.why}")
        return []
    if name == "logging_dir":
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", value)
        notices.append(f"--logging_dir {value} -> TENSORBOARD_LOGGING_DIR={value} ({flag.why})")
        return []
    if flag.boolean:
        if not on:
            notices.append(f"--{name} {value} ignored (off)")
            return []
        notices.append(f"--{name} -> {flag.replacement} ({flag.why})")
        return flag.replacement.split()
    notices.append(f"--{name} {value} -> {flag.replacement} {value} ({flag.why})")
    return [flag.replacement, value]


def translate_legacy_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Rewrite the original train.py's flags in ``argv`` to ours: (new argv, one notice per change).

    Refused flags raise :class:`SimCSEError` naming the replacement. A bare ``--debug`` (a switch in
    transformers 4.2.1, a list of debug options now) is dropped with a notice.
    """
    out, notices, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        name, _, inline = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if name in LEGACY_FLAGS:
            value, i = _legacy_value(argv, i, inline if "=" in token else None, LEGACY_FLAGS[name])
            out.extend(_apply_legacy(name, value, notices))
            continue
        if token == "--debug" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            notices.append("--debug ignored: it takes debug options now (e.g. --debug underflow_overflow)")
            i += 1
            continue
        out.append(token)
        i += 1
    return out, notices


def translate_legacy_config(config: dict) -> tuple[dict, list[str]]:
    """The same for a JSON config (one ``train.py config.json`` argument): keys instead of flags."""
    out, notices = {}, []
    for key, value in config.items():
        if key not in LEGACY_FLAGS:
            out[key] = value
            continue
        tokens = _apply_legacy(key, str(value).lower() if isinstance(value, bool) else str(value), notices)
        if len(tokens) == 1:  # a switch turned on
            out[tokens[0].lstrip("-")] = True
        elif tokens:  # --new VALUE: the JSON value keeps its type
            out[tokens[0].lstrip("-")] = tokens[1] if LEGACY_FLAGS[key].boolean else value
    return out, notices


