"""GPU check: the one command for a CUDA machine. Throughput with MFU, fp16 checks that can fail, the
real train.py path on the device, gradient caching on the device, STS evaluation speed; one JSON.

    python bench/gpu_check.py --output_json gpu_check.json     # one CUDA GPU; its parts fit an 8-minute limit
    python bench/gpu_check.py --tiny                            # CPU: a tiny configuration (what CI runs)

On an offline node, with the pack of ``scripts/gpu_pack.sh`` (the wheels the node lacks, the tokenizer,
the data): the README's "The GPU check" section gives the command. Inputs come from ``--pack`` (default
``gpu_pack/`` when present), else from ``../shared``. A BERT-base-sized model (``BertConfig()``, random
weights, the bert-base-uncased tokenizer) is trained; parts, each side in its own try block, the JSON
rewritten after every side:

* ``gradcache``: gradient caching equals one backward on the device, with dropout on (paths.py);
* ``train_py``: train.py itself, twice: fp16, ``--skip_nonfinite`` with a NaN loss injected at step 6,
  ``--grad_cache_mini_batch``, ``--do_mlm``, checkpoints, a dev evaluation; the first run ends after
  checkpoint 4 as a kill would, the second resumes it (paths.py);
* ``unsup``: unsupervised SimCSE, batch 64, length 32 (the paper's recipe; launch-bound on a big GPU) and
  ``sup``: the supervised recipe's 128 NLI triplets per device (GPU-bound): floor, ours and
  sentence-transformers (sides.py) in fp32, fp16 and bf16; steps/s timed by CUDA events with the host
  waiting only at the ends of the timed window; MFU (6 x N x T FLOPs over the dense peak); fp16 skips
  read from the scaler's scale (probes.py: accelerate's skip flag is always False with the fused AdamW);
* ``sts``: our STS evaluation against sentence-transformers and a bare forward pass (eval_speed.py's
  sides) on STS-B and SICK-R test; with random weights it measures speed and agreement, not quality.

``--time_limit`` (default 480 s on CUDA) skips a part whose budget (:data:`BUDGET_S`) no longer fits and
stops a throughput side at twice its share. Exit status: 0 when every check passed, 1 otherwise, 2 when
nothing could run (no GPU, a missing module or input).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO / "bench"), str(REPO / "SentEval"), str(REPO)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from gpucheck import environment  # noqa: E402  (no CUDA call at import: the GPU is pinned first)

PARTS = ("gradcache", "train_py", "unsup", "sup", "sts")
# Seconds each part may take on one H100/H200: budgets set here, not measurements (no GPU has run this
# yet); the JSON records what each side took. Their sum stays under the 480 s default limit.
BUDGET_S = {"setup": 40, "gradcache": 20, "train_py": 170, "unsup": 100, "sup": 90, "sts": 40}
WORKLOADS = {  # batch size, steps, warm-up steps left out of the timing
    "full": {"unsup": (64, 100, 10), "sup": (128, 40, 10), "gradcache": (32, 8), "train_py": 64},
    "tiny": {"unsup": (8, 8, 2), "sup": (8, 6, 2), "gradcache": (8, 2), "train_py": 8},
}
TINY_CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
JITTOR_RTX3090_STEPS_PER_S = {"fp32": 6.62, "fp16": 8.76}  # the Jittor reproduction, BERT-base b64 len32
GRADCACHE_TOLERANCE, STS_TOLERANCE = 1e-4, 0.05  # relative gradient difference; Spearman x 100 points


class Report:
    """The JSON, rewritten atomically after every side, so that a run cut short keeps what it measured."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.data: dict = {"status": "running", "parts": {}, "checks": {}}

    def save(self) -> None:
        from simcse.files import atomic_write_text

        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model and runs (the only mode without CUDA)")
    parser.add_argument("--pack", default=None, help="the pack of scripts/gpu_pack.sh (default: gpu_pack/ if present)")
    parser.add_argument("--tokenizer", default=None, help="default: the pack's, else ../shared's bert-base-uncased")
    parser.add_argument("--train_file", default=None, help="unsupervised sentences (default: the pack's wiki slice)")
    parser.add_argument("--nli_file", default=None, help="NLI triplets sent0,sent1,hard_neg (default: the pack's)")
    parser.add_argument("--sts_data", default=None, help="SentEval data dir holding downstream/ (default: the pack's)")
    parser.add_argument("--sts_model", default=None, help="a mean-pooling model for the STS part (default: the "
                        "pack's sts_model/ if there, else the random backbone: speed and agreement, not quality)")
    parser.add_argument("--skip_sts", action="store_true", help="leave out the STS part")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="default: all")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "fp16", "bf16"], default=None,
                        help="default: fp32, fp16 (CUDA) and bf16 (where supported)")
    parser.add_argument("--time_limit", type=float, default=None,
                        help="seconds (default 480 on CUDA, none with --tiny)")
    parser.add_argument("--output_json", default="gpu_check.json")
    return parser.parse_args(argv)


