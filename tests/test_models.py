"""The contrastive wrappers' masked-LM term: scored over the collator's masked positions only (no host sync),
the same value and gradients as scoring every position."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, RobertaConfig

from simcse.data.collating import masked_positions
from simcse.modeling.models import BertForCL, RobertaForCL, configure


def tiny(name: str):
    common = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if name == "bert":
        config, cls = BertConfig(max_position_embeddings=32, **common), BertForCL
    else:
        config, cls = RobertaConfig(max_position_embeddings=34, pad_token_id=1, **common), RobertaForCL
    configure(config, pooler_type="cls", do_mlm=True)
    torch.manual_seed(0)
    model = cls(config).train()
    bias = model.cls.predictions.bias if name == "bert" else model.lm_head.bias  # (V,), zero at init
    with torch.no_grad():
        bias.normal_()  # so that a misplaced bias would show
    return model


def full_vocabulary_mlm_loss(model, inputs) -> torch.Tensor:
    """The former computation: logits at every position (B*N, L, V), positions labelled -100 ignored."""
    flat = {key: value.flatten(0, 1) for key, value in inputs.items()}
    hidden = model._run_backbone(flat["mlm_input_ids"], flat["attention_mask"]).last_hidden_state
    logits = model._mlm_logits(hidden)  # (B*N, L, V)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), flat["mlm_labels"].reshape(-1),
                           ignore_index=-100)


HAND_WRITTEN_MLM = ("bert", "roberta")  # the original's MLM heads (other encoders: tests/test_backbones.py)


@pytest.mark.parametrize("name", HAND_WRITTEN_MLM)
def test_mlm_loss_over_masked_positions_equals_the_full_vocabulary_version(name):
    model = tiny(name)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 300, (6, 2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, :, 9:] = 0
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.15, ids, -100).masked_fill(mask == 0, -100)
    mlm_ids = torch.where(labels != -100, 4, ids)
    inputs = {"input_ids": ids, "attention_mask": mask, "mlm_input_ids": mlm_ids, "mlm_labels": labels}
    assert 0 < int((labels != -100).sum()) < ids.numel() // 4

    positions = masked_positions(labels)  # what SimCSECollator adds: (B, K), -1 padded
    assert positions.shape[1] < ids.shape[1] * ids.shape[2] and (positions == -1).any()

    reference = full_vocabulary_mlm_loss(model, inputs)
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert any("bias" in n and expected[n].shape == (300,) for n in expected)  # the head's bias got gradient
    for given in ({"mlm_positions": positions}, {}):  # the collator's positions, or every position scored
        model.zero_grad()
        ours = model(**inputs, **given).mlm_loss
        ours.backward()
        assert abs(ours.item() - reference.item()) < 1e-6
        assert ours.item() > 1.0  # a real loss of random weights, not a degenerate zero
        for n, p in model.named_parameters():
            if n in expected:
                torch.testing.assert_close(p.grad, expected[n], atol=1e-6, rtol=1e-5)


def test_no_masked_position_gives_a_zero_mlm_term():
    """Without a host sync the model cannot skip the term when nothing is masked: it is 0, its gradient 0
    (and the head stays in the graph, as DDP wants every parameter to be)."""
    model = tiny("bert")
    ids = torch.randint(5, 300, (2, 2, 6))
    labels = torch.full_like(ids, -100)
    for given in ({"mlm_positions": masked_positions(labels)}, {}):
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), mlm_input_ids=ids, mlm_labels=labels,
                    **given)
        assert out.mlm_loss.item() == 0.0
        out.mlm_loss.backward()
        assert model.cls.predictions.bias.grad is not None and not model.cls.predictions.bias.grad.any()


def test_masked_positions_lists_each_examples_masked_tokens_in_order():
    labels = torch.full((3, 2, 4), -100)
    labels[0, 0, 1], labels[0, 1, 3], labels[2, 1, 0] = 7, 8, 9
    assert masked_positions(labels).tolist() == [[1, 7], [-1, -1], [4, -1]]
    assert masked_positions(torch.full((2, 2, 3), -100)).shape == (2, 0)


def test_the_recipe_fresh_head_is_not_reported_as_a_broken_checkpoint(tmp_path, caplog):
    """From a plain backbone, the fresh MLP head and the unused pooling layer are SimCSE's recipe:
    transformers' load report leaves them out, and the head is still initialised (std 0.02, zero bias).
    A SimCSE checkpoint that lacks its head is still reported."""
    import logging

    import safetensors.torch as st
    from transformers import AutoConfig

    from helpers import save_tiny_model
    from simcse.modeling.models import BertForCL, configure

    base = save_tiny_model(tmp_path / "base", "bert")
    with caplog.at_level(logging.WARNING):
        model = BertForCL.from_pretrained(base, config=configure(AutoConfig.from_pretrained(base), pooler_type="cls"))
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage()]
    weight = model.mlp.dense.weight
    assert torch.isfinite(weight).all() and 0.015 < float(weight.std()) < 0.025
    assert torch.equal(model.mlp.dense.bias, torch.zeros_like(model.mlp.dense.bias))

    model.save_pretrained(tmp_path / "simcse")
    state = st.load_file(tmp_path / "simcse" / "model.safetensors")
    headless = {k: v for k, v in state.items() if not k.startswith("mlp.")}
    st.save_file(headless, tmp_path / "simcse" / "model.safetensors", metadata={"format": "pt"})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        BertForCL.from_pretrained(tmp_path / "simcse")
    reports = [r.getMessage() for r in caplog.records if "LOAD REPORT" in r.getMessage()]
    assert reports and "mlp.dense.weight" in reports[0]
