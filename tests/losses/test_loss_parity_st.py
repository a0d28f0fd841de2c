"""Parity with sentence-transformers' own implementations on the same embeddings (values and gradients).

InfoNCE is sentence-transformers' ``MultipleNegativesRankingLoss`` with scale = 1/τ: pairs, several hard
negatives per anchor (their candidates: positives, then every anchor's first negative, then every
anchor's second, ...; our k-major flattening), and the symmetric form
(``MultipleNegativesSymmetricRankingLoss``). The embeddings are handed over directly through
``compute_loss_from_embeddings``, so no encoder is involved.
"""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import losses as st_losses  # requirements-dev
from torch import nn

from simcse.losses import build_loss

B, H = 6, 8


def _embeddings(seed: int, k: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, generator=g, dtype=torch.float64) for _ in range(2 + k)]


def _value_and_grads(fn, zs):
    leaves = [z.clone().requires_grad_(True) for z in zs]
    value = fn(leaves)
    return value, torch.autograd.grad(value, leaves)


def _assert_equal(ours, theirs):
    (value, grads), (st_value, st_grads) = ours, theirs
    torch.testing.assert_close(value, st_value, rtol=1e-6, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in st_grads)
    for g, st_g in zip(grads, st_grads):
        torch.testing.assert_close(g, st_g, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("temp", [0.05, 0.3])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_infonce_is_multiple_negatives_ranking_loss(k, temp):
    zs = _embeddings(seed=10 * k + int(100 * temp), k=k)
    st = st_losses.MultipleNegativesRankingLoss(nn.Identity(), scale=1 / temp)
    ours_fn = build_loss("infonce", temp=temp)

    def ours(z):
        z3 = torch.stack(z[2:], dim=1) if k else None  # (B, K, H): anchor i's k-th negative at [i, k]
        return ours_fn(z[0], z[1], z3)

    _assert_equal(_value_and_grads(ours, zs), _value_and_grads(lambda z: st.compute_loss_from_embeddings(z, None), zs))


@pytest.mark.parametrize("k", [0, 2])
def test_symmetric_infonce_is_multiple_negatives_symmetric_ranking_loss(k):
    zs = _embeddings(seed=5 + k, k=k)
    st = st_losses.MultipleNegativesSymmetricRankingLoss(nn.Identity(), scale=20.0)
    ours_fn = build_loss("infonce", temp=0.05, symmetric=True)

    def ours(z):
        return ours_fn(z[0], z[1], torch.stack(z[2:], dim=1) if k else None)

    _assert_equal(_value_and_grads(ours, zs), _value_and_grads(lambda z: st.compute_loss_from_embeddings(z, None), zs))


@pytest.mark.parametrize("name", ["infonce", "dcl", "dcl_pos", "arccon"])
def test_one_hard_negative_as_b_k_h_equals_the_b_h_form(name):
    z1, z2, z3 = _embeddings(seed=3, k=1)
    loss_fn = build_loss(name)
    torch.testing.assert_close(loss_fn(z1, z2, z3.unsqueeze(1)), loss_fn(z1, z2, z3), rtol=0, atol=0)


def test_several_hard_negatives_equal_infonce_over_the_stacked_candidates():
    z1, z2, *negs = _embeddings(seed=4, k=3)
    x, y = nn.functional.normalize(z1, dim=1), nn.functional.normalize(z2, dim=1)
    cands = torch.cat([y] + [nn.functional.normalize(n, dim=1) for n in negs])  # (4B, H)
    logits = x @ cands.T / 0.05
    own = torch.zeros_like(logits)
    for k in range(3):
        own[torch.arange(B), B + k * B + torch.arange(B)] = 0.7  # the weight lands on each own negative
    expected = nn.functional.cross_entropy(logits + own, torch.arange(B))
    got = build_loss("infonce", temp=0.05, hard_negative_weight=0.7)(z1, z2, torch.stack(negs, dim=1))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("temp", [0.05, 0.2])
@pytest.mark.parametrize("width", [8, 7])
@pytest.mark.parametrize("name", ["cosent", "angle"])
def test_graded_losses_are_cosent_and_angle_loss(name, width, temp):
    g = torch.Generator().manual_seed(width)
    zs = [torch.randn(B, width, generator=g, dtype=torch.float64) for _ in range(2)]
    scores = torch.tensor([0.5, 3.0, 1.2, 3.0, 4.8, 0.0], dtype=torch.float64)  # one tie
    st = {"cosent": st_losses.CoSENTLoss, "angle": st_losses.AnglELoss}[name](nn.Identity(), scale=1 / temp)
    ours = build_loss(name, temp=temp)
    _assert_equal(_value_and_grads(lambda z: ours(z[0], z[1], scores=scores), zs),
                  _value_and_grads(lambda z: st.compute_loss_from_embeddings(z, scores), zs))


def test_graded_losses_use_only_the_order_of_the_scores():
    zs = _embeddings(seed=2, k=0)
    scores = torch.tensor([0.5, 3.0, 1.2, 3.0, 4.8, 0.0], dtype=torch.float64)
    for name in ("cosent", "angle"):
        loss_fn = build_loss(name)
        torch.testing.assert_close(loss_fn(*zs, scores=scores), loss_fn(*zs, scores=torch.exp(scores) - 7))
        assert loss_fn(*zs, scores=torch.full_like(scores, 2.0)).item() == 0.0  # all tied: nothing to order


class _FixedEmbeddings(nn.Module):
    """A stand-in model for sentence-transformers' wrappers: each feature dict carries its embedding."""

    def forward(self, features):
        return {**features, "sentence_embedding": features["embedding"]}

    def get_embedding_dimension(self):
        return H

    def _get_untruncated_embedding_dimension(self):  # asked by sentence-transformers >= 6 (MatryoshkaLoss)
        return H


@pytest.mark.parametrize("name, k", [("infonce", 0), ("infonce", 2)])
def test_matryoshka_is_matryoshka_loss(name, k):
    from simcse.losses.matryoshka import MatryoshkaLoss

    zs = _embeddings(seed=21 + k, k=k)
    dims, weights = [8, 4, 2], [1.0, 0.5, 2.0]
    model = _FixedEmbeddings()
    st = st_losses.MatryoshkaLoss(model, st_losses.MultipleNegativesRankingLoss(model, scale=20.0), dims, weights)
    ours_fn = MatryoshkaLoss(build_loss(name, temp=0.05), dims, weights)

    def ours(z):
        return ours_fn(z[0], z[1], torch.stack(z[2:], dim=1) if k else None)

    def theirs(z):
        return st([{"embedding": column} for column in z], None)

    _assert_equal(_value_and_grads(ours, zs), _value_and_grads(theirs, zs))


def test_matryoshka_validates_and_reports():
    from simcse.errors import SimCSEError
    from simcse.losses.matryoshka import MatryoshkaLoss

    wrapped = MatryoshkaLoss(build_loss("dcl"), [8, 4])
    assert wrapped.hparams() == {**build_loss("dcl").hparams(), "matryoshka_dims": [8, 4],
                                 "matryoshka_weights": [1.0, 1.0]}
    z1, z2 = _embeddings(seed=1, k=0)
    torch.testing.assert_close(wrapped(z1, z2), build_loss("dcl")(z1, z2) + build_loss("dcl")(z1[:, :4], z2[:, :4]))
    with pytest.raises(SimCSEError, match="exceed the embedding width 8"):
        MatryoshkaLoss(build_loss("infonce"), [16])(z1, z2)
    with pytest.raises(SimCSEError, match="one per dim"):
        MatryoshkaLoss(build_loss("infonce"), [8, 4], [1.0])


class _FixedGuide(nn.Module):
    """The guide's stand-in: each feature dict also carries the guide's embedding of that column."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer, self.max_seq_length = tokenizer, 32

    def forward(self, features):
        return {**features, "sentence_embedding": features["guide"]}


@pytest.mark.parametrize("hparams", [
    {},
    {"margin": 0.1},
    {"margin": 0.3, "margin_strategy": "relative"},
    {"contrast_anchors": False, "contrast_positives": False, "temp": 0.05},
])
@pytest.mark.parametrize("k", [0, 1])
def test_gist_is_gist_embed_loss(k, hparams):
    from transformers import AutoTokenizer

    from helpers import tokenizer_path

    zs = _embeddings(seed=40 + k, k=k)
    g = torch.Generator().manual_seed(41 + k)
    # A guide of another width that agrees with the model only roughly, so some candidates are dropped
    # and others kept: the guide's views are noisy copies of the anchors (paraphrases as it sees them).
    base = torch.randn(B, 5, generator=g, dtype=torch.float64)
    guide = torch.stack([base, base + 0.6 * torch.randn(B, 5, generator=g, dtype=torch.float64)]
                        + [torch.randn(B, 5, generator=g, dtype=torch.float64) for _ in range(k)], dim=1)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path("bert-base-uncased"))
    model, guide_model = _FixedEmbeddings(), _FixedGuide(tokenizer)
    model.tokenizer, model.max_seq_length = tokenizer, 32
    st_kwargs = {("temperature" if key == "temp" else key): value for key, value in hparams.items()}
    st = st_losses.GISTEmbedLoss(model, guide_model, **st_kwargs)
    ours_fn = build_loss("gist", **hparams)

    def ours(z):
        return ours_fn(z[0], z[1], z[2] if k else None, guide=guide)

    def theirs(z):
        return st([{"embedding": column, "guide": guide[:, c]} for c, column in enumerate(z)], None)

    _assert_equal(_value_and_grads(ours, zs), _value_and_grads(theirs, zs))
    # The guide really filters here: some in-batch candidates are dropped, so plain InfoNCE differs.
    guided_positive = torch.nn.functional.cosine_similarity(guide[:, 0], guide[:, 1])
    guided = torch.nn.functional.cosine_similarity(guide[:, 0].unsqueeze(1), guide[:, 1].unsqueeze(0), dim=-1)
    assert (guided > guided_positive.unsqueeze(1)).any()


@pytest.mark.parametrize("with_dims", [True, False], ids=["2d", "layers-only"])
@pytest.mark.parametrize("k", [0, 1])
def test_matryoshka_2d_is_matryoshka2d_loss(tmp_path, k, with_dims):
    """On a real (tiny, random, float64, dropout-free) sentence-transformers model: the same layers pooled
    by us feed our wrapper; values and parameter gradients equal sentence-transformers' loss, with every
    layer and every width in each step (its defaults sample one of each per step)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer

    from helpers import save_tiny_model
    from simcse.losses.matryoshka import Matryoshka2dLoss, MatryoshkaLoss
    from simcse.modeling.poolers import pool

    body = Transformer(str(save_tiny_model(tmp_path / "bert", "bert")))
    model = SentenceTransformer(modules=[body, Pooling(body.get_word_embedding_dimension(), "mean")]).double().eval()
    columns = [[f"a man plays {i} songs" for i in range(B)], [f"someone plays music {i}" for i in range(B)],
               [f"the stock {i} fell sharply today" for i in range(B)]][: 2 + k]
    features = [model.tokenize(column) for column in columns]
    dims, weights = [32, 16, 8], [1.0, 0.5, 2.0]
    inner = st_losses.MultipleNegativesRankingLoss(model, scale=20.0)
    hparams = {"last_layer_weight": 1.5, "prior_layers_weight": 0.7, "kl_div_weight": 2.0, "kl_temperature": 0.3}
    if with_dims:
        st = st_losses.Matryoshka2dLoss(model, inner, dims, weights, n_layers_per_step=-1, n_dims_per_step=-1,
                                        **hparams)
        ours_fn = Matryoshka2dLoss(MatryoshkaLoss(build_loss("infonce"), dims, weights), n_layers_per_step=-1,
                                   **hparams)
    else:
        st = st_losses.AdaptiveLayerLoss(model, inner, n_layers_per_step=-1, **hparams)
        ours_fn = Matryoshka2dLoss(build_loss("infonce"), n_layers_per_step=-1, **hparams)
    params = [p for p in model.parameters() if p.requires_grad]

    def grads_of(loss):
        return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)

    theirs = grads_of(st([dict(f) for f in features], None))
    per_column = []
    for f in features:
        out = model[0].auto_model(input_ids=f["input_ids"], attention_mask=f["attention_mask"],
                                  token_type_ids=f.get("token_type_ids"), output_hidden_states=True)
        per_column.append(torch.stack([pool("avg", f["attention_mask"], h) for h in out.hidden_states], dim=1))
    z = torch.stack(per_column, dim=1)  # (B, N, L + 1, H)
    ours = grads_of(ours_fn(z[:, 0, -1], z[:, 1, -1], z[:, 2, -1] if k else None, layers=z[:, :, :-1]))
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-6, atol=1e-6)
    final_only = 1.5 * ours_fn.loss(z[:, 0, -1], z[:, 1, -1], z[:, 2, -1] if k else None)
    assert abs(ours[0].item() - final_only.item()) > 1e-3  # the earlier layers' and KL terms count
    assert sum(g.abs().sum() for g in theirs[1] if g is not None) > 0
    for g, st_g in zip(ours[1], theirs[1]):
        if st_g is None:
            assert g is None or g.abs().sum() == 0
        else:
            torch.testing.assert_close(g, st_g, rtol=1e-6, atol=1e-6)
