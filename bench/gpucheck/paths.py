"""The GPU check's correctness parts: the real train.py path on the device, gradient caching on the
device, and the STS evaluation side.

* :func:`run_train_py`: train.py itself, as a subprocess (two runs: the first ends as a kill would after
  checkpoint 4, the second resumes it with ``--resume_from_checkpoint last``), with fp16 on CUDA (a CPU
  ``GradScaler`` stands in on CPU), ``--skip_nonfinite`` and a NaN loss injected at step 6, gradient
  caching, ``--do_mlm``, a dev evaluation and checkpoints; :func:`judge_train_py` checks their files.
* :func:`gradcache_equality`: the gradient-cached step against one backward through the same batch, with
  dropout on, on the device (CUDA draws dropout masks with its own generator: the CPU test,
  tests/test_gradcache.py, does not cover that replay), and with the replay switched off, which must differ.
* :func:`sts_side`: our STS evaluation against sentence-transformers' encode + Spearman and a bare forward
  pass (``bench/eval_speed.py``'s three sides) on STS-B and SICK-R test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
INJECT = Path(__file__).resolve().parent / "inject"
NAN_STEP, STOP_AT, STEPS = 6, 4, 8


def train_py_args(setup, train_file: str, senteval: str, output_dir: str, batch_size: int) -> list[str]:
    args = ["--model_name_or_path", setup.backbone_dir, "--train_file", train_file, "--output_dir", output_dir,
            "--cache_dir", os.path.join(setup.work, "train-py-cache"), "--pooler_type", "cls", "--mlp_only_train",
            "--temp", "0.05", "--learning_rate", "3e-5", "--per_device_train_batch_size", str(batch_size),
            "--max_seq_length", "32", "--max_steps", str(STEPS),
            "--grad_cache_mini_batch", str(max(1, batch_size // 4)),
            "--do_mlm", "--skip_nonfinite", "--save_strategy", "steps", "--save_steps", str(STOP_AT),
            "--eval_strategy", "steps", "--eval_steps", str(STEPS), "--senteval_data", senteval,
            "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true", "--seed", "42"]
    return args + (["--fp16"] if setup.cuda else ["--use_cpu"])


def child_env(extra: dict) -> dict:
    """The environment of a train.py run: the start-up hook, the repository, SentEval and the benches first
    on PYTHONPATH, then what was there (made absolute: the pack's folder may have been given relative)."""
    inherited = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = [str(INJECT), str(REPO), str(REPO / "SentEval"), str(REPO / "bench"), *inherited]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1", **extra}


def launch(args: list[str], env: dict, log: Path, timeout: float) -> dict:
    """Run ``python train.py ARGS``; its output goes to ``log``. ``{"status", "seconds", "tail"}``."""
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        try:
            status = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                                    stdout=handle, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    text = log.read_text(encoding="utf-8", errors="replace")
    return {"status": status, "seconds": round(time.perf_counter() - started, 1), "log": str(log),
            "tail": text[-2000:]}


def run_train_py(setup, train_file: str, senteval: str, run: str, timeout: float, batch_size: int) -> dict:
    """One of the two train.py runs: ``first`` (ends after checkpoint 4) or ``resume`` (from it, NaN at 6)."""
    out = Path(setup.work) / "train-py"
    trace = Path(setup.work) / f"train-py-{run}.trace.json"
    extra = {"GPU_CHECK_TRACE": str(trace), "GPU_CHECK_CPU_SCALER": "0" if setup.cuda else "1"}
    args = train_py_args(setup, train_file, senteval, str(out), batch_size)
    if run == "first":
        extra["GPU_CHECK_EXIT_AFTER_CHECKPOINT"] = str(STOP_AT)
    else:
        extra["GPU_CHECK_NAN_STEP"] = str(NAN_STEP)
        args += ["--resume_from_checkpoint", "last"]
    result = launch(args, child_env(extra), Path(setup.work) / f"train-py-{run}.log", timeout)
    result["trace"] = json.loads(trace.read_text(encoding="utf-8")) if trace.is_file() else None
    result["command"] = "python train.py " + " ".join(args)
    return result


def judge_train_py(first: dict, resume: dict, output_dir: Path) -> dict:
    """The checks of the two runs, each True/False (missing evidence is False)."""
    from simcse.training.reliability import MARKER

    def read(name: str) -> dict:
        path = output_dir / name
        return json.loads(path.read_text()) if path.is_file() else {}

    state, results = read("trainer_state.json"), read("train_results.json")
    history = state.get("log_history", [])
    losses = {h["step"]: h["loss"] for h in history if "loss" in h}
    evals = [h for h in history if "eval_stsb_spearman" in h]
    trace = (resume or {}).get("trace") or {}
    skipped = trace.get("scaler_skipped") or []
    steps = trace.get("steps") or []
    at_nan = steps.index(NAN_STEP) if NAN_STEP in steps else None
    return {
        "first_run_ended_after_checkpoint": (first or {}).get("status") == 3
        and (output_dir / f"checkpoint-{STOP_AT}" / MARKER).is_file(),
        "resumed_from_the_checkpoint": resume.get("status") == 0 and trace.get("start_step") == STOP_AT
        and steps == list(range(STOP_AT + 1, STEPS + 1)),
        "nonfinite_step_skipped": results.get("skipped_nonfinite_steps") == 1,
        "scaler_saw_the_skipped_step": at_nan is not None and len(skipped) > at_nan and skipped[at_nan] is True,
        "losses_after_the_skip_finite": all(isinstance(losses.get(s), float) and math.isfinite(losses[s])
                                            for s in range(NAN_STEP + 1, STEPS + 1)),
        "dev_evaluation_finite": bool(evals) and all(math.isfinite(e["eval_stsb_spearman"]) for e in evals),
        "checkpoint_and_final_model_saved": (output_dir / f"checkpoint-{STEPS}" / MARKER).is_file()
        and (output_dir / "model.safetensors").is_file(),
    }


def gradcache_equality(setup, batch_size: int, chunk: int) -> dict:
    """The cached step's loss and gradients against one backward over the same chunked forwards (same
    seeds, so dropout draws the same masks), fp32 with TF32 off; then with the random-state replay
    switched off, which must change the gradients (else dropout was not exercised)."""
    from transformers import AutoConfig

    from simcse.losses import build_loss
    from simcse.modeling.models import BertForCL, configure
    from simcse.training import gradcache

    config = configure(AutoConfig.from_pretrained(setup.backbone_dir), pooler_type="cls", temp=0.05)
    torch.manual_seed(0)
    model = BertForCL.from_pretrained(setup.backbone_dir, config=config).to(setup.device).train()
    loss_fn = build_loss("infonce", temp=0.05)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, setup.tokenizer.vocab_size, (batch_size, 1, 32), generator=g).repeat(1, 2, 1)
    mask = torch.ones_like(ids)
    mask[::3, :, 20:] = 0
    inputs = {"input_ids": (ids * mask).to(setup.device), "attention_mask": mask.to(setup.device)}

    def loss_of(z):
        return loss_fn(z[:, 0], z[:, 1])

    def grads():
        return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    def reference():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        z = torch.cat([model(**c).embeddings.float() for c in gradcache.split_batch(inputs, chunk)])
        loss = loss_of(z)
        loss.backward()
        return loss.detach(), grads(), z.detach()

    def cached():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        loss, _ = gradcache.cached_step(model, inputs, chunk, loss_of, backward=lambda t: t.backward())
        return loss.detach(), grads()

    def worst(a: dict, b: dict) -> float:  # the largest difference, relative to each tensor's largest value
        return max(float((a[n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-12)) for n in b)

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    restore = gradcache.RandomState.restore
    try:
        ref_loss, ref_grads, z = reference()
        loss, got = cached()
        gradcache.RandomState.restore = lambda self: None  # no replay: other dropout masks
        _, unreplayed = cached()
    finally:
        gradcache.RandomState.restore = restore
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    views_differ = not torch.allclose(z[:, 0], z[:, 1])
    return {"device": str(setup.device), "batch_size": batch_size, "chunk": chunk,
            "loss_difference": abs(float(loss) - float(ref_loss)),
            "max_relative_grad_difference": worst(got, ref_grads),
            "without_replay_max_relative_grad_difference": worst(unreplayed, ref_grads),
            "dropout_views_differ": views_differ, "parameters_compared": len(ref_grads)}


def sts_pairs(data_dir: Path) -> dict:
    from senteval.registry import build_task

    pairs = {}
    for name in ("STSBenchmark", "SICKRelatedness"):
        task = build_task(name, data_dir / "downstream")
        a, b, gold = task.data["test"]
        pairs[name] = {"test": ([" ".join(t) for t in a], [" ".join(t) for t in b], gold)}
    return pairs


def sts_side(model_dir: str, data_dir: Path, device: str, batch_size: int = 64) -> dict:
    """bench/eval_speed.py's three sides (ours, sentence-transformers, the bare forward floor) on STS-B and
    SICK-R test, task by task with the first side rotating; mean pooling."""
    import eval_speed

    pairs = sts_pairs(data_dir)
    sides = {"ours": eval_speed.Ours(model_dir, "avg", batch_size, device, data_dir),
             "peer": eval_speed.Peer(model_dir, batch_size, device, pairs),
             "floor": eval_speed.Floor(model_dir, batch_size, device, pairs)}
    scores = {"ours": {}, "peer": {}}
    seconds = dict.fromkeys(sides, 0.0)
    order = list(sides)
    for i, task in enumerate(pairs):
        for name in order[i % 3:] + order[:i % 3]:
            started = time.perf_counter()
            value = sides[name].score(task)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds[name] += time.perf_counter() - started
            if name != "floor":
                scores[name][task] = value
    diffs = {t: abs(scores["ours"][t] - scores["peer"][t]) for t in pairs}
    return {"model": model_dir, "device": device, "batch_size": batch_size,
            "pairs": {t: len(p["test"][2]) for t, p in pairs.items()}, "ours": scores["ours"], "peer": scores["peer"],
            "max_abs_diff": max(diffs.values()), "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "peer_over_ours": round(seconds["peer"] / seconds["ours"], 3),
            "ours_over_floor": round(seconds["ours"] / seconds["floor"], 3)}
