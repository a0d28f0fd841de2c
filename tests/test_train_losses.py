"""Every registered loss trains through train.py; the loss flags resolve, reject and are saved."""

from __future__ import annotations

import json
import math

import pytest
from test_train import base_args, write_train_file

import train
from conftest import save_tiny_model
from simcse.arguments import ModelArguments
from simcse.cli import run_cli
from simcse.errors import SimCSEError
from simcse.losses import LOSSES

EXTRA_FLAGS = {"met": ["--margin", "0.44"], "align_uniform": ["--loss_lambda", "0.3", "--align_alpha", "2",
                                                               "--uniform_t", "2"]}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("bert"), "bert")


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains_a_few_steps(loss, tiny_bert, tmp_path):
    out = tmp_path / "out"
    args = base_args(tiny_bert, write_train_file(tmp_path, 1), out, "--loss_type", loss, "--logging_steps", "1",
                     *EXTRA_FLAGS.get(loss, []))
    args[args.index("--max_steps") + 1] = "2"
    metrics = train.main(args)
    assert math.isfinite(metrics["train_loss"])
    saved = json.loads((out / "config.json").read_text())["simcse_loss"]
    assert saved["name"] == loss
    if loss == "met":
        assert saved["margin"] == 0.44
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [h for h in history if "loss" in h]
    assert logged and all(0 <= h["align"] <= 4 and -8 <= h["uniform"] <= 0 for h in logged)
    assert all(("p_pos" in h) == ("temp" in saved) for h in logged)


def test_flags_map_to_the_loss_hyperparameters():
    args = ModelArguments(model_name_or_path="m", loss_type="align_uniform", loss_lambda=0.2, uniform_t=3.0,
                          loss_kwargs='{"alpha": 1.0}')
    assert args.resolved_loss_kwargs() == {"lam": 0.2, "t": 3.0, "alpha": 1.0}
    infonce = ModelArguments(model_name_or_path="m", temp=0.1, hard_negative_weight=1.0)
    assert infonce.resolved_loss_kwargs() == {"temp": 0.1, "hard_negative_weight": 1.0}
    dcl = ModelArguments(model_name_or_path="m", loss_type="dcl", loss_kwargs='{"symmetric": true}')
    assert dcl.resolved_loss_kwargs() == {"symmetric": True}  # flags not given keep the loss's defaults
    assert ModelArguments(model_name_or_path="m", loss_type="dcl", temp=0.2).resolved_loss_kwargs() == {"temp": 0.2}


def test_the_saved_temperature_is_the_losss():
    assert ModelArguments(model_name_or_path="m").model_temp() == 0.05
    assert ModelArguments(model_name_or_path="m", loss_type="dcl", temp=0.3).model_temp() == 0.3
    assert ModelArguments(model_name_or_path="m", loss_type="dhel", loss_kwargs='{"temp": 0.2}').model_temp() == 0.2
    assert ModelArguments(model_name_or_path="m", loss_type="met").model_temp() == 0.05  # no τ: SimCSE's


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss_type": "infonce", "margin": 0.3}, "--margin does not apply to --loss_type infonce"),
        # Given explicitly for a loss without the hyperparameter: an error, never silently dropped.
        ({"loss_type": "dcl", "hard_negative_weight": 1.0}, "--hard_negative_weight does not apply to --loss_type dcl"),
        ({"loss_type": "dcl", "hard_negative_weight": 0.0}, "--hard_negative_weight does not apply to --loss_type dcl"),
        ({"loss_type": "met", "temp": 0.05}, "--temp does not apply to --loss_type met"),
        ({"loss_type": "vicreg", "uniform_t": 2.0}, "--uniform_t does not apply to --loss_type vicreg"),
        ({"loss_type": "kcl", "align_alpha": 2.0}, "--align_alpha does not apply to --loss_type kcl"),
        ({"loss_type": "mpt", "loss_lambda": 0.5}, "--loss_lambda does not apply to --loss_type mpt"),
        ({"loss_type": "infonce", "temp": 0.1, "loss_kwargs": '{"temp": 0.2}'}, "which a flag also sets"),
        ({"loss_type": "met", "loss_kwargs": '{"tmp": 1}'}, "['tmp'] that --loss_type met does not take; valid: margin"),
        ({"loss_type": "met", "loss_kwargs": "{bad"}, "is not valid JSON"),
        ({"loss_type": "met", "margin": -0.1}, "--margin must be >= 0, got -0.1"),
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
    ({"matryoshka_weights": "1,1"}, "--matryoshka_weights needs --matryoshka_dims"),
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
