"""Reliability: completeness markers and `last`, the atomic final save, non-finite losses, fp32 loss
maths under autocast, bad input as one-line errors, and safe loading (safetensors, no remote code, no
unpickling). Resuming end to end is in test_resume.py; evaluation.py on a train.py checkpoint giving
the converted model's table is test_convert.py::test_evaluation_reads_training_checkpoints_directly."""

from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import base_args, write_train_file

import train
from helpers import REPO, save_tiny_model, write_sts_tree
from simcse.cli import run_cli
from simcse.errors import SimCSEError
from simcse.losses import build_loss
from simcse.modeling.models import BertForCL, configure
from simcse.training import run as training
from simcse.training.arguments import SimCSETrainingArguments
from simcse.training.reliability import (
    MARKER,
    STAGING,
    incomplete_reason,
    is_complete,
    mark_complete,
    newest_complete_checkpoint,
    resolve_resume_checkpoint,
    run_record,
    staged_directory,
    unmark,
)
from simcse.training.trainers import SimCSETrainer


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("bert"), "bert")


def run(argv, capsys) -> tuple[int, str]:
    code = run_cli(train.main, argv, prog="train.py")
    return code, capsys.readouterr().err.strip()


def error_line(err: str) -> str:
    """The error as the user sees it: the last line of stderr (progress bars may come before it), and the
    only line that carries an error."""
    lines = err.replace("\r", "\n").splitlines()
    assert sum("error:" in line for line in lines) == 1, err
    return lines[-1]


def fake_checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    (folder / "trainer_state.json").write_text("{}")
    if complete:
        mark_complete(folder, step)
    return folder


# ----- completeness markers and `last` ---------------------------------------------------------------


def test_marker_records_every_file_and_detects_damage(tmp_path):
    folder = fake_checkpoint(tmp_path, 5)
    record = json.loads((folder / MARKER).read_text())
    assert record == {"global_step": 5, "files": {"model.safetensors": 100, "trainer_state.json": 2}}
    assert is_complete(folder)
    (folder / "model.safetensors").write_bytes(b"x" * 40)  # truncated after the fact
    assert incomplete_reason(folder) == "model.safetensors has 40 bytes, 100 were written"
    (folder / "model.safetensors").unlink()
    assert incomplete_reason(folder) == "model.safetensors is missing"
    unmark(folder)
    assert "no simcse_checkpoint.json" in incomplete_reason(folder)
    unmark(folder)  # idempotent


def test_last_is_the_newest_complete_checkpoint(tmp_path):
    fake_checkpoint(tmp_path, 2)
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 12, complete=False)  # the run died while writing it
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name: ignored
    assert newest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # numeric, not lexical, order
    assert resolve_resume_checkpoint("last", tmp_path) == str(tmp_path / "checkpoint-10")
    assert resolve_resume_checkpoint("LAST", tmp_path) == str(tmp_path / "checkpoint-10")
    assert resolve_resume_checkpoint(str(tmp_path / "checkpoint-2"), tmp_path) == str(tmp_path / "checkpoint-2")
    assert resolve_resume_checkpoint(None, tmp_path) is None


