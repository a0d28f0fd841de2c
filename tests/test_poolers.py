"""Every pooler against a hand computation, with padding present."""

from __future__ import annotations

import pytest
import torch

from simcse.errors import SimCSEError
from simcse.modeling.poolers import (
    ALL_POOLERS,
    DECODER_POOLERS,
    ENCODER_POOLERS,
    NEEDS_HIDDEN_STATES,
    POOLER_HELP,
    POOLERS,
    ST_POOLING_MODE,
    ST_POOLING_TO_POOLER,
    check_pooler,
    layer_weights,
    masked_mean,
    pool,
    uses_mlp_head,
)

# Two sentences: lengths 3 and 1, padded to 4 (right padding).
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])


def states(seed: int) -> torch.Tensor:
    return torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(seed))  # (B, T, H)


def hand_mean(h: torch.Tensor, row: int) -> torch.Tensor:
    n = int(MASK[row].sum())
    return sum(h[row, t] for t in range(n)) / n


# One row per pooler: fits encoders, fits decoders, needs hidden states, MLP head, sentence-transformers mode.
FACTS = {
    "cls": (True, False, False, True, "cls"),
    "cls_before_pooler": (True, False, False, False, "cls"),
    "avg": (True, True, False, False, "mean"),
    "avg_top2": (True, False, True, False, "mean"),
    "avg_first_last": (True, False, True, False, "mean"),
    "wavg": (False, True, False, False, "weightedmean"),
    "last": (False, True, False, False, "lasttoken"),
}


def test_registry_lists_every_pooler():
    assert set(POOLERS) == set(ALL_POOLERS) == set(FACTS)


@pytest.mark.parametrize("name", sorted(FACTS))
def test_every_list_is_derived_from_the_records(name):
    encoder, decoder, hidden, head, st_mode = FACTS[name]
    assert (name in ENCODER_POOLERS, name in DECODER_POOLERS) == (encoder, decoder)
    assert (name in NEEDS_HIDDEN_STATES, uses_mlp_head(name), ST_POOLING_MODE[name]) == (hidden, head, st_mode)
    assert f"{name}: " in POOLER_HELP


def test_sentence_transformers_modes_map_back_to_last_layer_headless_poolers():
    assert ST_POOLING_TO_POOLER == {"cls": "cls_before_pooler", "mean": "avg", "weightedmean": "wavg",
                                    "lasttoken": "last"}


@pytest.mark.parametrize("num_layers", [1, 2, 4])
@pytest.mark.parametrize("name", sorted(NEEDS_HIDDEN_STATES))
def test_layer_weights_reproduce_the_layer_mix(name, num_layers):
    """The export's WeightedLayerPooling (weighted mean of hidden_states[start:]) equals our pooler."""
    layers = [states(20 + i) for i in range(num_layers + 1)]
    start, weights = layer_weights(name, num_layers)
    mixed = sum(w * h for w, h in zip(weights, layers[start:], strict=True)) / weights.sum()
    torch.testing.assert_close(masked_mean(mixed, MASK), pool(name, MASK, layers[-1], layers))
    assert layer_weights("avg", num_layers) is None


@pytest.mark.parametrize("name", ["cls", "cls_before_pooler"])
def test_cls_takes_first_token(name):
    h = states(0)
    assert torch.equal(pool(name, MASK, h), h[:, 0])


def test_avg_ignores_padding():
    h = states(1)
    out = pool("avg", MASK, h)
    for row in range(2):
        torch.testing.assert_close(out[row], hand_mean(h, row))


def test_avg_top2_and_first_last_use_the_right_layers():
    layers = [states(s) for s in range(10, 15)]  # embeddings, layer 1, ..., layer 4
    out_top2 = pool("avg_top2", MASK, layers[-1], layers)
    out_fl = pool("avg_first_last", MASK, layers[-1], layers)
    for row in range(2):
        torch.testing.assert_close(out_top2[row], (hand_mean(layers[-1], row) + hand_mean(layers[-2], row)) / 2)
        # index 1 = first transformer layer, not the embeddings (the 2021 bug)
        torch.testing.assert_close(out_fl[row], (hand_mean(layers[1], row) + hand_mean(layers[-1], row)) / 2)
        assert not torch.allclose(out_fl[row], (hand_mean(layers[0], row) + hand_mean(layers[-1], row)) / 2)


def test_wavg_weights_are_positions_inside_the_sentence():
    h = states(2)
    out = pool("wavg", MASK, h)
    expected0 = (1 * h[0, 0] + 2 * h[0, 1] + 3 * h[0, 2]) / 6
    torch.testing.assert_close(out[0], expected0)
    torch.testing.assert_close(out[1], h[1, 0])


@pytest.mark.parametrize("name", ["avg", "wavg", "last", "avg_top2", "avg_first_last"])
def test_padding_does_not_change_the_result(name):
    """Adding padding positions full of garbage leaves every pooled vector unchanged."""
    h = states(3)
    layers = [h * (i + 1) for i in range(3)]
    base = pool(name, MASK, layers[-1], layers)
    garbage = torch.full((2, 3, 3), 1e4)
    wide_mask = torch.cat([MASK, torch.zeros(2, 3, dtype=MASK.dtype)], dim=1)
    wide = [torch.cat([layer, garbage], dim=1) for layer in layers]
    torch.testing.assert_close(pool(name, wide_mask, wide[-1], wide), base)


def test_last_works_for_left_and_right_padding():
    h = states(4)
    torch.testing.assert_close(pool("last", MASK, h), torch.stack([h[0, 2], h[1, 0]]))
    left_mask = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1]])
    torch.testing.assert_close(pool("last", left_mask, h), h[:, 3])


def test_masked_mean_matches_manual_average():
    h = torch.arange(8.0).reshape(1, 4, 2)
    out = masked_mean(h, torch.tensor([[1, 1, 0, 0]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0]]))


def test_hidden_state_poolers_require_hidden_states():
    with pytest.raises(ValueError, match="hidden_states"):
        pool("avg_top2", MASK, states(0))


def test_unknown_pooler_is_rejected_with_choices():
    with pytest.raises(ValueError, match="unknown pooler 'max'.*cls_before_pooler"):
        pool("max", MASK, states(0))


@pytest.mark.parametrize("name", ["cls", "cls_before_pooler", "avg_top2", "avg_first_last"])
def test_encoder_only_poolers_rejected_for_gpt2(name):
    with pytest.raises(SimCSEError, match=f"pooler '{name}' does not fit model type 'gpt2'.*avg, wavg, last"):
        check_pooler(name, "gpt2")


def test_decoder_only_poolers_rejected_for_bert():
    with pytest.raises(SimCSEError, match="'wavg' does not fit model type 'bert'"):
        check_pooler("wavg", "bert")
    check_pooler("avg", "gpt2")
    check_pooler("cls", "roberta")