def resolve_inputs(args) -> dict:
    """Where every input comes from: a flag, the pack, or ../shared (the pack wins over ../shared)."""
    from senteval.datapath import shared_dir
    from simcse.errors import SimCSEError

    pack = Path(args.pack) if args.pack else (REPO / "gpu_pack" if (REPO / "gpu_pack").is_dir() else None)
    if args.pack and not pack.is_dir():
        raise SimCSEError(f"`pack` {args.pack} is not a folder; build it with bash scripts/gpu_pack.sh")
    shared = shared_dir()

    def pick(flag: str, explicit, in_pack: str, in_shared: str, must: bool = True):
        candidates = [explicit] if explicit else [pack and pack / in_pack, shared and shared / in_shared]
        for candidate in candidates:
            if candidate and Path(candidate).exists():
                return str(candidate)
        if must:
            raise SimCSEError(f"no {flag.replace('_', ' ')} (looked in {', '.join(str(c) for c in candidates if c)}"
                              f" or nowhere); build the pack (bash scripts/gpu_pack.sh) or pass `{flag}`")
        return None

    inputs = {"pack": str(pack) if pack else None,
              "tokenizer": pick("tokenizer", args.tokenizer, "tokenizer", "models/tokenizers/bert-base-uncased"),
              "train_file": pick("train_file", args.train_file, "data/wiki1m.txt",
                                 "data/train/wiki1m_for_simcse.head11913.txt"),
              "nli_file": pick("nli_file", args.nli_file, "data/nli.csv", "data/train/nli_snli_devtest_for_simcse.csv"),
              "sts_data": pick("sts_data", args.sts_data, "senteval", "data", must=False),
              "sts_model": str(pack / "sts_model") if pack and (pack / "sts_model").is_dir() else None}
    manifest = pack / "manifest.json" if pack else None
    inputs["pack_manifest"] = json.loads(manifest.read_text()) if manifest and manifest.is_file() else None
    return inputs


def build_setup(inputs: dict, tiny: bool, device, gpu_name, tf32: bool):
    import tempfile

    import torch
    from gpucheck.sides import Setup, load_workload
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(inputs["tokenizer"])
    config = BertConfig(vocab_size=len(tokenizer), **(TINY_CONFIG if tiny else {}))
    work = tempfile.mkdtemp(prefix="simcse-gpu-check-")
    backbone = str(Path(work) / "backbone")
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    setup = Setup(device, tokenizer, backbone, work, gpu_name, tf32)
    sizes = WORKLOADS["tiny" if tiny else "full"]
    workloads = {name: load_workload(name, inputs[key], tokenizer, *sizes[name], work)
                 for name, key in (("unsup", "train_file"), ("sup", "nli_file"))}
    return setup, workloads


