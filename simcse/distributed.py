"""Global negatives under torchrun/DDP: gather every process's embeddings WITH gradient.

Each process computes the loss of the global batch (its anchors and every other process's); the
gather's backward sums the gradient slices of all processes, and DDP averages parameter gradients
over the W processes, so each process ends with exactly the gradient of the global-batch loss (a run on
W processes x batch b equals one process x batch W·b, dropout aside). The original SimCSE gathered
without gradient and put the local slice back, which scales the negatives' gradient by 1/W.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (B, ...) from every process along dim 0 -> (W·B, ...), differentiably.

    Rank order is preserved, so row i of rank r lands at r·B + i on every process. All processes must
    pass the same shape (the Trainer's samplers give equal batches; use ``dataloader_drop_last``).
    """
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor.contiguous())


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward: the sum over processes of the gradient of this process's rows.

    Every process computes the loss of the whole gathered batch, so the gradient of rows r·B..(r+1)·B
    is the sum of what all processes back-propagate into them: an all-reduce of the full gradient, then
    this process's slice (gloo has no reduce-scatter; the tensor is the batch's embeddings, small).
    Built on the public ``dist.all_gather`` / ``dist.all_reduce``, which replace the deprecated
    ``torch.distributed.nn.functional.all_gather``.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor)
        ctx.rows = tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # reduced in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.rows
        return grad[start:start + ctx.rows]


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather_with_grad` but without autograd (the first pass of gradient caching)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)
