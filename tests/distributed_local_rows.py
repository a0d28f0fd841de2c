"""Worker of tests/test_torchrun.py's local-rows test, one per process under ``torchrun --nproc_per_node W``.

Every process builds the same float64 global batch (fixed seed), keeps its own slice of rows as its
"encoder output", gathers the global batch with gradient (simcse.distributed, as the trainer does) and
computes ITS ROWS' share of each loss times W (:func:`simcse.losses.tiled.row_local_form`, as the trainer
does under DDP), then back-propagates. It writes, per case: the all-reduced value / W (the global loss),
the gradient of its own rows (W x ∂L/∂z_local before DDP's average over W), and the matrix-product FLOPs of
the local share's forward and backward next to those of the same form on every row and of the plain loss,
both on the whole batch in this process.

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_local_rows.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.flop_counter import FlopCounterMode

from simcse.distributed import gather_with_grad, rank, world_size
from simcse.losses import LOSSES, build_loss
from simcse.losses.tiled import LOCAL_ROWS, MASKED, row_local_form

BATCH, WIDTH = 12, 16  # global batch
VARIANTS = {"infonce": {"symmetric": True, "hard_negative_weight": 0.4}, "dcl": {"symmetric": True,
            "same_view_negatives": True}, "dhel": {}, "nt_xent": {}, "dcl_pos": {"temp": 1.0},
            "arccon": {"margin": 10.0}, "kcl": {}, "met": {}, "mpt": {}, "mat": {}}


def cases() -> list[tuple[str, dict, int, bool]]:
    """(loss, hyperparameters, hard negatives per anchor, masked) for every local-rows loss."""
    out = []
    for name in LOCAL_ROWS:
        for k in ((0, 2) if LOSSES[name].supports_hard_negatives else (0,)):
            out.append((name, VARIANTS[name], k, False))
        if name in MASKED:
            out.append((name, VARIANTS[name], 0, True))
    return out


def global_batch(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(BATCH, 2 + k, WIDTH) embeddings and (BATCH, 2 + k) text keys with duplicates across the halves."""
    g = torch.Generator().manual_seed(11 + k)
    z = torch.randn(BATCH, 2 + k, WIDTH, generator=g, dtype=torch.float64)
    z[:, 1] = z[:, 0] + 0.7 * z[:, 1]
    keys = torch.randint(0, 9, (BATCH, 2 + k), generator=g)
    return z, keys


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    w, r = world_size(), rank()
    rows = BATCH // w
    results = []
    for name, hp, k, masked in cases():
        z, keys = global_batch(k)
        loss_fn = build_loss(name, **hp)
        local_form = row_local_form(loss_fn, keys=masked)
        extra = {"keys": keys} if masked else {}
        mine = z[r * rows:(r + 1) * rows].clone().requires_grad_(True)  # this process's encoder output

        def share(mine=mine, local_form=local_form, extra=extra, k=k):
            full = gather_with_grad(mine)  # (BATCH, 2 + k, WIDTH), gradient back to every process's rows
            part = local_form(full[:, 0], full[:, 1], full[:, 2:] if k else None,
                              rows=(r * rows, (r + 1) * rows), **extra) * w
            part.backward()
            return part.detach()

        local_flops = flops(share)
        with torch.no_grad():
            value = local_form(z[:, 0], z[:, 1], z[:, 2:] if k else None, rows=(r * rows, (r + 1) * rows), **extra)
        dist.all_reduce(value)
        counts = {}
        for form, label in ((loss_fn, "plain_flops"), (local_form, "whole_flops")):  # every row, one process
            whole = z.clone().requires_grad_(True)
            counts[label] = flops(lambda whole=whole, form=form, extra=extra, k=k: form(
                whole[:, 0], whole[:, 1], whole[:, 2:] if k else None, **extra).backward())
        results.append({"name": name, "hparams": hp, "k": k, "masked": masked, "value": value.item(),
                        "grad": mine.grad.tolist(), "local_flops": local_flops, **counts})
    Path(out_dir, f"rank{r}.json").write_text(json.dumps(results), encoding="utf-8")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
