"""Gradient caching: the loss of a large batch in the memory of a small one.

Gao, Zhang, Han & Callan (2021), "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup", arXiv:2101.06983. A contrastive loss couples every pair of the batch, so the batch cannot be
split into independent micro-batches. Instead:

1. embed the batch in chunks of K examples WITHOUT gradient (activations freed after each chunk),
   remembering the random state each chunk started from;
2. compute the loss on all embeddings (gathered across processes under DDP) and its gradient
   g = ∂L/∂z with respect to the embeddings only: cheap, no encoder involved;
3. re-encode each chunk WITH gradient from its remembered random state, so dropout (the augmentation
   of unsupervised SimCSE) draws exactly the same masks, and back-propagate ⟨z_chunk, g_chunk⟩.

The parameter gradients equal those of one backward through the whole batch (tested to 1e-5 with
dropout on); peak activation memory is that of one chunk. The cost is a second forward pass.

Under DDP each process holds the same global loss; the gathered-with-gradient path gives each process
W·∂L/∂z_local and DDP averages, so here the local slice of g is multiplied by W to match. When each process
computes only its own rows' share of the loss, times W (``local_rows``), the gradients of all processes'
shares are summed (an all-reduce of g) before the local slice is taken: the same W·∂L/∂z_local. The MLM term,
when on, is a per-token mean over the whole batch, so each chunk's MLM loss is weighted by its share of
the masked tokens. The counts stay on the device (no host sync), and a non-finite MLM part gives NaN
gradients (:func:`~simcse.training.nonfinite.nan_gradient_if_nonfinite`), as a non-finite loss does on the
path without caching.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from simcse.distributed import gather_no_grad, rank, world_size
from simcse.training.nonfinite import nan_gradient_if_nonfinite

MLM_KEYS = ("mlm_input_ids", "mlm_labels", "mlm_positions")  # mlm_positions: optional (SimCSECollator's)


class RandomState:
    """The CPU random state and, for a CUDA device, that device's random state."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def split_batch(inputs: dict, chunk_size: int) -> list[dict]:
    """Split every tensor of a batch dict along dim 0 into chunks of ``chunk_size`` examples."""
    batch = next(v for v in inputs.values() if torch.is_tensor(v)).shape[0]
    return [{k: (v[s:s + chunk_size] if torch.is_tensor(v) else v) for k, v in inputs.items()}
            for s in range(0, batch, chunk_size)]


def cached_step(
    model: torch.nn.Module,
    inputs: dict,
    chunk_size: int,
    loss_of_embeddings: Callable[[torch.Tensor], torch.Tensor],
    backward: Callable[[torch.Tensor], None],
    forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    mlm_weight: float = 0.0,
    scale: float = 1.0,
    mlm_over_processes: bool = True,
    local_rows: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One gradient-cached training step; parameter gradients are accumulated by ``backward``.

    loss_of_embeddings: (B_global, N, H) float32 embeddings -> scalar contrastive loss.
    backward: called on each chunk's surrogate scalar (e.g. ``accelerator.backward``, which applies the
    fp16 loss scale). scale: multiplies every surrogate (1 / gradient-accumulation steps).
    mlm_over_processes: under DDP, the MLM mean over every process's masked tokens (False: over this
    process's own, DDP averaging the W means: princeton-nlp/SimCSE's, with ``ddp_original_gradient_scale``).
    local_rows: ``loss_of_embeddings`` returns this process's rows' share of the loss times W (not the whole
    loss), so its gradient with respect to the global embeddings is summed over the processes.
    Returns (total loss for logging, detached; the embeddings the loss saw (W·B, N, H), detached: the
    global batch under DDP, as on the path without caching).
    """
    chunks = split_batch(inputs, chunk_size)
    device = next(v for v in inputs.values() if torch.is_tensor(v)).device
    contrastive = [{k: v for k, v in c.items() if k not in MLM_KEYS} for c in chunks]

    # 1. Embed without gradient, remembering each chunk's random state.
    states, pieces = [], []
    with torch.no_grad():
        for chunk in contrastive:
            states.append(RandomState(device))
            with forward_context():
                pieces.append(model(**chunk).embeddings.float())
    local = torch.cat(pieces)  # (B, N, H)

    # 2. The loss on the (global) embeddings and its gradient with respect to them alone.
    z = gather_no_grad(local).detach().requires_grad_(True)  # (W·B, N, H)
    loss = loss_of_embeddings(z)
    (grad,) = torch.autograd.grad(loss, z)
    start = rank() * local.shape[0]
    if local_rows and world_size() > 1:  # Σ over processes of W·∂(share)/∂z = W·∂L/∂z
        torch.distributed.all_reduce(grad)
        local_grad = grad[start:start + local.shape[0]]
    else:
        local_grad = grad[start:start + local.shape[0]] * world_size()  # DDP will average over W processes
    grads = local_grad.split([p.shape[0] for p in pieces])

    # 3. Replay each chunk with gradient from its random state and back-propagate the cached gradient.
    use_mlm = mlm_weight > 0 and all(k in inputs for k in MLM_KEYS[:2])
    # Each chunk's MLM mean weighs masked / denominator: the denominator is this process's masked tokens,
    # or under DDP (all processes' masked tokens) / W, which DDP's averaging turns into the global mean.
    # Counts stay on the device: a chunk without masked tokens weighs 0.
    denominator = (inputs["mlm_labels"] != -100).sum().to(torch.float32).reshape(1) if use_mlm else None
    if use_mlm and world_size() > 1 and mlm_over_processes:
        torch.distributed.all_reduce(denominator)
        denominator = denominator.clamp_min(1) / world_size()
    elif use_mlm:
        denominator = denominator.clamp_min(1)
    mlm_total = torch.zeros((), device=device)
    for i, (chunk, state, g) in enumerate(zip(chunks if use_mlm else contrastive, states, grads)):
        state.restore()
        sync = contextlib.nullcontext() if (no_sync is None or i == len(chunks) - 1) else no_sync()
        with sync:
            with forward_context():
                out = model(**chunk)
            surrogate = (out.embeddings.float() * g).sum()
            if use_mlm and out.mlm_loss is not None:
                share = (chunk["mlm_labels"] != -100).sum() / denominator[0]
                mlm_part = nan_gradient_if_nonfinite(out.mlm_loss.float() * share)
                mlm_total = mlm_total + mlm_part.detach()
                surrogate = surrogate + mlm_weight * mlm_part
            backward(surrogate * scale)
    return (loss.detach() + mlm_weight * mlm_total) * scale, z.detach()
