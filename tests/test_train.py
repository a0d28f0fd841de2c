"""train.py and the Trainer subclass: one step per architecture and mode, best-checkpoint selection,
saved config, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train
from helpers import ScriptedEvaluation, save_tiny_model, slow_except_first, train_with
from simcse.cli import run_cli
from simcse.modeling.models import BertForCL

SENTENCES = [f"sentence number {i} about a topic {i % 3}" for i in range(12)]


def write_train_file(directory: Path, columns: int) -> Path:
    if columns == 1:
        path = directory / "train.txt"
        path.write_text("\n".join(SENTENCES) + "\n")
        return path
    header = ["sent0", "sent1", "hard_neg"][:columns]
    rows = [",".join([s, s.replace("number", "no."), "an unrelated line"][:columns]) for s in SENTENCES]
    path = directory / "train.csv"
    path.write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {t: save_tiny_model(root / t, t) for t in ("bert", "roberta", "gpt2")}


def base_args(model_dir: Path, train_file: Path, out: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(model_dir), "--train_file", str(train_file), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--max_steps", "1", "--report_to", "none", "--use_cpu",
            "--save_strategy", "no", "--eval_strategy", "no", "--max_seq_length", "16", *extra]


ONE_STEP = [(m, c) for m in ("bert", "roberta", "gpt2") for c in (1, 2, 3)]


@pytest.mark.parametrize("model_type, columns", slow_except_first(ONE_STEP, [f"{c}-{m}" for m, c in ONE_STEP]))
def test_one_training_step_changes_the_weights(model_type, columns, tiny_models, tmp_path):
    model_dir = tiny_models[model_type]
    pooler = "wavg" if model_type == "gpt2" else "cls"
    out = tmp_path / "out"
    metrics = train.main(base_args(model_dir, write_train_file(tmp_path, columns), out, "--pooler_type", pooler,
                                   "--learning_rate", "1e-2"))
    assert metrics["train_loss"] > 0 and torch.isfinite(torch.tensor(metrics["train_loss"]))
    before = load_file(model_dir / "model.safetensors")
    after = load_file(out / "model.safetensors")
    prefix = {"bert": "bert.", "roberta": "roberta.", "gpt2": "transformer."}[model_type]
    changed = [k for k, v in before.items() if prefix + k in after and not torch.equal(v, after[prefix + k])]
    assert changed, "no backbone weight moved after a step"
    saved = json.loads((out / "config.json").read_text())
    assert saved["simcse_loss"] == {"name": "infonce", "temp": 0.05, "hard_negative_weight": 0.0, "symmetric": False}


def test_saved_config_restores_the_pooler(tiny_models, tmp_path):
    out = tmp_path / "out"
    train.main(base_args(tiny_models["bert"], write_train_file(tmp_path, 1), out,
                         "--pooler_type", "avg_first_last", "--mlp_only_train", "--temp", "0.1"))
    model = BertForCL.from_pretrained(out)
    assert (model.config.pooler_type, model.config.mlp_only_train, model.config.temp) == ("avg_first_last", True, 0.1)


@pytest.fixture(scope="module")
def tiny_mlm_bert(tiny_models, tmp_path_factory):
    """The tiny BERT with a pretrained (here: random but saved) MLM head, as bert-base-uncased ships one."""
    from transformers import AutoTokenizer, BertForMaskedLM

    directory = tmp_path_factory.mktemp("mlm-bert")
    torch.manual_seed(3)
    model = BertForMaskedLM.from_pretrained(tiny_models["bert"])
    with torch.no_grad():
        model.cls.predictions.transform.dense.weight.normal_(0, 0.5)
        model.cls.predictions.bias.normal_(0, 0.5)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_models["bert"]).save_pretrained(directory)
    return directory


def test_mlm_head_starts_from_the_checkpoint_head(tiny_mlm_bert):
    from transformers import AutoConfig, BertForMaskedLM

    from simcse.modeling.models import configure

    reference = BertForMaskedLM.from_pretrained(tiny_mlm_bert).cls.predictions
    ours = BertForCL.from_pretrained(tiny_mlm_bert, config=configure(AutoConfig.from_pretrained(tiny_mlm_bert),
                                                                      do_mlm=True)).cls.predictions
    assert torch.equal(ours.transform.dense.weight, reference.transform.dense.weight)
    assert torch.equal(ours.bias, reference.bias)


@pytest.mark.parametrize("mlm_weight", ["0.5", "0"])
def test_mlm_loss_trains_the_mlm_head(mlm_weight, tiny_mlm_bert, tmp_path):
    """--do_mlm: the MLM loss adds to the training loss and its gradient moves the MLM head (weight 0: it
    does not, and the loss is the contrastive one alone)."""
    out = tmp_path / "out"
    args = base_args(tiny_mlm_bert, write_train_file(tmp_path, 2), out, "--do_mlm", "--mlm_weight", mlm_weight,
                     "--learning_rate", "1e-2", "--seed", "5")
    metrics = train.main(args)
    before = load_file(tiny_mlm_bert / "model.safetensors")
    after = load_file(out / "model.safetensors")
    head = "cls.predictions.transform.dense.weight"
    if mlm_weight == "0":
        assert torch.equal(after[head], before[head])
        return
    assert not torch.equal(after[head], before[head]), "the MLM loss did not reach the MLM head"
    plain = train.main(base_args(tiny_mlm_bert, write_train_file(tmp_path, 2), tmp_path / "plain",
                                 "--learning_rate", "1e-2", "--seed", "5"))
    # at a random head the MLM loss is about log(30522) ~ 10 per masked token, the contrastive one about
    # log(batch of 4) ~ 1.4: with weight 0.5 the sum is several units above the contrastive loss alone
    assert metrics["train_loss"] > plain["train_loss"] + 1.0


def test_best_checkpoint_is_kept_when_it_is_not_the_last(tiny_models, tmp_path):
    """A fake evaluator scores 0.5, 0.9, 0.2 at steps 1, 2, 3: output_dir must hold the step-2 model."""
    out = tmp_path / "out"
    args = base_args(tiny_models["bert"], write_train_file(tmp_path, 1), out, "--learning_rate", "1e-2")
    args = [a for a in args if a not in ("--save_strategy", "--eval_strategy")]
    args = [a for a in args if a != "no"]
    args[args.index("--max_steps") + 1] = "3"
    metrics = train_with(args + ["--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps",
                                 "--save_steps", "1", "--metric_for_best_model", "stsb_spearman",
                                 "--load_best_model_at_end"], ScriptedEvaluation([0.5, 0.9, 0.2, 0.9]))
    assert metrics["best_model_checkpoint"].endswith("checkpoint-2") and metrics["best_metric"] == 0.9
    final = load_file(out / "model.safetensors")
    best = load_file(out / "checkpoint-2" / "model.safetensors")
    last = load_file(out / "checkpoint-3" / "model.safetensors")
    assert all(torch.equal(final[k], best[k]) for k in final)
    assert not all(torch.equal(final[k], last[k]) for k in final)


def run(argv, capsys) -> tuple[int, str]:
    code = run_cli(train.main, argv, prog="train.py")
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--pooler_type", "max"], "unknown --pooler_type 'max'"),
        (["--loss_type", "nce2"], "unknown --loss_type 'nce2'"),
        (["--temp", "0"], "--temp must be > 0, got 0.0"),
        (["--fp16"], "--fp16 needs a CUDA GPU"),
        (["--max_seq_length", "100000"], "--max_seq_length 100000 exceeds this model's limit of 128"),
    ],
)
def test_bad_flags_are_one_line_errors(extra, expected, tiny_models, tmp_path, capsys):
    if "--fp16" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, err = run(base_args(tiny_models["bert"], write_train_file(tmp_path, 1), tmp_path / "o", *extra), capsys)
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err


def test_cls_pooler_on_gpt2_is_rejected(tiny_models, tmp_path, capsys):
    code, err = run(base_args(tiny_models["gpt2"], write_train_file(tmp_path, 1), tmp_path / "o",
                              "--pooler_type", "cls"), capsys)
    assert code == 2 and "pooler 'cls' does not fit model type 'gpt2'" in err


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty"),
        (b"  \n\n \n", "empty"),
        (b"a,b,c,d\n1,2,3,4\n", "4 columns"),
        (b"good line\n\xff\xfe bad\n", "line 2"),
    ],
)
def test_bad_train_files_are_one_line_errors(content, expected, tiny_models, tmp_path, capsys):
    path = tmp_path / ("train.csv" if b"," in content else "train.txt")
    path.write_bytes(content)
    code, err = run(base_args(tiny_models["bert"], path, tmp_path / "o"), capsys)
    assert code == 2 and expected in err and str(path) in err and len(err.splitlines()) == 1, err


def test_non_empty_output_dir_is_refused(tiny_models, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, err = run(base_args(tiny_models["bert"], write_train_file(tmp_path, 1), out), capsys)
    assert code == 2 and "--overwrite_output_dir" in err
    assert (out / "precious.txt").read_text() == "keep me"


def test_old_flag_names_still_work(tiny_models, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "old.txt").write_text("x")
    args = base_args(tiny_models["bert"], write_train_file(tmp_path, 1), out)
    args = [a for a in args if a not in ("--eval_strategy",)]
    args.remove("no")  # the value of --eval_strategy (the first "no" is --save_strategy's)
    metrics = train.main(args + ["--evaluation_strategy", "no", "--overwrite_output_dir"])
    assert metrics["train_loss"] > 0


@pytest.mark.parametrize("flag", [True, False])
def test_no_duplicates_flag_reaches_the_sampler(flag, tiny_models, tmp_path, monkeypatch):
    """train.py --no_duplicates_in_batch makes the trainer batch with NoDuplicatesBatchSampler (and only then)."""
    import simcse.training.trainers

    built = []

    class Recording(simcse.training.trainers.NoDuplicatesBatchSampler):
        def __init__(self, *args, **kwargs):
            built.append(kwargs.get("batch_size", args[1] if len(args) > 1 else None))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(simcse.training.trainers, "NoDuplicatesBatchSampler", Recording)
    extra = ["--no_duplicates_in_batch"] if flag else []
    train.main(base_args(tiny_models["bert"], write_train_file(tmp_path, 2), tmp_path / "out", *extra))
    assert bool(built) == flag


@pytest.mark.slow
def test_the_best_checkpoint_is_chosen_by_a_retrieval_metric(tiny_models, tmp_path):
    """--eval_custom_retrieval DIR:NAME logs eval_NAME_ndcg@10 (and the other retrieval metrics) at every
    evaluation; --metric_for_best_model NAME_ndcg@10 keeps the step with the highest nDCG@10."""
    from helpers import REPO, write_sts_tree

    data = write_sts_tree(tmp_path / "senteval")
    out = tmp_path / "out"
    args = base_args(tiny_models["bert"], write_train_file(tmp_path, 1), out, "--learning_rate", "5e-2",
                     "--senteval_data", str(data))
    args = [a for a in args if a not in ("--save_strategy", "--eval_strategy", "no")]
    args[args.index("--max_steps") + 1] = "4"
    metrics = train.main(args + ["--eval_strategy", "steps", "--eval_steps", "1",
                                 "--eval_custom_retrieval", f"{REPO / 'tests' / 'fixtures' / 'beir_tiny'}:tiny",
                                 "--metric_for_best_model", "tiny_ndcg@10", "--load_best_model_at_end"])
    state = json.loads((out / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_tiny_ndcg@10" in h]
    assert [h["step"] for h in evals] == [1, 2, 3, 4]
    for key in ("mrr@10", "map@100", "recall@1", "recall@10", "recall@100", "accuracy@1", "accuracy@10"):
        assert 0 <= evals[0][f"eval_tiny_{key}"] <= 1
    best = max(evals, key=lambda h: h["eval_tiny_ndcg@10"])  # the Trainer keeps the first of equal bests
    assert metrics["best_metric"] == best["eval_tiny_ndcg@10"]
    assert metrics["best_model_checkpoint"].endswith(f"checkpoint-{best['step']}")
    assert metrics["eval_tiny_ndcg@10"] == best["eval_tiny_ndcg@10"]  # the final evaluation: the best model
    assert len({h["eval_tiny_ndcg@10"] for h in evals}) > 1  # the steps differ: the choice is not vacuous