class Runner:
    """Runs the parts in order, each side in its own try block, and keeps the time limit."""

    def __init__(self, report: Report, limit: float | None, cuda: bool):
        self.report, self.limit, self.cuda = report, limit, cuda
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self) -> float | None:
        return None if self.limit is None else self.limit - self.elapsed()

    def open(self, part: str, selected: bool, why_not: str | None = None) -> bool:
        entry = self.report.data["parts"][part] = {"status": "running", "budget_s": BUDGET_S[part], "sides": []}
        reason = None
        if not selected:
            reason = why_not or "not in --parts"
        elif self.limit is not None and self.elapsed() + BUDGET_S[part] > self.limit:
            reason = (f"time limit: {self.elapsed():.0f} s used of {self.limit:.0f}, this part is budgeted "
                      f"{BUDGET_S[part]} s")
            entry["time_limited"] = True
        if reason:
            entry.update(status="skipped", reason=reason)
            print(f"{part}: skipped ({reason})", flush=True)
            self.report.save()
            return False
        entry["started_at_s"] = round(self.elapsed(), 1)
        return True

    def side(self, part: str, name: str, fn, *args, share: float = 1.0) -> dict:
        """``fn(*args)`` as one side of ``part``, its budget ``share`` x the part's; recorded, error or not."""
        import torch

        budget = round(BUDGET_S[part] * share, 1)
        print(f"{part} {name} (budget {budget:g} s) ...", flush=True)
        started = time.perf_counter()
        try:
            result, status = fn(*args), "ok"
        except Exception as err:  # recorded; the other sides still run
            status = "error"
            result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-4000:]}
            print(f"{part} {name}: ERROR {type(err).__name__}: {err}", flush=True)
            if self.cuda:
                torch.cuda.empty_cache()
        entry = {"name": name, "status": status, "seconds": round(time.perf_counter() - started, 2),
                 "budget_s": budget, **result}
        self.report.data["parts"][part]["sides"].append(entry)
        self.report.save()
        return entry

    def close(self, part: str, checks: dict | None = None) -> None:
        entry = self.report.data["parts"][part]
        if entry["status"] != "running":
            return
        errors = [s["name"] for s in entry["sides"] if s["status"] == "error"]
        entry.update(status="error" if errors else "ok", seconds=round(self.elapsed() - entry["started_at_s"], 1))
        if checks is not None:
            entry["checks"] = checks
            self.report.data["checks"].update({f"{part}.{k}": v for k, v in checks.items()})
        self.report.save()

    def side_seconds(self, part: str, sides: int) -> float | None:
        """A throughput side stops after twice its share of the part's budget, or at the time limit."""
        if self.limit is None:
            return None
        return max(1.0, min(2 * BUDGET_S[part] / sides, self.remaining() - 5))


def throughput(runner: Runner, setup, workload, part: str, precisions: list[str]) -> None:
    from gpucheck.sides import measure

    names = [(side, p) for p in precisions for side in ("floor", "ours", "peer")]
    for side, precision in names:
        runner.side(part, f"{side} {precision}", measure, setup, workload, side, precision,
                    runner.side_seconds(part, len(names)), share=1 / len(names))
    results = [s for s in runner.report.data["parts"][part]["sides"] if s["status"] == "ok"]
    by = {(r["side"], r["precision"]): r for r in results}
    ratios = {}
    for p in precisions:
        ours, floor, peer = by.get(("ours", p)), by.get(("floor", p)), by.get(("peer", p))
        if ours and floor and ours["steps_per_s"] and floor["steps_per_s"]:
            ratios[f"ours_over_floor_{p}"] = ours["steps_per_s"] / floor["steps_per_s"]
        if ours and peer and ours["steps_per_s"] and peer["steps_per_s"]:
            ratios[f"ours_over_peer_{p}"] = ours["steps_per_s"] / peer["steps_per_s"]
        if part == "unsup" and ours and ours["steps_per_s"] and p in JITTOR_RTX3090_STEPS_PER_S and setup.cuda:
            ratios[f"ours_over_jittor_rtx3090_{p}"] = ours["steps_per_s"] / JITTOR_RTX3090_STEPS_PER_S[p]
    runner.report.data["parts"][part]["ratios"] = ratios
    print_table(part, results, setup.cuda)
    fp16 = [r for r in results if r["precision"] == "fp16"]
    runner.close(part, {
        "losses_finite": bool(results) and all(r["loss_finite"] for r in results),
        "no_fp16_skips_after_warmup": all(r["skipped_after_warmup"] == 0 for r in fp16),  # read from the scale
        "fp16_scale_read_on_every_fp16_side": all(r["skipped_steps"] is not None for r in fp16),
    })


def print_table(part: str, results: list[dict], cuda: bool) -> None:
    def fmt(value, spec):
        width = int("".join(c for c in spec.split(".")[0] if c.isdigit()))
        return format(value, spec) if value is not None else format("-", f">{width}")

    memory = "peak GPU MB" if cuda else "peak RSS MB"
    print(f"\n{part}: {'side':<6}{'prec':<6}{'steps/s':>9}{'tokens/s':>11}{'TFLOPS':>8}{'MFU':>7}{memory:>13}"
          f"{'vs floor':>10}{'skipped':>9}")
    by = {(r["side"], r["precision"]): r for r in results}
    for r in results:
        floor = by.get(("floor", r["precision"]))
        vs = r["steps_per_s"] / floor["steps_per_s"] if floor and floor["steps_per_s"] and r["steps_per_s"] else None
        print(f"{'':<{len(part) + 2}}{r['side']:<6}{r['precision']:<6}{fmt(r['steps_per_s'], '>9.2f')}"
              f"{fmt(r['tokens_per_s'], '>11.0f')}{fmt(r['achieved_tflops'], '>8.1f')}{fmt(r['mfu'], '>7.1%')}"
              f"{r['peak_mb']:>13.0f}{fmt(vs, '>10.2f')}{fmt(r['skipped_steps'], '>9')}")


