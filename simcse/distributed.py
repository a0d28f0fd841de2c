"""Global negatives under torchrun/DDP: gather every process's embeddings WITH gradient.

Each process computes the loss of the global batch (its anchors and every other process's); the
gather's backward sums the gradient slices of all processes, and DDP averages parameter gradients
over the W processes, so each process ends with exactly the gradient of the global-batch loss (a run on
W processes x batch b equals one process x batch W·b, dropout aside).

The original SimCSE (princeton-nlp/SimCSE ``simcse/models.py``) gathered without gradient and put the
local slice back: each process also held the whole global loss, but back-propagated only through its own
rows, and DDP then averaged over the W processes, so its contrastive gradient was the global-batch
gradient divided by W. Its 4-GPU runs therefore clipped at an effective 4 x ``max_grad_norm`` relative
to ours, and its MLM term (a per-process mean, averaged) weighed W times more against the contrastive
one. ``--ddp_original_gradient_scale`` reproduces that (:func:`scale_gradient` by 1/W on the contrastive
loss, and the MLM term each process's own mean); by default the gradient is the exact one, the MLM term
the mean over the global batch's masked tokens.

:func:`process_group_teardown` ends a run's process group on every exit path of an entry point.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def scale_gradient(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    """``tensor`` unchanged forward; its gradient multiplied by ``factor`` backward."""
    return _ScaleGradient.apply(tensor, factor)


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather_with_grad` but without autograd (the first pass of gradient caching)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@contextmanager
def process_group_teardown() -> Iterator[None]:
    """Destroy the default process group (if one was started inside) when the block exits, on every path.

    The Trainer starts the group under torchrun and never ends it. Left to interpreter shutdown, gloo's
    worker threads can outlive the interpreter and abort the process (``terminate called without an active
    exception``, SIGABRT) after a run that finished and saved its model, so torchrun reports it FAILED.
    On success every process first waits at a barrier (no process tears down while another still talks
    to it), then destroys the group; on an exception the group is destroyed without a barrier (the other
    processes may never reach one; their next collective fails and they exit too) and the exception
    propagates. A group that existed before the block is the caller's and is left alone.
    """
    owned_before = dist.is_available() and dist.is_initialized()
    try:
        yield
    except BaseException:
        _destroy(owned_before, wait=False)
        raise
    _destroy(owned_before, wait=True)


def _destroy(owned_before: bool, wait: bool) -> None:
    if owned_before or not (dist.is_available() and dist.is_initialized()):
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()
