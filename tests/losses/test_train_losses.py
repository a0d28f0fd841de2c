"""Every registered loss trains through train.py; the loss flags resolve, reject and are saved."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from test_train import base_args, write_train_file

import train
from helpers import save_tiny_model, slow_except_first
from simcse.cli import run_cli
from simcse.errors import SimCSEError
from simcse.losses import LOSSES
from simcse.training.arguments import ModelArguments
from simcse.training.loss_flags import loss_kwargs, model_temp

EXTRA_FLAGS = {"met": ["--margin", "0.44"], "align_uniform": ["--loss_lambda", "0.3", "--align_alpha", "2",
                                                               "--uniform_t", "2"]}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("bert"), "bert")


def write_scored_file(directory, header: str = "sent0,sent1,score"):
    """Graded pairs: 12 rows, scores 0.0 .. 5.5 (distinct but one tie)."""
    from test_train import SENTENCES

    scores = [0.5 * i for i in range(len(SENTENCES))]
    scores[3] = scores[4]
    path = directory / "graded.csv"
    rows = [f"{s},{s.replace('number', 'no.')},{score}" for s, score in zip(SENTENCES, scores)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path, scores


@pytest.mark.parametrize("loss", slow_except_first(["infonce"] + sorted(set(LOSSES) - {"infonce"})))
def test_every_loss_trains_a_few_steps(loss, tiny_bert, tmp_path):
    out = tmp_path / "out"
    data = write_scored_file(tmp_path)[0] if LOSSES[loss].needs_scores else write_train_file(tmp_path, 1)
    guide = ["--guide_model", str(tiny_bert)] if LOSSES[loss].needs_guide else []  # the start guiding itself
    args = base_args(tiny_bert, data, out, "--loss_type", loss, "--logging_steps", "1",
                     *EXTRA_FLAGS.get(loss, []), *guide)
    args[args.index("--max_steps") + 1] = "2"
    metrics = train.main(args)
    assert math.isfinite(metrics["train_loss"])
    saved = json.loads((out / "config.json").read_text())["simcse_loss"]
    assert saved["name"] == loss
    if loss == "met":
        assert saved["margin"] == 0.44
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [h for h in history if "loss" in h]
    assert [h["step"] for h in logged] == [1, 2] and all(math.isfinite(h["loss"]) for h in logged)
    # two dropout views of a sentence differ (alignment > 0) and the batch has not collapsed (uniformity < 0)
    assert all(h["align"] > 0 and h["uniform"] < 0 for h in logged)
    assert all(("p_pos" in h) == ("temp" in saved) for h in logged)
    # the loss's gradient reached the encoder: its weights moved in two steps
    before = load_file(tiny_bert / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert any(not torch.equal(v, after["bert." + k]) for k, v in before.items() if "bert." + k in after), \
        f"{loss}: no encoder weight moved"


def test_flags_map_to_the_loss_hyperparameters():
    args = ModelArguments(model_name_or_path="m", loss_type="align_uniform", loss_lambda=0.2, uniform_t=3.0,
                          loss_kwargs='{"alpha": 1.0}')
    assert loss_kwargs(args) == {"lam": 0.2, "t": 3.0, "alpha": 1.0}
    infonce = ModelArguments(model_name_or_path="m", temp=0.1, hard_negative_weight=1.0)
    assert loss_kwargs(infonce) == {"temp": 0.1, "hard_negative_weight": 1.0}
    dcl = ModelArguments(model_name_or_path="m", loss_type="dcl", loss_kwargs='{"symmetric": true}')
    assert loss_kwargs(dcl) == {"symmetric": True}  # flags not given keep the loss's defaults
    assert loss_kwargs(ModelArguments(model_name_or_path="m", loss_type="dcl", temp=0.2)) == {"temp": 0.2}


def test_the_saved_temperature_is_the_losss():
    assert model_temp(ModelArguments(model_name_or_path="m")) == 0.05
    assert model_temp(ModelArguments(model_name_or_path="m", loss_type="dcl", temp=0.3)) == 0.3
    assert model_temp(ModelArguments(model_name_or_path="m", loss_type="dhel", loss_kwargs='{"temp": 0.2}')) == 0.2
    assert model_temp(ModelArguments(model_name_or_path="m", loss_type="met")) == 0.05  # no τ: SimCSE's


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss_type": "infonce", "margin": 0.3}, "`margin` does not apply to `loss_type` infonce"),
        # Given explicitly for a loss without the hyperparameter: an error, never silently dropped.
        ({"loss_type": "dcl", "hard_negative_weight": 1.0}, "`hard_negative_weight` does not apply to `loss_type` dcl"),
        ({"loss_type": "dcl", "hard_negative_weight": 0.0}, "`hard_negative_weight` does not apply to `loss_type` dcl"),
        ({"loss_type": "met", "temp": 0.05}, "`temp` does not apply to `loss_type` met"),
        ({"loss_type": "vicreg", "uniform_t": 2.0}, "`uniform_t` does not apply to `loss_type` vicreg"),
        ({"loss_type": "kcl", "align_alpha": 2.0}, "`align_alpha` does not apply to `loss_type` kcl"),
        ({"loss_type": "mpt", "loss_lambda": 0.5}, "`loss_lambda` does not apply to `loss_type` mpt"),
        ({"loss_type": "infonce", "temp": 0.1, "loss_kwargs": '{"temp": 0.2}'}, "which a flag also sets"),
        ({"loss_type": "met", "loss_kwargs": '{"tmp": 1}'},
         "['tmp'] that `loss_type` met does not take; valid: margin"),
        ({"loss_type": "met", "loss_kwargs": "{bad"}, "is not valid JSON"),
        ({"loss_type": "met", "margin": -0.1}, "`margin` must be >= 0, got -0.1"),
    ],
)
def test_bad_loss_flags_are_errors(kwargs, message):
    with pytest.raises(SimCSEError) as err:
        ModelArguments(model_name_or_path="m", **kwargs)
    assert message in str(err.value)


def test_hard_negatives_with_a_loss_that_cannot_use_them(tiny_bert, tmp_path, capsys):
    code = run_cli(train.main, base_args(tiny_bert, write_train_file(tmp_path, 3), tmp_path / "o",
                                         "--loss_type", "met"), prog="train.py")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "cannot use the hard negatives" in err and "infonce" in err


def test_matryoshka_wraps_the_loss_in_training(tiny_bert, tmp_path):
    out = tmp_path / "mrl"
    args = base_args(tiny_bert, write_train_file(tmp_path, 1), out, "--loss_type", "dcl",
                     "--matryoshka_dims", "32,16,8", "--matryoshka_weights", "1,1,0.5")
    args[args.index("--max_steps") + 1] = "2"
    assert math.isfinite(train.main(args)["train_loss"])
    saved = json.loads((out / "config.json").read_text())["simcse_loss"]
    assert saved["name"] == "dcl" and saved["matryoshka_dims"] == [32, 16, 8]
    assert saved["matryoshka_weights"] == [1.0, 1.0, 0.5]


@pytest.mark.parametrize("kwargs, message", [
    ({"matryoshka_weights": "1,1"}, "`matryoshka_weights` needs `matryoshka_dims`"),
    ({"matryoshka_dims": "64,x"}, "write comma-separated numbers"),
    ({"matryoshka_dims": "64,32", "matryoshka_weights": "1"}, "one per dim"),
])
def test_bad_matryoshka_flags(kwargs, message):
    with pytest.raises(SimCSEError, match=message):
        ModelArguments(model_name_or_path="m", **kwargs)


@pytest.mark.parametrize("extra", [[], ["--grad_cache_mini_batch", "2"]], ids=["plain", "gradcache"])
def test_several_hard_negatives_per_anchor_train(tiny_bert, tmp_path, extra):
    from test_train import SENTENCES

    path = tmp_path / "train.csv"
    rows = [f"{s},{s} again,an unrelated line,another unrelated line" for s in SENTENCES]
    path.write_text("sent0,sent1,hard_neg_1,hard_neg_2\n" + "\n".join(rows) + "\n")
    out = tmp_path / "k2"
    args = base_args(tiny_bert, path, out, "--loss_type", "infonce", "--hard_negative_weight", "0.5",
                     *extra)
    args[args.index("--max_steps") + 1] = "2"
    assert math.isfinite(train.main(args)["train_loss"])


def test_more_than_three_columns_need_hard_negative_names(tmp_path):
    from simcse.data import load_training_dataset

    path = tmp_path / "bad.csv"
    path.write_text("a,b,c,d\nx,y,z,w\n")
    with pytest.raises(SimCSEError, match="hard_neg_1, ..., hard_neg_k"):
        load_training_dataset(path, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("extra", [[], ["--grad_cache_mini_batch", "5"]], ids=["plain", "gradcache"])
@pytest.mark.parametrize("loss", ["cosent", "angle"])
def test_graded_losses_get_the_files_scores_through_the_collator(loss, extra, tiny_bert, tmp_path, monkeypatch):
    import simcse.losses.graded as graded

    seen = []
    original = graded.cosent_loss

    def recording(z1, z2, scores, **kwargs):
        seen.append(scores.detach().clone())
        return original(z1, z2, scores, **kwargs)

    monkeypatch.setattr(graded, "cosent_loss", recording)
    path, scores = write_scored_file(tmp_path)
    args = base_args(tiny_bert, path, tmp_path / "out", "--loss_type", loss, "--learning_rate", "1e-3", *extra)
    args[args.index("--per_device_train_batch_size") + 1] = "12"  # the whole file in one batch
    assert math.isfinite(train.main(args)["train_loss"])
    assert len(seen) == 1 and seen[0].dtype == torch.float32
    assert sorted(seen[0].tolist()) == sorted(scores)  # every row's score, shuffled with its pair


def test_a_header_with_other_names_is_declared_with_train_columns(tiny_bert, tmp_path):
    path, _ = write_scored_file(tmp_path, header="premise,hypothesis,similarity")
    args = base_args(tiny_bert, path, tmp_path / "out", "--loss_type", "cosent")
    with pytest.raises(SimCSEError,
                       match=r"column 3 \('similarity'\) holds numbers .*`train_columns` sent0,sent1,score"):
        train.main(args)
    assert math.isfinite(train.main([*args, "--train_columns", "sent0,sent1,score"])["train_loss"])


def test_graded_loss_and_data_must_agree(tiny_bert, tmp_path):
    pairs = write_train_file(tmp_path, 2)
    with pytest.raises(SimCSEError, match=r"loss 'cosent' is graded.*add a column named 'score'"):
        train.main(base_args(tiny_bert, pairs, tmp_path / "a", "--loss_type", "cosent"))
    scored, _ = write_scored_file(tmp_path)
    with pytest.raises(SimCSEError, match=r"has similarity scores that loss 'infonce' would ignore.*cosent"):
        train.main(base_args(tiny_bert, scored, tmp_path / "b", "--loss_type", "infonce"))
    # Declared a hard negative on purpose: infonce trains on the numbers as sentences.
    args = base_args(tiny_bert, scored, tmp_path / "c", "--train_columns", "sent0,sent1,hard_neg")
    assert math.isfinite(train.main(args)["train_loss"])


def test_matryoshka_2d_trains_over_layers_and_widths(tiny_bert, tmp_path, monkeypatch):
    from simcse.losses.matryoshka import Matryoshka2dLoss

    seen = []
    original = Matryoshka2dLoss.forward

    def recording(self, *args, layers=None, **kwargs):
        seen.append(tuple(layers.shape))
        return original(self, *args, layers=layers, **kwargs)

    monkeypatch.setattr(Matryoshka2dLoss, "forward", recording)
    out = tmp_path / "2d"
    args = base_args(tiny_bert, write_train_file(tmp_path, 3), out, "--matryoshka_dims", "32,8",
                     "--matryoshka_layers", "1", "--matryoshka_2d_kwargs", '{"kl_div_weight": 0.5}')
    args[args.index("--max_steps") + 1] = "2"
    assert math.isfinite(train.main(args)["train_loss"])
    assert seen == [(4, 3, 2, 32)] * 2  # batch 4, 3 columns, the 2 earlier layers (embeddings, layer 1), width 32
    saved = json.loads((out / "config.json").read_text())["simcse_loss"]
    assert saved["matryoshka_dims"] == [32, 8] and saved["matryoshka_2d"]["n_layers_per_step"] == 1
    assert saved["matryoshka_2d"]["kl_div_weight"] == 0.5


@pytest.mark.parametrize("flags, message", [
    (["--matryoshka_2d_kwargs", '{"kl_div_weight": 1}'], "`matryoshka_2d_kwargs` needs `matryoshka_layers`"),
    (["--matryoshka_layers", "0"], "n_layers_per_step must be a positive number"),
    (["--matryoshka_layers", "1", "--matryoshka_2d_kwargs", '{"kl": 1}'], "keys among last_layer_weight"),
    (["--matryoshka_layers", "1", "--grad_cache_mini_batch", "2"], "cannot be combined with `grad_cache_mini_batch`"),
    (["--matryoshka_layers", "1", "--pooler_type", "avg_first_last"], "pools every layer alone"),
])
def test_bad_matryoshka_2d_flags(tiny_bert, tmp_path, flags, message):
    with pytest.raises(SimCSEError, match=message):
        train.main(base_args(tiny_bert, write_train_file(tmp_path, 2), tmp_path / "o", *flags))


def test_the_loss_flags_are_derived_from_registration_and_each_has_a_field():
    """Each loss declares its train.py flags at registration; their union is the flag set, and every flag
    is a ModelArguments field (a loss declaring a new flag without a field fails here)."""
    from dataclasses import fields

    from simcse.training.loss_flags import loss_flags

    derived = loss_flags()
    assert derived == {"temp": "temp", "hard_negative_weight": "hard_negative_weight", "margin": "margin",
                       "loss_lambda": "lam", "align_alpha": "alpha", "uniform_t": "t"}
    names = {f.name for f in fields(ModelArguments)}
    assert set(derived) <= names
    assert LOSSES["kcl"].cli_flags == {"uniform_t": "t"} and "temp" not in LOSSES["kcl"].cli_flags
    with pytest.raises(SimCSEError, match="`temp` does not apply to `loss_type` kcl"):
        loss_kwargs(ModelArguments(model_name_or_path="m", loss_type="kcl", temp=0.1))


def test_a_registration_cannot_give_a_flag_another_meaning():
    from simcse.losses import ContrastiveLoss, register_loss

    class Odd(ContrastiveLoss):
        def __init__(self, scale: float = 1.0):
            super().__init__()

    with pytest.raises(ValueError, match=r"flag\(s\) \['temp'\] already mean another argument"):
        register_loss("odd_scale", flags={"temp": "scale"})(Odd)
    with pytest.raises(TypeError, match="flags name \\['tau'\\]"):
        register_loss("odd_tau", flags={"temp": "tau"})(Odd)
    assert "odd_scale" not in LOSSES and "odd_tau" not in LOSSES


def test_loss_tile_size_trains_like_the_plain_loss(tiny_bert, tmp_path):
    """--loss_tile_size: the tiled loss (inside the Matryoshka wrapper, on 3 hard-negative columns) gives
    train.py the plain loss's steps: the same weights after 2 steps (dropout on, same seed)."""
    data = write_train_file(tmp_path, 3)
    weights = {}
    for name, tile in (("plain", []), ("tiled", ["--loss_tile_size", "3"])):
        args = base_args(tiny_bert, data, tmp_path / name, "--hard_negative_weight", "0.3",
                         "--matryoshka_dims", "32,16", "--loss_kwargs", '{"symmetric": true}', *tile)
        args[args.index("--max_steps") + 1] = "2"
        train.main(args)
        weights[name] = load_file(tmp_path / name / "model.safetensors")
    assert weights["plain"].keys() == weights["tiled"].keys()
    for key, value in weights["plain"].items():
        torch.testing.assert_close(weights["tiled"][key], value, rtol=0, atol=1e-5)
    before = load_file(tiny_bert / "model.safetensors")
    shared = [k for k in before if "bert." + k in weights["tiled"]]
    assert sum(not torch.equal(before[k], weights["tiled"]["bert." + k]) for k in shared) > len(shared) // 2


@pytest.mark.parametrize("kwargs, message", [
    ({"loss_tile_size": 0}, "`loss_tile_size` must be a positive integer"),
    ({"loss_type": "vicreg", "loss_tile_size": 64}, "loss 'vicreg' cannot be tiled (`loss_tile_size`)"),
])
def test_bad_tile_flags(kwargs, message):
    with pytest.raises(SimCSEError) as err:
        ModelArguments(model_name_or_path="m", **kwargs)
    assert message in str(err.value)


def test_tiled_margin_loss_with_duplicate_masking_is_refused_before_loading(tiny_bert, tmp_path, capsys):
    code = run_cli(train.main, base_args(tiny_bert, write_train_file(tmp_path, 1), tmp_path / "o", "--loss_type",
                                         "met", "--loss_tile_size", "4", "--mask_duplicate_texts"), prog="train.py")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "loss 'met' cannot mask duplicate texts" in err and "infonce, nt_xent" in err
