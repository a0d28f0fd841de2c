"""Global negatives under DDP: 2 processes x batch b give the loss and gradients of 1 process x batch 2b,
for every registered loss (with 1 and 2 hard negatives per anchor where it takes them), with and without
gradient caching (torch.distributed, gloo, CPU)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_gradcache import NUM_SENT_CASES, B, batch, loss_of, tiny_model

from simcse.cli import run_cli
from simcse.distributed import gather_with_grad, process_group_teardown
from simcse.errors import SimCSEError
from simcse.losses import build_loss
from simcse.training.gradcache import cached_step

WORLD = 2


def single_process(name: str, num_sent: int) -> tuple[torch.Tensor, dict]:
    model = tiny_model(dropout=0.0)
    loss = loss_of(build_loss(name))(model(**batch(num_sent)).embeddings.float())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def local_half(inputs: dict, rank: int) -> dict:
    half = B // WORLD
    return {k: v[rank * half:(rank + 1) * half] for k, v in inputs.items()}


def average_grads(model) -> dict:
    """What DDP does after backward: average every parameter gradient over the processes."""
    out = {}
    for n, p in model.named_parameters():
        if p.grad is not None:
            g = p.grad.clone()
            dist.all_reduce(g)
            out[n] = g / WORLD
    return out


def worker(rank: int, port: int, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    results = {}
    try:
        for name, num_sent in NUM_SENT_CASES:
            loss_fn = build_loss(name)
            inputs = local_half(batch(num_sent), rank)
            model = tiny_model(dropout=0.0)
            z = gather_with_grad(model(**inputs).embeddings.float())
            loss = loss_of(loss_fn)(z)
            loss.backward()
            results[f"{name}-{num_sent}"] = (loss.detach(), average_grads(model))
            model = tiny_model(dropout=0.0)
            cached_loss, _ = cached_step(model, inputs, 2, loss_of(loss_fn), backward=lambda t: t.backward())
            results[f"{name}-{num_sent}+gradcache"] = (cached_loss, average_grads(model))
    finally:
        dist.destroy_process_group()
    torch.save(results, os.path.join(result_dir, f"rank{rank}.pt"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    result_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(free_port(), str(result_dir)), nprocs=WORLD, join=True)
    return [torch.load(result_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["", "+gradcache"])
@pytest.mark.parametrize("name, num_sent", NUM_SENT_CASES, ids=[f"{n}-{k}" for n, k in NUM_SENT_CASES])
def test_two_processes_equal_one_process_with_the_double_batch(name, num_sent, cache, ddp_results):
    ref_loss, ref_grads = single_process(name, num_sent)
    for rank_results in ddp_results:
        loss, grads = rank_results[f"{name}-{num_sent}{cache}"]
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
        assert grads.keys() == ref_grads.keys()
        for key in ref_grads:
            torch.testing.assert_close(grads[key], ref_grads[key], rtol=1e-4, atol=1e-5, msg=f"{name}{cache} {key}")


def _one_process_group(store) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)


def test_teardown_destroys_the_group_started_inside_on_success_and_on_error(tmp_path):
    """The entry points' teardown (simcse.cli.run_cli): a group the run started is gone afterwards, whether
    the run returned or raised (the exception still propagates)."""
    assert not dist.is_initialized()
    with process_group_teardown():
        _one_process_group(tmp_path / "a.store")
        assert dist.is_initialized()
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="boom"), process_group_teardown():
        _one_process_group(tmp_path / "b.store")
        raise RuntimeError("boom")
    assert not dist.is_initialized()


def test_teardown_leaves_a_group_it_did_not_start(tmp_path):
    _one_process_group(tmp_path / "store")
    try:
        with process_group_teardown():
            pass
        assert dist.is_initialized()  # the caller's group: theirs to end
    finally:
        dist.destroy_process_group()


def test_run_cli_tears_the_group_down_after_a_user_error(tmp_path):
    def main(argv):
        _one_process_group(tmp_path / "store")
        raise SimCSEError("bad flag")

    assert run_cli(main, [], prog="x") == 2
    assert not dist.is_initialized()


def test_scale_gradient_scales_only_the_gradient():
    from simcse.distributed import scale_gradient

    x = torch.randn(3, 4, requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(12.0).view(3, 4)).sum().backward()
    assert torch.allclose(x.grad, 0.25 * torch.arange(12.0).view(3, 4))