def test_resume_errors_name_the_fix(tmp_path):
    with pytest.raises(SimCSEError, match=r"'.*nowhere' does not exist, so there is nothing to resume; drop"):
        resolve_resume_checkpoint("last", tmp_path / "nowhere")
    fake_checkpoint(tmp_path, 3, complete=False)
    with pytest.raises(SimCSEError, match=r"no complete checkpoint in .* \(skipped: checkpoint-3 \(no simcse_"):
        resolve_resume_checkpoint("last", tmp_path)
    fake_checkpoint(tmp_path, 1)
    with pytest.raises(SimCSEError, match=r"checkpoint-3' is not a complete checkpoint: no simcse_checkpoint.json "
                                          r".*resume from '.*checkpoint-1' \(the newest complete one there\)"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-3"), tmp_path)
    with pytest.raises(SimCSEError, match="is not a directory"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-9"), tmp_path)


def test_resume_last_without_checkpoints_is_a_one_line_error(tiny_bert, tmp_path, capsys):
    out = tmp_path / "o"
    fake_checkpoint(out, 4, complete=False)
    code, err = run(base_args(tiny_bert, write_train_file(tmp_path, 1), out, "--resume_from_checkpoint", "last"),
                    capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("train.py: error: --resume_from_checkpoint last: no complete checkpoint in") and \
        "checkpoint-4" in err


# ----- the atomic final save -------------------------------------------------------------------------


def test_staged_directory_replaces_files_or_leaves_them_alone(tmp_path):
    (tmp_path / "model.safetensors").write_text("old")
    (tmp_path / "keep.txt").write_text("untouched")
    with pytest.raises(RuntimeError), staged_directory(tmp_path) as staging:
        Path(staging, "model.safetensors").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (tmp_path / "model.safetensors").read_text() == "old" and not (tmp_path / STAGING).exists()
    with staged_directory(tmp_path) as staging:
        Path(staging, "model.safetensors").write_text("new")
        Path(staging, "sub").mkdir()
        Path(staging, "sub", "a").write_text("a")
    assert (tmp_path / "model.safetensors").read_text() == "new" and (tmp_path / "sub" / "a").read_text() == "a"
    assert (tmp_path / "keep.txt").read_text() == "untouched" and not (tmp_path / STAGING).exists()


def make_trainer(model_dir: Path, out: Path, **kwargs) -> SimCSETrainer:
    config = configure(BertForCL.config_class.from_pretrained(model_dir), pooler_type="cls")
    model = BertForCL.from_pretrained(model_dir, config=config)
    args = SimCSETrainingArguments(output_dir=str(out), use_cpu=True, report_to="none", **kwargs)
    return SimCSETrainer(model=model, args=args, loss_fn=build_loss("infonce"))


def test_failed_final_save_keeps_the_previous_model(tiny_bert, tmp_path, monkeypatch):
    out = tmp_path / "out"
    trainer = make_trainer(tiny_bert, out)
    trainer.save_model()
    before = (out / "model.safetensors").read_bytes()
    assert not (out / "pytorch_model.bin").exists() and not (out / STAGING).exists()

    def dies_mid_write(self, output_dir=None, state_dict=None):
        Path(output_dir, "model.safetensors").write_bytes(before[:1000])  # a torn file
        raise OSError("No space left on device (simulated)")

    with torch.no_grad():
        trainer.model.mlp.dense.weight.add_(1.0)
    with monkeypatch.context() as patch, pytest.raises(OSError):
        patch.setattr(SimCSETrainer, "_save", dies_mid_write)
        trainer.save_model()
    assert (out / "model.safetensors").read_bytes() == before and not (out / STAGING).exists()
    trainer.save_model()
    saved = load_file(out / "model.safetensors")
    assert torch.equal(saved["mlp.dense.weight"], trainer.model.mlp.dense.weight)


# ----- non-finite losses -----------------------------------------------------------------------------


@pytest.fixture
def nan_at_step_2(monkeypatch):
    loss_of_embeddings = SimCSETrainer._loss_of_embeddings

    def poisoned(self, z, scores=None):
        loss = loss_of_embeddings(self, z, scores)
        return loss * float("nan") if self.state.global_step == 1 else loss  # computing step 2

    monkeypatch.setattr(SimCSETrainer, "_loss_of_embeddings", poisoned)


def nan_args(model_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    args = base_args(model_dir, write_train_file(tmp_path, 1), tmp_path / "out", "--learning_rate", "1e-2", *extra)
    args[args.index("--max_steps") + 1] = "3"
    args[args.index("--save_strategy") + 1] = "steps"
    return args + ["--save_steps", "1"]


GRAD_CACHE = [[], ["--grad_cache_mini_batch", "2"]]


@pytest.mark.parametrize("extra", GRAD_CACHE, ids=["plain", "grad_cache"])
def test_nonfinite_loss_stops_naming_the_step_and_the_last_good_checkpoint(extra, tiny_bert, tmp_path, capsys,
                                                                         nan_at_step_2):
    code, err = run(nan_args(tiny_bert, tmp_path, *extra), capsys)
    err = error_line(err)
    assert code == 2 and err.startswith("train.py: error: "), err
    assert "the training loss or its gradient became nan at step 2" in err
    assert f"the last good checkpoint is '{tmp_path / 'out' / 'checkpoint-1'}'" in err
    assert "--resume_from_checkpoint last" in err and "--skip_nonfinite" in err


@pytest.mark.parametrize("extra", GRAD_CACHE, ids=["plain", "grad_cache"])
def test_skip_nonfinite_skips_the_update_and_warns(extra, tiny_bert, tmp_path, caplog, nan_at_step_2):
    with caplog.at_level(logging.WARNING, logger="simcse.training.nonfinite"):
        metrics = train.main(nan_args(tiny_bert, tmp_path, "--skip_nonfinite", *extra))
    out = tmp_path / "out"
    w1, w2, w3 = (load_file(out / f"checkpoint-{k}" / "model.safetensors") for k in (1, 2, 3))
    assert all(torch.equal(w1[k], w2[k]) for k in w1), "the skipped step changed the weights"
    assert not all(torch.equal(w2[k], w3[k]) for k in w2), "training did not go on after the skipped step"
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert warnings == ["step 2: the loss or its gradient is nan; skipped it without an update (--skip_nonfinite), "
                        "1 step(s) skipped so far"]
    assert metrics["skipped_nonfinite_steps"] == 1
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))


@pytest.mark.parametrize("extra", GRAD_CACHE, ids=["plain", "grad_cache"])
def test_skip_nonfinite_under_a_grad_scaler(extra, tiny_bert, tmp_path, monkeypatch, nan_at_step_2):
    """fp16's GradScaler (here its CPU form, which accelerate does not create on CPU, so it is installed
    by hand): a skipped step used to leave no gradient and GradScaler.step raised "No inf checks were
    recorded". Now the scaler sees the skip as an overflow: no update, its scale halves once."""
    make = SimCSETrainer.create_accelerator_and_postprocess
    scalers = []

    def with_scaler(self):
        make(self)
        self.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=1000)
        scalers.append(self.accelerator.scaler)

    monkeypatch.setattr(SimCSETrainer, "create_accelerator_and_postprocess", with_scaler)
    metrics = train.main(nan_args(tiny_bert, tmp_path, "--skip_nonfinite", *extra))
    out = tmp_path / "out"
    w1, w2, w3 = (load_file(out / f"checkpoint-{k}" / "model.safetensors") for k in (1, 2, 3))
    assert all(torch.equal(w1[k], w2[k]) for k in w1), "the skipped step changed the weights"
    assert not all(torch.equal(w2[k], w3[k]) for k in w2), "training did not go on after the skipped step"
    assert metrics["skipped_nonfinite_steps"] == 1
    assert scalers[0].get_scale() == 2.0 ** 9  # one backoff, for the skipped step only


def test_loss_is_fp32_under_autocast(tiny_bert, tmp_path):
    """The encoder may run in bf16/fp16; the trainer's loss (similarities, logsumexp) is fp32 maths."""
    trainer = make_trainer(tiny_bert, tmp_path / "out")
    model = trainer.model.eval()  # no dropout: the same forward twice
    tokens = torch.randint(1000, 2000, (4, 2, 9))
    inputs = {"input_ids": tokens, "attention_mask": torch.ones_like(tokens)}
    with torch.no_grad():
        reference = trainer.compute_loss(model, inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True)
    assert outputs.embeddings.dtype == torch.bfloat16  # the encoder did run in bf16
    assert loss.dtype == reference.dtype == torch.float32
    assert loss.item() == pytest.approx(trainer.loss_fn(outputs.embeddings[:, 0].float(),
                                                        outputs.embeddings[:, 1].float()).item(), abs=1e-6)
    assert loss.item() == pytest.approx(reference.item(), rel=0.05)


# ----- bad input: one line, the value and the fix ----------------------------------------------------


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--loss_kwargs", '{"tmp": 1}'], "--loss_kwargs has ['tmp'] that --loss_type infonce does not take; valid:"),
        (["--loss_type", "met", "--margin", "-0.5"], "--margin must be >= 0, got -0.5"),
        (["--save_strategy", "steps", "--load_best_model_at_end", "--metric_for_best_model", "stsb_spearman"],
         "--load_best_model_at_end needs evaluations to find the best model, but --eval_strategy is no"),
        (["--resume_from_checkpoint", "/no/such/checkpoint-7"], "'/no/such/checkpoint-7' is not a directory"),
    ],
)
def test_more_bad_flags_are_one_line_errors(extra, expected, tiny_bert, tmp_path, capsys):
    code, err = run(base_args(tiny_bert, write_train_file(tmp_path, 1), tmp_path / "o", *extra), capsys)
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("train.json", b'[{}, {}]', "has records without any text fields"),
        ("train.csv", b"\n  \n\n", "is empty or holds only whitespace"),
    ],
)
def test_more_bad_train_files_are_one_line_errors(name, content, expected, tiny_bert, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    code, err = run(base_args(tiny_bert, path, tmp_path / "o"), capsys)
    assert code == 2 and expected in err and str(path) in err and len(err.splitlines()) == 1, err


def test_model_path_that_is_not_a_model(tiny_bert, tmp_path, capsys):
    train_file = write_train_file(tmp_path, 1)
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    code, err = run(base_args(empty, train_file, tmp_path / "o"), capsys)
    assert code == 2 and err == f"train.py: error: {str(empty)!r} has no config.json, so it is not a Hugging Face " \
                                "model directory"
    code, err = run(base_args(tiny_bert / "model.safetensors", train_file, tmp_path / "o"), capsys)
    assert code == 2 and "is a file; give the directory that holds config.json" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("missing", ["STS/STSBenchmark/sts-dev.csv", "SICK/SICK_trial.txt"])
def test_missing_senteval_file_fails_before_training(missing, tiny_bert, tmp_path, capsys):
    tree = write_sts_tree(tmp_path / "senteval")
    (tree / "downstream" / missing).unlink()
    out = tmp_path / "o"
    args = base_args(tiny_bert, write_train_file(tmp_path, 1), out, "--senteval_data", str(tree))
    args[args.index("--eval_strategy") + 1] = "steps"
    code, err = run(args + ["--eval_steps", "1"], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"missing SentEval data file '{tree / 'downstream' / missing}'" in err
    assert "download_dataset.sh" in err and "--eval_strategy no" in err
    assert not out.exists()  # nothing was trained or saved


@pytest.mark.slow
def test_user_errors_reach_a_real_terminal_without_traceback(tiny_bert, tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"good line\n\xff bad\n")
    proc = subprocess.run([sys.executable, "train.py", *base_args(tiny_bert, path, tmp_path / "o")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train.py: error: training file {path} is not UTF-8: line 2"), proc.stderr


# ----- safe loading ----------------------------------------------------------------------------------


def test_every_torch_load_refuses_pickled_code():
    """torch.load unpickles; only weights_only=True keeps a hostile file from running code."""
    offenders = []
    for path in sorted(REPO.rglob("*.py")):
        if any(part.startswith(".") or part in ("build", "venv") for part in path.relative_to(REPO).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


@pytest.mark.parametrize("flag, expected", [([], False), (["--trust_remote_code"], True)])
def test_remote_code_runs_only_when_asked(flag, expected, tiny_bert, tmp_path, capsys, monkeypatch):
    seen = []
    for cls in (training.AutoConfig, training.AutoTokenizer):
        original = cls.from_pretrained

        def spy(path, *args, _original=original, **kwargs):
            seen.append(kwargs.get("trust_remote_code", "not passed"))
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    # stops right after the config and the tokenizer are loaded
    code, _ = run(base_args(tiny_bert, write_train_file(tmp_path, 1), tmp_path / "o", "--max_seq_length", "999",
                            *flag), capsys)
    assert code == 2 and len(seen) >= 2 and set(seen) == {expected}  # AutoTokenizer reads the config too



@pytest.mark.parametrize("flag, expected", [([], False), (["--trust_remote_code"], True)])
def test_evaluation_runs_remote_code_only_when_asked(flag, expected, tiny_bert, capsys, monkeypatch):
    import evaluation

    seen = []
    original = training.AutoConfig.from_pretrained

    def spy(path, *args, **kwargs):
        seen.append(kwargs.get("trust_remote_code", "not passed"))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(training.AutoConfig, "from_pretrained", spy)
    code = run_cli(evaluation.main, ["--model_name_or_path", str(tiny_bert), "--pooler", "avg",
                                     "--max_seq_length", "999", *flag], prog="evaluation.py")  # stops after the config
    assert code == 2 and "exceeds this model's limit" in capsys.readouterr().err and seen == [expected]


# ----- saves interrupted at every file operation ----------------------------------------------------


class Killed(BaseException):
    """Stands for a kill: not an Exception, so no handler of the code under test catches it."""


def _save(target: Path, version: str) -> None:
    with staged_directory(target) as staging:
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            Path(staging, name).write_text(f"{name} {version}")


def _contents(target: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in target.iterdir() if p.is_file() and not p.name.startswith(".")
            and p.name != "simcse_model.json"}


@pytest.mark.parametrize("kill_at", range(1, 8))
def test_final_save_killed_at_each_replace_rolls_forward(kill_at, tmp_path, monkeypatch):
    import simcse.training.reliability as reliability
    from simcse.training.reliability import final_save_incomplete

    target = tmp_path / "out"
    _save(target, "old")
    old = _contents(target)
    calls = {"n": 0}
    real_replace = os.replace

    def dying_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise Killed
        return real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(reliability.os, "replace", dying_replace)
        try:
            _save(target, "new")
            killed = False
        except Killed:
            killed = True
    if killed and final_save_incomplete(target) is None:
        assert _contents(target) == old  # killed before the switch: the whole old model, still marked
    _save(target, "newer")  # the next save finishes (or discards) the interrupted one, then saves
    assert final_save_incomplete(target) is None
    assert _contents(target) == {name: f"{name} newer" for name in old}


def test_rotation_runs_only_after_the_new_checkpoint_is_marked(tiny_bert, tmp_path, monkeypatch, capsys):
    import simcse.training.trainers as trainers

    seen = []

    def recording_rotate(output_dir, save_total_limit=None, best_model_checkpoint=None, use_mtime=False):
        newest = max(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        seen.append((newest.name, is_complete(newest), save_total_limit))

    monkeypatch.setattr(trainers, "rotate_checkpoints", recording_rotate)
    args = base_args(tiny_bert, write_train_file(tmp_path, 1), tmp_path / "out")
    args[args.index("--max_steps") + 1] = "2"
    args[args.index("--save_strategy") + 1] = "steps"
    code, err = run(args + ["--save_steps", "1", "--save_total_limit", "1"], capsys)
    assert code == 0, err
    assert seen == [("checkpoint-1", True, 1), ("checkpoint-2", True, 1)]


# ----- `last` resumes only the same run ------------------------------------------------------------------


def test_run_record_counts_only_arguments_that_change_training(tiny_bert, tmp_path):
    def record(*extra):
        model_args, data_args, training_args = train.parse_args(base_args(tiny_bert, write_train_file(tmp_path, 1),
                                                                          tmp_path / "o", *extra))
        return run_record(model_args, data_args, training_args)

    same = record()
    assert same == record() and len(same["fingerprint"]) == 16
    assert same["args"]["learning_rate"] == 5e-05 and same["args"]["train_file"].endswith("train.txt")
    # logging, saving, reporting and evaluation-only data do not change the weights
    assert record("--logging_steps", "3", "--save_total_limit", "2", "--report_to", "none",
                  "--senteval_data", str(tmp_path))["fingerprint"] == same["fingerprint"]
    for flag, value in (("--learning_rate", "1e-3"), ("--seed", "7"), ("--temp", "0.1"),
                        ("--per_device_train_batch_size", "8"), ("--max_seq_length", "20")):
        assert record(flag, value)["fingerprint"] != same["fingerprint"], flag


def test_last_skips_checkpoints_of_another_run_and_says_which_it_picked(tmp_path, caplog):
    this = {"fingerprint": "a" * 16, "args": {"learning_rate": 5e-5, "seed": 42}}
    other = {"fingerprint": "b" * 16, "args": {"learning_rate": 3e-5, "seed": 42}}
    for step, run in ((4, this), (6, this), (9, other)):
        folder = fake_checkpoint(tmp_path, step, complete=False)
        mark_complete(folder, step, run=run)
    fake_checkpoint(tmp_path, 8, complete=False)  # killed while writing
    fake_checkpoint(tmp_path, 7)  # a marker without a fingerprint (an older train.py)
    with caplog.at_level(logging.INFO, logger="simcse.training.reliability"):
        assert resolve_resume_checkpoint("last", tmp_path, run=this) == str(tmp_path / "checkpoint-6")
    assert "skipped checkpoint-9 (another run (learning_rate 3e-05 there, 5e-05 now))" in caplog.text
    assert "skipped checkpoint-8 (no simcse_checkpoint.json" in caplog.text
    assert "skipped checkpoint-7 (its marker records no run fingerprint" in caplog.text
    assert f"resuming from {tmp_path / 'checkpoint-6'} (this run, fingerprint {'a' * 16})" in caplog.text
    assert resolve_resume_checkpoint("last", tmp_path) == str(tmp_path / "checkpoint-9")  # no run given: any
    third = {"fingerprint": "c" * 16, "args": {"learning_rate": 1e-4, "seed": 1}}
    with pytest.raises(SimCSEError, match=r"no complete checkpoint in .* from this run \(skipped: checkpoint-9 "
                                          r"\(another run \(learning_rate 3e-05 there, 0.0001 now, "
                                          r"seed 42 there, 1 now\)\)"):
        resolve_resume_checkpoint("last", tmp_path, run=third)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="simcse.training.reliability"):  # an explicit path: as asked, warned
        assert resolve_resume_checkpoint(str(tmp_path / "checkpoint-9"), tmp_path, run=this).endswith("checkpoint-9")
    assert "another run (learning_rate 3e-05 there, 5e-05 now); resuming it as asked" in caplog.text


@pytest.mark.slow
def test_train_resumes_its_own_checkpoint_not_a_newer_one_left_by_another_run(tiny_bert, tmp_path, caplog):
    """Run A (lr 1e-2) leaves checkpoint-1 and checkpoint-2; run B (lr 2e-2, --overwrite_output_dir) is
    killed after writing its checkpoint-1. `last` for B must take B's checkpoint-1, not A's newer step 2."""
    train_file = write_train_file(tmp_path, 1)
    out = tmp_path / "out"

    def args(lr, steps, *extra):
        argv = base_args(tiny_bert, train_file, out, "--learning_rate", lr, "--save_steps", "1", *extra)
        argv[argv.index("--max_steps") + 1] = steps
        argv[argv.index("--save_strategy") + 1] = "steps"
        return argv

    train.main(args("1e-2", "2"))
    train.main(args("2e-2", "1", "--overwrite_output_dir"))  # B stops after step 1, as if killed
    b_step1 = load_file(out / "checkpoint-1" / "model.safetensors")
    marker = json.loads((out / "checkpoint-2" / MARKER).read_text())
    assert marker["run"]["args"]["learning_rate"] == 0.01  # checkpoint-2 is still A's
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train.main(args("2e-2", "1", "--resume_from_checkpoint", "last"))
    assert "skipped checkpoint-2 (another run (learning_rate 0.01 there, 0.02 now, max_steps 2 there, 1 now))" \
        in caplog.text
    assert f"resuming from {out / 'checkpoint-1'} (this run" in caplog.text
    final = load_file(out / "model.safetensors")  # B's step-1 weights: nothing of A's step 2 came in
    assert all(torch.equal(final[k], b_step1[k]) for k in b_step1 if k in final)


def test_a_run_resumed_on_another_number_of_processes_is_refused_naming_the_world_size(tmp_path, caplog):
    """The run record holds the world size: `--resume_from_checkpoint last` on 4 processes does not pick up
    the checkpoints of an 8-process run (other global batches), and says why."""
    from simcse.training.reliability import mark_complete, resolve_resume_checkpoint, run_record

    args = {"learning_rate": 3e-5, "per_device_train_batch_size": 64}
    ckpt = tmp_path / "checkpoint-10"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"weights")
    mark_complete(ckpt, 10, run=run_record(args, {"world_size": 8}))
    assert resolve_resume_checkpoint("last", tmp_path, run=run_record(args, {"world_size": 8})) == str(ckpt)
    with pytest.raises(SimCSEError, match=r"no complete checkpoint .* from this run .*world_size 8 there, 4 now; it "
                                          r"ran on 8 process\(es\), this run on 4: to continue it, relaunch on 8 "
                                          r"\(torchrun --nproc_per_node 8 on one node\)"):
        resolve_resume_checkpoint("last", tmp_path, run=run_record(args, {"world_size": 4}))
    # A checkpoint directory named explicitly is the override: resumed as asked, with the same warning.
    with caplog.at_level(logging.WARNING, logger="simcse.training.reliability"):
        assert resolve_resume_checkpoint(str(ckpt), tmp_path, run=run_record(args, {"world_size": 4})) == str(ckpt)
    assert "it ran on 8 process(es), this run on 4" in caplog.text and "resuming it as asked" in caplog.text
