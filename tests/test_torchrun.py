"""train.py itself under ``torchrun --nproc_per_node 2`` (gloo, CPU): 2 processes x batch b end with the
weights of 1 process x batch 2b, for every pooler of BERT and GPT-2, with gradient checkpointing and
DDP's find_unused_parameters off (the default), with gradient caching, and with an auxiliary MLM loss
(its masks are keyed by example and position, and its mean is taken over the global batch).

Dropout is off (the only randomness that differs between the two runs) and the optimizer is SGD, whose
update is linear in the gradient, so equal gradients give equal weights to float32 rounding. Each case
is one real launch of the command users type.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from helpers import FAMILIES, REPO, save_tiny_model
from simcse.losses import build_loss
from simcse.modeling.backbones import model_class_for

pytestmark = pytest.mark.slow  # every test launches torchrun (2 processes) and a 1-process run

DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                "dropout", "attention_dropout", "embedding_dropout", "mlp_dropout")
# Each sentence ends with its own number: the last-token embeddings of a tiny random decoder for sentences that
# share their last token are ~0.999 cosine apart, where the float32 rounding of the loss (which differs between
# one process's rows and the whole batch, exact maths aside) grows past the 1e-5 tolerance in three steps.
SENTENCES = [f"about topic {i % 3} says the sentence number {i}" for i in range(8)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for model_type in FAMILIES:
        path = save_tiny_model(tmp_path_factory.mktemp(f"torchrun-{model_type}"), model_type)
        config = AutoConfig.from_pretrained(path)
        for key in DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, 0.0)
        config.save_pretrained(path)
        out[model_type] = path
    return out


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("torchrun-data") / "wiki.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def launch(nproc: int, model: Path, data: Path, out: Path, batch: int, *extra: str,
           inject: Path | None = None) -> subprocess.CompletedProcess:
    args = ["--model_name_or_path", str(model), "--train_file", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", str(batch), "--max_steps", "3", "--optim", "sgd",
            "--learning_rate", "0.5", "--lr_scheduler_type", "constant", "--max_seq_length", "16",
            "--save_strategy", "no", "--eval_strategy", "no", "--report_to", "none", "--use_cpu",
            "--logging_steps", "1", "--seed", "3", "--disable_tqdm", "true", *extra]
    if nproc == 1:
        command = [sys.executable, str(REPO / "train.py"), *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                   f"--master_port={free_port()}", str(REPO / "train.py"), *args, "--ddp_backend", "gloo"]
    path = ([str(inject)] if inject else []) + [str(REPO), str(REPO / "SentEval")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def two_equal_one(model: Path, data: Path, tmp_path: Path, flags: list[str], two_flags: tuple = (),
                  one_flags: tuple = ()) -> tuple[dict, subprocess.CompletedProcess]:
    """Train 2 processes at per-device batch 2 and 1 process at batch 4 from ``model`` on ``data``; assert that
    they end with equal weights (1e-5); return the 2-process weights and the 1-process run."""
    launch(2, model, data, tmp_path / "two", 2, *flags, *two_flags)
    single = launch(1, model, data, tmp_path / "one", 4, *flags, *one_flags)
    two, one = load_file(tmp_path / "two" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    assert two.keys() == one.keys()
    for key in two:
        assert torch.allclose(two[key], one[key], atol=1e-5, rtol=0), (key, (two[key] - one[key]).abs().max())
    return two, single


def assert_most_weights_moved(model: Path, trained: dict, prefix: str = "bert.") -> None:
    """Training changed most backbone weights: an equality of two runs is not the equality of two no-ops."""
    start = load_file(model / "model.safetensors")
    moved = [k for k in start if prefix + k in trained and not torch.equal(start[k], trained[prefix + k])]
    assert len(moved) > len(start) // 2


CASES = [  # (model type, pooler, extra flags)
    *[("bert", pooler, ["--gradient_checkpointing"]) for pooler in
      ("cls", "cls_before_pooler", "avg", "avg_top2", "avg_first_last")],
    *[("gpt2", pooler, ["--gradient_checkpointing"]) for pooler in ("avg", "wavg", "last")],
    ("bert", "cls", ["--mlp_only_train", "--grad_cache_mini_batch", "1"]),
    ("bert", "avg", ["--do_mlm", "--gradient_checkpointing"]),  # 3 steps of 2 per epoch: crosses an epoch
    ("bert", "cls", ["--do_mlm", "--grad_cache_mini_batch", "1"]),
    ("gpt2", "last", ["--grad_cache_mini_batch", "1"]),
    # every other backbone family (helpers.FAMILIES), one fitting pooler each; some with gradient caching
    ("roberta", "avg", []), ("mpnet", "cls", []), ("xlm-roberta", "avg", ["--grad_cache_mini_batch", "1"]),
    ("modernbert", "avg", []), ("electra", "avg", ["--do_mlm", "--grad_cache_mini_batch", "1"]),
    ("deberta-v2", "cls_before_pooler", []), ("distilbert", "avg_first_last", []), ("electra", "cls", []),
    ("qwen2", "last", []), ("llama", "wavg", ["--grad_cache_mini_batch", "1"]), ("mistral", "avg", []),
    # LoRA on an encoder and a decoder: the adapters (and the head) train, exactly as in one process
    ("bert", "cls", ["--lora_r", "4"]), ("qwen2", "last", ["--lora_r", "4", "--grad_cache_mini_batch", "1"]),
]


@pytest.mark.parametrize("model_type, pooler, extra", CASES,
                         ids=[f"{c[0]}-{c[1]}-{'-'.join(f.strip('-') for f in c[2])}" for c in CASES])
def test_two_processes_equal_one_process_with_the_double_batch(models, train_file, tmp_path, model_type, pooler,
                                                               extra):
    two, _ = two_equal_one(models[model_type], train_file, tmp_path, ["--pooler_type", pooler, *extra])
    start = load_file(models[model_type] / "model.safetensors")
    assert ("mlp.dense.weight" in two) == (pooler == "cls")  # the head exists only where it is trained
    if "--lora_r" in extra:  # the adapters moved, the frozen weights did not
        assert any("lora_B" in k and two[k].abs().max() > 0 for k in two)
        base = {k.replace(".base_layer", ""): v for k, v in two.items() if "lora_" not in k}
        prefix = model_class_for(model_type).base_model_prefix + "."
        assert all(torch.equal(start[k], base[prefix + k]) for k in start if prefix + k in base)
        return
    assert_most_weights_moved(models[model_type], two, model_class_for(model_type).base_model_prefix + ".")


@pytest.mark.parametrize("extra", [[], ["--grad_cache_mini_batch", "1"]], ids=["plain", "grad_cache"])
def test_two_hard_negatives_per_anchor_two_processes_equal_one(models, tmp_path, extra):
    """Supervised rows with K = 2 hard negatives: every rank's anchors see the global batch's positives and
    all K x global-batch hard negatives, so 2 x b equals 1 x 2b here too."""
    data = tmp_path / "sup.csv"
    rows = [f"{s},{s} in other words,not {s},far from {SENTENCES[(i + 3) % 8]}" for i, s in enumerate(SENTENCES)]
    data.write_text("sent0,sent1,hard_neg_1,hard_neg_2\n" + "\n".join(rows) + "\n", encoding="utf-8")
    flags = ["--pooler_type", "cls", "--hard_negative_weight", "0.5", *extra]
    two, _ = two_equal_one(models["bert"], data, tmp_path, flags)
    assert_most_weights_moved(models["bert"], two)


@pytest.mark.parametrize("extra", [[], ["--grad_cache_mini_batch", "1"]], ids=["plain", "grad_cache"])
def test_masked_duplicate_texts_two_processes_equal_one(models, tmp_path, extra):
    """--mask_duplicate_texts: the text keys are gathered with the embeddings, so a sentence that repeats on
    the other process is masked too. Batches in file order (sequential sampling), each global batch of 4
    holding its duplicates at rows (0, 3) and (1, 2): on two processes whether the ranks take rows 0-1 / 2-3
    or 0, 2 / 1, 3, so every duplicate pair crosses the processes."""
    a, b, c, d, e, f = SENTENCES[:6]
    data = tmp_path / "dup.txt"
    data.write_text("\n".join([a, b, b, a, c, d, e, c]) + "\n", encoding="utf-8")
    flags = ["--pooler_type", "cls", "--mask_duplicate_texts", "--train_sampling_strategy", "sequential", *extra]
    two, _ = two_equal_one(models["bert"], data, tmp_path, flags)
    assert_most_weights_moved(models["bert"], two)


def test_local_rows_of_every_loss_two_processes_equal_one(tmp_path):
    """Under DDP each process computes only its rows of the loss against the gathered candidates
    (simcse.losses.tiled.row_local_form), times W. For every such loss (hard negatives and duplicate-text
    masking included), float64: the all-reduced value equals the plain loss of one process on the global
    batch, and each process's rows get W x the one-process gradient (DDP then averages over W), 1e-10.
    Each process's matrix products are exactly 1/W of the same form's over every row: the loss's compute
    per process is down by W (its memory too: one (B/W, candidates) block)."""
    sys.path.insert(0, str(REPO / "tests"))
    import distributed_local_rows as worker

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               str(REPO / "tests" / "distributed_local_rows.py"), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "SentEval")])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    cases = worker.cases()
    assert len(ranks[0]) == len(ranks[1]) == len(cases) >= 15
    rows = worker.BATCH // 2
    for i, (name, hp, k, masked) in enumerate(cases):
        z, keys = worker.global_batch(k)
        z = z.clone().requires_grad_(True)
        loss = build_loss(name, **hp)(z[:, 0], z[:, 1], z[:, 2:] if k else None, **({"keys": keys} if masked else {}))
        loss.backward()
        for r in range(2):
            got = ranks[r][i]
            assert (got["name"], got["k"], got["masked"]) == (name, k, masked)
            assert abs(got["value"] - loss.item()) < 1e-10, (name, k, masked, got["value"], loss.item())
            torch.testing.assert_close(torch.tensor(got["grad"], dtype=torch.float64),
                                       2 * z.grad[r * rows:(r + 1) * rows], rtol=1e-10, atol=1e-10)
            assert got["local_flops"] * 2 == got["whole_flops"] > 0, (name, got)  # compute down by W, exactly


LOSS_CASES = [  # train.py with other losses under torchrun: local rows, tiles, gradient caching
    ["--loss_type", "nt_xent"],
    ["--loss_type", "dcl", "--loss_kwargs", '{"symmetric": true}', "--grad_cache_mini_batch", "1"],
    ["--loss_type", "arccon", "--loss_tile_size", "3"],
    ["--loss_tile_size", "3", "--grad_cache_mini_batch", "1"],
    ["--loss_type", "align_uniform"],  # the full form on every process
    ["--loss_kwargs", '{"symmetric": true}', "--gradient_accumulation_steps", "2"],
]


@pytest.mark.parametrize("extra", LOSS_CASES, ids=["nt_xent", "dcl-symmetric-grad_cache", "arccon-tiled",
                                                  "infonce-tiled-grad_cache", "align_uniform-whole",
                                                  "infonce-symmetric-accumulation"])
def test_other_losses_and_tiles_two_processes_equal_one(models, train_file, tmp_path, extra):
    """train.py with local rows (nt_xent, dcl, arccon), the tiled loss (--loss_tile_size) with and without
    gradient caching, and a loss kept whole (align_uniform): 2 x b equals 1 x 2b, and the logged training loss
    (the global loss, all-reduced) too. Not the margin losses here: their hardest negative is an argmax, and
    the float32 rounding of a 2-process encoder (other batch shapes) flips near-ties of this tiny model's
    embeddings, in the full form as in local rows; their local rows are exact in float64 above."""
    two, one = two_equal_one(models["bert"], train_file, tmp_path, ["--pooler_type", "cls", *extra])
    assert_most_weights_moved(models["bert"], two)
    logged = [json.loads((tmp_path / run / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
              for run in ("two", "one")]
    losses = [[entry["loss"] for entry in history if "loss" in entry] for history in logged]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], abs=1e-5)


FSDP_CASES = [("bert", "cls", []), ("bert", "avg", ["--grad_cache_mini_batch", "1"]),
              ("bert", "cls", ["--gradient_accumulation_steps", "2", "--grad_cache_mini_batch", "1"]),
              ("bert", "cls", ["--do_mlm"]), ("qwen2", "last", []), ("qwen2", "last", ["--grad_cache_mini_batch", "1"]),
              ("qwen2", "last", ["--lora_r", "4"])]


@pytest.mark.parametrize("model_type, pooler, extra", FSDP_CASES,
                         ids=[f"{c[0]}-{c[1]}-{'-'.join(f.strip('-') for f in c[2])}" for c in FSDP_CASES])
def test_fsdp_two_processes_equal_one(models, train_file, tmp_path, model_type, pooler, extra):
    """--fsdp: FSDP2 shards every block and the rest of the model over the 2 processes; the embeddings are
    still gathered with gradient, so 2 sharded processes x b end with the weights of 1 process x 2b (saved
    whole from the shards), with gradient caching (the chunks re-run the sharded blocks), gradient
    accumulation, the MLM head (its decoder tied to the embeddings) and LoRA adapters (frozen and trained
    weights in one sharded block) too."""
    two, single = two_equal_one(models[model_type], train_file, tmp_path, ["--pooler_type", pooler, *extra],
                                two_flags=("--fsdp",))
    prefix = model_class_for(model_type).base_model_prefix + "."
    if "--lora_r" in extra:  # the sharded adapters moved, the sharded frozen weights did not
        start = load_file(models[model_type] / "model.safetensors")
        assert any("lora_B" in k and two[k].abs().max() > 0 for k in two)
        base = {k.replace(".base_layer", ""): v for k, v in two.items() if "lora_" not in k}
        assert all(torch.equal(start[k], base[prefix + k]) for k in start if prefix + k in base)
        return
    assert_most_weights_moved(models[model_type], two, prefix)
    log = (tmp_path / "two" / "trainer_state.json").read_text(encoding="utf-8")
    assert json.loads(log)["global_step"] == 3
    if extra:
        return
    run = launch(2, models[model_type], train_file, tmp_path / "held", 2, "--pooler_type", pooler, "--fsdp",
                 "--max_steps", "1")
    log = run.stdout + run.stderr
    held = re.findall(r"sharded over 2 processes: this one holds ([\d,]+) of ([\d,]+) parameters", log)
    assert held  # each process holds half of every weight (rounded up per tensor)
    for mine, total in held:
        assert int(total.replace(",", "")) / 2 <= int(mine.replace(",", "")) < int(total.replace(",", "")) * 0.51


def test_fsdp_run_killed_after_a_sharded_checkpoint_resumes_to_the_uninterrupted_weights(tmp_path):
    """--fsdp with dropout on, a sharded evaluation and checkpoint every 2 of 6 steps, the best model loaded
    at the end: torchrun (both processes) SIGKILLed once checkpoint-2 is complete, then relaunched with
    --resume_from_checkpoint last, ends with the weights and the best checkpoint of an uninterrupted run.
    Checkpoints hold the model's and optimizer's shards (torch.distributed.checkpoint), no whole weights."""
    import signal
    import time

    from helpers import write_sts_tree
    from simcse.training.reliability import is_complete

    model = save_tiny_model(tmp_path / "bert", "bert")  # dropout on: the RNG states must be restored too
    data = tmp_path / "wiki.txt"
    data.write_text("\n".join(SENTENCES * 2) + "\n", encoding="utf-8")
    senteval = write_sts_tree(tmp_path / "senteval")

    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
                str(REPO / "train.py"), "--model_name_or_path", str(model), "--train_file", str(data),
                "--output_dir", str(out), "--per_device_train_batch_size", "2", "--max_steps", "6", "--seed", "5",
                "--learning_rate", "1e-3", "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy",
                "steps", "--eval_steps", "2", "--metric_for_best_model", "stsb_spearman", "--load_best_model_at_end",
                "--senteval_data", str(senteval), "--max_seq_length", "16", "--report_to", "none", "--use_cpu",
                "--logging_steps", "1", "--disable_tqdm", "true", "--ddp_backend", "gloo", "--fsdp", *extra]

    def env(*inject: Path) -> dict:
        return {**os.environ, "OMP_NUM_THREADS": "1", "STEP_DELAY": "0.5",
                "PYTHONPATH": os.pathsep.join([*map(str, inject), str(REPO), str(REPO / "SentEval")])}

    full, out = tmp_path / "full", tmp_path / "out"
    done = subprocess.run(command(full), capture_output=True, text=True, env=env(), timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    assert {p.name for p in (full / "checkpoint-2").iterdir()} >= {"sharded", "trainer_state.json", "scheduler.pt"}
    assert not (full / "checkpoint-2" / "model.safetensors").exists()

    proc = subprocess.Popen(command(out), cwd=REPO, env=env(REPO / "tests" / "inject" / "step_delay"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not is_complete(out / "checkpoint-2"):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended or stalled before checkpoint-2"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "model.safetensors").exists(), "the kill landed after the end of training"
    resumed = subprocess.run(command(out, "--resume_from_checkpoint", "last"), capture_output=True, text=True,
                             env=env(), timeout=600, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    a, b = load_file(out / "model.safetensors"), load_file(full / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, f"weights differ by {worst}"
    states = [json.loads((run / "trainer_state.json").read_text(encoding="utf-8")) for run in (out, full)]
    assert [(s["best_metric"], Path(s["best_model_checkpoint"]).name) for s in states][0] == \
        [(s["best_metric"], Path(s["best_model_checkpoint"]).name) for s in states][1]
    assert_most_weights_moved(model, a)

    # Sharded weights are refused by a run without --fsdp, naming the fix (one process, the checkpoint by path).
    args = command(tmp_path / "whole", "--resume_from_checkpoint", str(full / "checkpoint-2"))
    args = [sys.executable, *args[args.index(str(REPO / "train.py")):]]
    args = [a for a in args if a not in ("--fsdp", "--ddp_backend", "gloo")]
    refused = subprocess.run(args, capture_output=True, text=True, env=env(), timeout=300, cwd=REPO)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "holds sharded weights and this run is not sharded: resume it with --fsdp" in refused.stderr


def test_the_original_gradient_scale_is_the_exact_gradient_divided_by_the_world_size(models, train_file, tmp_path):
    """--ddp_original_gradient_scale (princeton-nlp/SimCSE's 1/W): with SGD, whose update is linear in the
    gradient, 2 processes at lr 0.5 end where 1 process with the double batch ends at lr 0.25 (gradients
    are far below the clipping norm here, so clipping plays no part)."""
    flags = ["--pooler_type", "cls", "--ddp_original_gradient_scale"]
    two, one = two_equal_one(models["bert"], train_file, tmp_path, flags[:2], two_flags=tuple(flags[2:]),
                             one_flags=("--learning_rate", "0.25"))
    assert "'grad_norm'" in one.stdout
    exact = tmp_path / "exact"
    launch(2, models["bert"], train_file, exact, 2, *flags[:2])
    assert not all(torch.allclose(two[k], load_file(exact / "model.safetensors")[k], atol=1e-6) for k in two)


@pytest.mark.parametrize("extra", [[], ["--grad_cache_mini_batch", "1"]], ids=["plain", "grad_cache"])
def test_the_original_gradient_scale_weighs_the_mlm_term_as_the_original_did(models, train_file, tmp_path, extra):
    """princeton-nlp/SimCSE under DDP: the contrastive gradient divided by W, the MLM term each process's own
    mean, averaged by DDP. With every token masked (probability ~1; the sentences have one length, so each
    rank masks as many tokens and the mean of the two means is the global mean), 2 processes with
    --ddp_original_gradient_scale at lr 0.5 and --mlm_weight 0.1 take the steps of 1 process on the double
    batch at lr 0.25 with --mlm_weight 0.2: the original's MLM term weighed W times more against the
    contrastive one."""
    flags = ["--pooler_type", "cls", "--do_mlm", "--mlm_probability", "0.99999999", *extra]
    two, _ = two_equal_one(models["bert"], train_file, tmp_path, flags,
                           two_flags=("--ddp_original_gradient_scale", "--mlm_weight", "0.1"),
                           one_flags=("--learning_rate", "0.25", "--mlm_weight", "0.2"))
    assert any(k.startswith("cls.predictions") for k in two)


# Loaded by every launched process through PYTHONPATH (Python imports ``sitecustomize`` at start-up), so
# the production code carries no test hook: on rank 1 only, the loss of step 2 becomes NaN (the way a
# per-process MLM term can), and each rank saves its final weights.
NAN_ON_RANK_1 = """
import os, torch
import simcse.training.trainers as trainers

RANK = int(os.environ.get("RANK", "0"))
Trainer = trainers.SimCSETrainer
loss_of_embeddings, train = Trainer._loss_of_embeddings, Trainer.train

def poisoned(self, *args, **kwargs):
    loss = loss_of_embeddings(self, *args, **kwargs)
    return loss * float("nan") if RANK == 1 and self.state.global_step == 1 else loss

def train_and_dump(self, *args, **kwargs):
    result = train(self, *args, **kwargs)
    model = self.accelerator.unwrap_model(self.model)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
               os.path.join(self.args.output_dir, f"weights-rank{RANK}.pt"))
    return result