def run_parts(args, runner: Runner, setup, workloads, inputs: dict, precisions: list[str], tiny: bool) -> None:
    from gpucheck import paths

    sizes = WORKLOADS["tiny" if tiny else "full"]
    if runner.open("gradcache", "gradcache" in args.parts):
        side = runner.side("gradcache", "cached vs one backward", paths.gradcache_equality, setup, *sizes["gradcache"])
        ok = side["status"] == "ok"
        runner.close("gradcache", {
            "equal_to_one_backward": ok and side["max_relative_grad_difference"] <= GRADCACHE_TOLERANCE
            and side["loss_difference"] <= 1e-5,
            "replay_matters": ok and side["without_replay_max_relative_grad_difference"] > 10 * GRADCACHE_TOLERANCE,
            "dropout_on": ok and side["dropout_views_differ"]})

    senteval = inputs["sts_data"]
    if runner.open("train_py", "train_py" in args.parts and senteval is not None,
                   "no SentEval data for its dev evaluation (the pack's senteval/; --sts_data DIR)"):
        timeout = 600 if runner.limit is None else max(30.0, runner.remaining() / 2)
        first = runner.side("train_py", "first run", paths.run_train_py, setup, inputs["train_file"], senteval,
                            "first", timeout, sizes["train_py"], share=0.4)
        timeout = 600 if runner.limit is None else max(30.0, runner.remaining() - 10)
        resume = runner.side("train_py", "resumed run", paths.run_train_py, setup, inputs["train_file"], senteval,
                             "resume", timeout, sizes["train_py"], share=0.6)
        runner.close("train_py", paths.judge_train_py(first, resume, Path(setup.work) / "train-py"))

    for part in ("unsup", "sup"):
        if runner.open(part, part in args.parts):
            throughput(runner, setup, workloads[part], part, precisions)

    if args.skip_sts:
        why = "--skip_sts"
    elif senteval is None:
        why = "no SentEval data: build the pack (its senteval/) or pass --sts_data DIR"
    else:
        why = None
    if runner.open("sts", "sts" in args.parts and why is None, why):
        model = args.sts_model or inputs["sts_model"] or setup.backbone_dir
        note = (f"the model {model}" if model != setup.backbone_dir else "random weights (no pretrained model "
                "travels to the node): this measures our evaluation's speed and its agreement with "
                "sentence-transformers, not quality")
        print(f"sts: {note}", flush=True)
        runner.report.data["parts"]["sts"]["what_it_measures"] = note
        side = runner.side("sts", "ours vs peer vs floor", paths.sts_side, model, Path(senteval), str(setup.device))
        runner.close("sts", {"ours_agrees_with_peer": side["status"] == "ok" and side["max_abs_diff"] <= STS_TOLERANCE})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    visible = environment.pin_one_gpu()  # before anything starts CUDA
    report = Report(args.output_json)
    report.data.update(started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                       argv=sys.argv[1:] if argv is None else list(argv), budgets_s=BUDGET_S)
    print(f"gpu_check: {visible['note']}", flush=True)
    modules = environment.preflight()
    report.data["environment"] = {"cuda_visible_devices": visible, "modules": modules,
                                  "versions": environment.versions()}
    for name in modules["missing"] + modules["missing_optional"]:
        needed = environment.OPTIONAL.get(name, "everything")
        print(f"gpu_check: missing module {name} (needed by {needed}): {modules['errors'][name]}", flush=True)
    if modules["missing"]:
        print(f"gpu_check: error: missing module(s) {', '.join(modules['missing'])}: install the pack's wheels "
              "(README, The GPU check)", flush=True)
        return finish(report, 2)

    import torch

    cuda = torch.cuda.is_available()
    tiny = args.tiny
    env = report.data["environment"]
    env.update(gpu=environment.guarded(environment.gpu_info), tf32=environment.guarded(environment.tf32_state),
               module_locations=environment.guarded(environment.module_locations),
               torch_threads=torch.get_num_threads())
    if not cuda and not tiny:
        print(f"gpu_check: error: no CUDA GPU visible ({visible['note']}; torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda}); the full check needs one, --tiny runs on CPU", flush=True)
        return finish(report, 2)
    if cuda and torch.cuda.device_count() != 1:
        print(f"gpu_check: error: {torch.cuda.device_count()} GPUs visible after pinning; set CUDA_VISIBLE_DEVICES "
              "to one GPU before starting", flush=True)
        return finish(report, 2)
    supported = ["fp32"] + (["fp16"] if cuda else []) + (["bf16"] if not cuda or torch.cuda.is_bf16_supported() else [])
    precisions = args.precisions or supported
    unsupported = [p for p in precisions if p not in supported]
    limit = args.time_limit if args.time_limit is not None else (None if tiny else 480.0)
    report.data.update(tiny=tiny, precisions=precisions, time_limit_s=limit)
    if unsupported:
        print(f"gpu_check: error: precision(s) {', '.join(unsupported)} not supported here ({', '.join(supported)})")
        return finish(report, 2)

    from transformers.utils import logging as transformers_logging

    from simcse.errors import SimCSEError, as_flags

    transformers_logging.set_verbosity_error()  # no per-run load reports; the tables are the output
    transformers_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    runner = Runner(report, limit, cuda)
    device = torch.device("cuda" if cuda else "cpu")
    gpu = env["gpu"].get("name") if env["gpu"] else None
    try:
        inputs = resolve_inputs(args)
        report.data["inputs"] = inputs
        setup, workloads = build_setup(inputs, tiny, device, gpu, env["tf32"].get("fp32_matmuls_use_tf32", False))
    except (SimCSEError, OSError, ValueError) as err:
        print(f"gpu_check: error: {as_flags(str(err))}", flush=True)
        report.data["setup_error"] = f"{type(err).__name__}: {err}"
        return finish(report, 2)
    report.data["setup_seconds"] = round(runner.elapsed(), 1)
    report.data["model"] = "BertConfig(" + ", ".join(f"{k}={v}" for k, v in (TINY_CONFIG if tiny else {}).items()) + ")"
    report.data["workloads"] = {n: {"batch_size": w.batch_size, "steps": w.steps, "warmup": w.warmup,
                                    "train_file": w.train_file} for n, w in workloads.items()}
    print(f"device {device}{f' ({gpu})' if gpu else ''}; {'tiny' if tiny else 'BERT-base'} model; precisions "
          f"{', '.join(precisions)}; time limit {f'{limit:.0f} s' if limit else 'none'}; budgets (s) "
          + ", ".join(f"{k} {v}" for k, v in BUDGET_S.items()), flush=True)
    run_parts(args, runner, setup, workloads, inputs, precisions, tiny)
    parts = report.data["parts"]
    report.data["checks"]["no_side_errors"] = all(s["status"] != "error" for p in parts.values() for s in p["sides"])
    report.data["checks"]["no_part_cut_by_the_time_limit"] = not any(p.get("time_limited") for p in parts.values())
    report.data["ratios"] = {f"{part}.{k}": v for part, p in parts.items() for k, v in p.get("ratios", {}).items()}
    for name, value in report.data["ratios"].items():
        print(f"{name} = {value:.2f}")
    print("reference (Jittor reproduction, BERT-base batch 64 length 32, RTX 3090): "
          f"{JITTOR_RTX3090_STEPS_PER_S['fp32']} steps/s fp32, {JITTOR_RTX3090_STEPS_PER_S['fp16']} steps/s fp16")
    for part, p in parts.items():
        print(f"part {part}: {p['status']}" + (f" ({p['reason']})" if p.get("reason") else "")
              + (f", {p['seconds']} s (budget {p['budget_s']} s)" if "seconds" in p else ""))
    for name, ok in report.data["checks"].items():
        print(f"check {name}: {'ok' if ok else 'FAILED'}")
    return finish(report, 0 if all(report.data["checks"].values()) else 1)


def finish(report: Report, status: int) -> int:
    report.data.update(status="done", exit_status=status,
                       finished=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    report.save()
    print(f"wrote {report.path}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
