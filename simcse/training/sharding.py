"""FSDP2 for any backbone: parameters, gradients and optimizer state sharded over the processes.

``train.py --fsdp full_shard`` under torchrun: :func:`shard_model` applies ``torch.distributed.fsdp.fully_shard``
(FSDP2, per-parameter sharding on a 1-D device mesh) to every transformer block of the backbone, then to
the whole model, so each process holds 1/W of every weight and gathers one block's weights at a time in
forward and backward. The contrastive part is unchanged: the embeddings are gathered with gradient as
under DDP, FSDP's reduce-scatter averages gradients over the W processes as DDP's all-reduce does, so the
steps equal one process's on the global batch (``tests/test_torchrun.py``).

The model carries ``_is_distributed_loading_by_transformers``, the flag transformers' Trainer reads for
a model that owns its placement and gradient reduction: it is not wrapped in DDP, gradient accumulation
defers the reduce-scatter (:func:`deferred_reduction`), and saving joins every process.

Checkpoints (:func:`save_sharded`, :func:`load_sharded`): the model's and the optimizer's shards through
``torch.distributed.checkpoint`` into ``checkpoint-N/sharded/`` (one file per process and the metadata),
nothing gathered; the final model is saved whole (:func:`full_state_dict`, gathered on rank 0).

Imports: torch and the foundation (the training layer's sibling modules use it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from simcse.errors import SimCSEError

SHARDED_DIR = "sharded"  # inside checkpoint-N


def check_engines(args) -> None:
    """The engine flags of ``args`` (a SimCSETrainingArguments) other than DDP, checked at parse time with
    the fix, not after the model has loaded.

    ``--fsdp`` (or ``--fsdp full_shard``) is our FSDP2 (:mod:`simcse.training.sharding`), not the
    Trainer's accelerate plugin (which needs GPUs): the flag is taken over here (``fsdp_shard``), and
    the Trainer saves only its own files in a checkpoint while the trainer writes the shards. DeepSpeed
    ZeRO-3 shards the parameters too, and gradient caching (which steps DeepSpeed's engine once per
    chunk) would break it: refused, naming FSDP.
    """
    args.fsdp_shard = False
    if args.fsdp:
        options = args.fsdp.split() if isinstance(args.fsdp, str) else [str(args.fsdp)]
        if options not in (["True"], ["true"], ["full_shard"]):
            raise SimCSEError(f"`fsdp` {args.fsdp!r} is not supported: `fsdp` (or `fsdp` full_shard) shards "
                              "every parameter with FSDP2; drop the other options")
        if int(os.environ.get("WORLD_SIZE", "1")) < 2:
            raise SimCSEError("`fsdp` shards the model over processes: launch it with torchrun --nproc_per_node N "
                              "train.py ... (N >= 2), or drop `fsdp`")
        if args.fp16 or args.deepspeed:
            raise SimCSEError(f"`fsdp` cannot be combined with `{'fp16' if args.fp16 else 'deepspeed'}` (FSDP2 "
                              "needs a sharded loss scaler; DeepSpeed shards on its own); use `bf16`, or drop one")
        args.fsdp_shard, args.fsdp, args.save_only_model = True, None, True
    if args.deepspeed:
        if _zero_stage(args.deepspeed) == 3:
            raise SimCSEError(f"`deepspeed` {args.deepspeed!r} uses ZeRO stage 3, which shards the parameters: "
                              "the dev evaluation and gradient caching would bypass the sharding; shard with "
                              "`fsdp` (FSDP2, torchrun), or use ZeRO stage 1 or 2")
        if not torch.cuda.is_available():
            raise SimCSEError(f"`deepspeed` {args.deepspeed!r} needs a CUDA GPU and none is visible; drop "
                              "the flag (use torchrun for several processes)")
        if args.grad_cache_mini_batch is not None:
            raise SimCSEError("`grad_cache_mini_batch` cannot be combined with `deepspeed` (DeepSpeed steps "
                              "the optimizer at every backward, i.e. once per chunk); drop one of the two")


def _zero_stage(deepspeed) -> int | None:
    """The ZeRO stage of a --deepspeed config (a JSON file path or a dict), None when unreadable."""
    config = deepspeed
    if isinstance(deepspeed, str):
        try:
            with open(deepspeed, encoding="utf-8") as handle:
                config = json.load(handle)
        except (OSError, ValueError):
            return None
    stage = (config.get("zero_optimization") or {}).get("stage") if isinstance(config, dict) else None
    return stage if isinstance(stage, int) else None


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The backbone's stack of transformer blocks: the ``nn.ModuleList`` holding the most parameters
    (``encoder.layer`` of BERT, ``h`` of GPT-2, ``layers`` of Llama/Qwen/ModernBERT, ...)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no stack of layers (nn.ModuleList) to shard")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def shard_model(model: nn.Module, device: torch.device) -> tuple[int, int, int]:
    """Shard ``model`` in place over the default process group: each transformer block, then the rest
    (embeddings, pooler, heads; tied weights stay tied in the root group). Returns (blocks, parameters this
    process holds, parameters of the model)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    model.to(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    blocks = transformer_blocks(model)
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if hasattr(model, "encode"):  # the dev evaluation's entry point: gathers the root's weights as forward does
        register_fsdp_forward_method(model, "encode")
    model._is_distributed_loading_by_transformers = True  # read by the Trainer: it neither wraps nor re-shards it
    held = sum(p.to_local().numel() for p in model.parameters())
    return len(blocks), held, sum(p.numel() for p in model.parameters())


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextmanager
def deferred_reduction(model: nn.Module) -> Iterator[None]:
    """FSDP's ``no_sync``: gradients accumulate unsharded in the block, reduce-scattered at the next synced
    backward (the last chunk of gradient caching, the last micro-batch of accumulation). Nested (gradient
    caching's chunks inside a deferred micro-batch of accumulation), only the outermost one syncs again."""
    depth = getattr(model, "_simcse_deferrals", 0)
    model._simcse_deferrals = depth + 1
    if depth == 0:
        model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model._simcse_deferrals = depth
        if depth == 0:
            model.set_requires_gradient_sync(True)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0's CPU (every process must call it: it gathers); {} elsewhere."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(folder: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every process writes its shards of the model and the optimizer state into ``folder/sharded``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=os.path.join(folder, SHARDED_DIR))


def has_sharded(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, SHARDED_DIR, ".metadata"))


def load_sharded(folder: str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 weights: bool = True) -> None:
    """Load the shards :func:`save_sharded` wrote into ``model`` (unless ``weights`` is False) and into
    ``optimizer``'s state when given."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = {"model": get_model_state_dict(model)} if weights else {}
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    dcp.load(state, checkpoint_id=os.path.join(folder, SHARDED_DIR))
    if weights:
        set_model_state_dict(model, state["model"])
    if optimizer is not None:  # parameters that never had a gradient have no state: not strict
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=StateDictOptions(strict=False))
