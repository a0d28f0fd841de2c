"""Gradient caching equals one backward through the whole batch, for every loss, with dropout ON."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

from helpers import slow_except_first
from simcse.losses import LOSSES, build_loss
from simcse.modeling.models import BertForCL, configure
from simcse.training import gradcache
from simcse.training.gradcache import cached_step, split_batch

B, L, CHUNK = 8, 10, 2


def tiny_model(dropout: float, do_mlm: bool = False) -> BertForCL:
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=32, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    configure(config, pooler_type="cls", do_mlm=do_mlm)
    torch.manual_seed(0)
    return BertForCL(config).train()


def batch(num_sent: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (B, num_sent, L), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, :, 7:] = 0  # some padding
    if num_sent >= 2:
        ids[:, 1] = ids[:, 0]  # unsupervised-style: the positive is the same sentence, dropout makes it differ
    return {"input_ids": ids * mask, "attention_mask": mask}


def loss_of(loss_fn):
    def loss(z):
        # Graded losses: a fixed score per row of the (global) batch, so a DDP rank sees the global scores.
        extras = {"scores": (torch.arange(z.shape[0]) * 7 % 5).float()} if loss_fn.needs_scores else {}
        if loss_fn.needs_guide:  # the model guiding itself: a detached copy, the same on every DDP rank
            extras["guide"] = z.detach()
        # (B, 2 + K, H): anchor, positive and K hard negatives, handed over as the trainer does
        return loss_fn(z[:, 0], z[:, 1], z[:, 2:] if z.shape[1] > 2 else None, **extras)

    return loss


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def reference(model, inputs, loss_fn, seed: int = 7) -> tuple[torch.Tensor, dict]:
    """The uncached computation with the same chunked forwards (so dropout draws the same masks)."""
    model.zero_grad()
    torch.manual_seed(seed)
    z = torch.cat([model(**chunk).embeddings.float() for chunk in split_batch(inputs, CHUNK)])
    loss = loss_of(loss_fn)(z)
    loss.backward()
    return loss.detach(), grads(model)


def cached(model, inputs, loss_fn, seed: int = 7, **kwargs) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    torch.manual_seed(seed)
    loss, _ = cached_step(model, inputs, CHUNK, loss_of(loss_fn), backward=lambda t: t.backward(), **kwargs)
    return loss, grads(model)


def assert_same(a: tuple, b: tuple) -> None:
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
    assert a[1].keys() == b[1].keys() and a[1]
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=1e-4, atol=1e-5, msg=name)


def sentence_counts(name: str) -> tuple[int, ...]:
    """Sentences per example a loss is tested with: pairs, and 1 or 2 hard negatives where it takes them."""
    return (2, 3, 4) if LOSSES[name].supports_hard_negatives else (2,)


NUM_SENT_CASES = [(name, n) for name in sorted(LOSSES) for n in sentence_counts(name)]


@pytest.mark.parametrize("name, num_sent", slow_except_first(NUM_SENT_CASES, [f"{n}-{k}" for n, k in NUM_SENT_CASES]))
def test_cached_equals_uncached_with_dropout_on(name, num_sent):
    model = tiny_model(dropout=0.1)
    loss_fn = build_loss(name)
    inputs = batch(num_sent)
    assert_same(cached(model, inputs, loss_fn), reference(model, inputs, loss_fn))


def test_dropout_really_differs_between_views_and_replay_matters(monkeypatch):
    model = tiny_model(dropout=0.1)
    z = model(**batch(2)).embeddings
    assert not torch.allclose(z[:, 0], z[:, 1])  # dropout is on: the views differ
    loss_fn = build_loss("infonce")
    monkeypatch.setattr(gradcache.RandomState, "restore", lambda self: None)  # no replay
    broken = cached(model, batch(2), loss_fn)
    ref = reference(model, batch(2), loss_fn)
    assert not all(torch.allclose(broken[1][n], ref[1][n], atol=1e-5) for n in ref[1])


@pytest.mark.parametrize("positions", [True, False], ids=["collator_positions", "every_position"])
def test_mlm_term_is_weighted_by_masked_tokens(positions):
    """Chunks hold unequal numbers of masked tokens (chunk 3 none): each chunk's MLM mean weighs its share."""
    from simcse.data.collating import masked_positions

    model = tiny_model(dropout=0.0, do_mlm=True)
    inputs = batch(2)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:3, :, 1:4] = inputs["input_ids"][:3, :, 1:4]  # masked tokens unevenly spread over chunks
    labels[6, 0, 2] = inputs["input_ids"][6, 0, 2]
    inputs = {**inputs, "mlm_input_ids": inputs["input_ids"].clone(), "mlm_labels": labels}
    if positions:
        inputs["mlm_positions"] = masked_positions(labels)
    loss_fn = build_loss("infonce")
    model.zero_grad()
    out = model(**inputs)  # dropout off: one forward of the whole batch is the reference
    total = loss_of(loss_fn)(out.embeddings.float()) + 0.1 * out.mlm_loss
    total.backward()
    assert_same(cached(model, inputs, loss_fn, mlm_weight=0.1), (total.detach(), grads(model)))