Trainer._loss_of_embeddings = poisoned
Trainer.train = train_and_dump
"""


@pytest.mark.parametrize("extra", [[], ["--grad_cache_mini_batch", "1"]], ids=["plain", "grad_cache"])
def test_skip_nonfinite_with_nan_on_one_rank_only(models, train_file, tmp_path, extra):
    """The NaN of one rank reaches every rank's gradient through DDP's all-reduce, so every rank reads the
    same non-finite norm and skips the same step, without a collective of its own: no rank waits for
    another (a hang) and the weights stay equal."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(NAN_ON_RANK_1, encoding="utf-8")
    out = tmp_path / "nan"
    result = launch(2, models["bert"], train_file, out, 2, "--pooler_type", "cls", "--skip_nonfinite", *extra,
                    inject=inject)
    logs = result.stdout + result.stderr
    assert logs.count("step 2: the loss or its gradient is nan; skipped it without an update") == 2, logs[-3000:]
    w0, w1 = (torch.load(out / f"weights-rank{r}.pt", weights_only=True) for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)


COUNT_EVALUATIONS = """
import json, os
import simcse.evaluation.dev as dev
import simcse.training.trainers as trainers

RANK = int(os.environ.get("RANK", "0"))
call, train = dev.ModelEvaluation.__call__, trainers.SimCSETrainer.train

def counted(self, model):
    with open(os.path.join(os.environ["EVAL_LOG_DIR"], f"evaluations-rank{RANK}.txt"), "a") as handle:
        handle.write("1\\n")
    return call(self, model)

def train_and_dump(self, *args, **kwargs):
    result = train(self, *args, **kwargs)
    evals = [{k: v for k, v in e.items() if not k.endswith("runtime")}  # each rank times itself
             for e in self.state.log_history if "eval_stsb_spearman" in e]
    with open(os.path.join(os.environ["EVAL_LOG_DIR"], f"state-rank{RANK}.json"), "w") as handle:
        json.dump({"evals": evals, "best": self.state.best_metric}, handle)
    return result

dev.ModelEvaluation.__call__ = counted
trainers.SimCSETrainer.train = train_and_dump
"""


def test_evaluation_runs_once_on_rank_0_and_every_rank_gets_its_metrics(models, train_file, tmp_path, monkeypatch):
    from helpers import write_sts_tree

    data = write_sts_tree(tmp_path / "senteval")
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(COUNT_EVALUATIONS, encoding="utf-8")
    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.setenv("EVAL_LOG_DIR", str(logs))
    launch(2, models["bert"], train_file, tmp_path / "eval", 2, "--pooler_type", "cls", "--eval_strategy", "steps",
           "--eval_steps", "1", "--metric_for_best_model", "stsb_spearman", "--senteval_data", str(data),
           inject=inject)
    assert (logs / "evaluations-rank0.txt").read_text().count("1") == 4  # 3 steps + the final evaluation
    assert not (logs / "evaluations-rank1.txt").exists()
    rank0, rank1 = (json.loads((logs / f"state-rank{r}.json").read_text()) for r in (0, 1))
    assert len(rank0["evals"]) == 3 and rank0 == rank1  # the same metrics, so the same best-model decisions
