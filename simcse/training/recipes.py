"""Recipe files (``configs/NAME.json``) and the global batch: what train.py says about a run before it
starts. The file is parsed by :func:`simcse.training.arguments.parse_train_args`; this module only reads
its ``"recipe"`` object and the batch settings.

Imports: the training arguments and the foundation.
"""

from __future__ import annotations

import os

from simcse.training.arguments import read_config


def describe_global_batch(per_device: int, world: int, accumulation: int) -> tuple[int, str]:
    """(the global batch, a line saying how it is made): per-device batch x processes x accumulation steps."""
    total = per_device * world * accumulation
    return total, (f"global batch {total} = {per_device} per device x {world} process(es) x {accumulation} "
                   "accumulation step(s)")


def global_batch(training_args, world: int | None = None) -> tuple[int, str]:
    """:func:`describe_global_batch` of parsed arguments (``world``: default $WORLD_SIZE or 1)."""
    world = world if world is not None else int(os.environ.get("WORLD_SIZE") or 1)
    return describe_global_batch(training_args.per_device_train_batch_size, world,
                                 training_args.gradient_accumulation_steps)


def run_notices(argv: list[str]) -> list[str]:
    """train.py's first line for a recipe file (``configs/NAME.json``, main process only): the recipe's
    name and paper and its global batch, from the file and the flags that override it, before anything is
    checked (so it prints even where the recipe's data or GPU is missing); with the recipe's own
    ``global_batch`` when they differ. Every run also logs its global batch once it starts
    (:func:`simcse.training.run.build_trainer`)."""
    if os.environ.get("RANK", "0") != "0" or not argv or not argv[0].endswith(".json") or argv[0].startswith("-"):
        return []
    config, recipe = read_config(argv[0])
    if recipe is None:
        return []
    values = {"per_device_train_batch_size": config.get("per_device_train_batch_size", 8),
              "gradient_accumulation_steps": config.get("gradient_accumulation_steps", 1)}
    for i, token in enumerate(argv[1:], start=1):  # the flags after the file win, as in the parse
        name, _, inline = token.lstrip("-").partition("=")
        if token.startswith("--") and name in values:
            value = inline or (argv[i + 1] if i + 1 < len(argv) else "")
            values[name] = int(value) if value.isdigit() else values[name]
    total, line = describe_global_batch(values["per_device_train_batch_size"], int(os.environ.get("WORLD_SIZE") or 1),
                                        values["gradient_accumulation_steps"])
    if recipe.get("global_batch") not in (None, total):
        line += f" (the recipe's: {recipe['global_batch']})"
    name = recipe.get("name") or os.path.splitext(os.path.basename(argv[0]))[0]
    return [f"recipe {name}" + (f" ({recipe['paper']})" if recipe.get("paper") else "") + f"; {line}"]
