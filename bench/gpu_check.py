"""GPU check: BERT-base unsupervised SimCSE throughput (fp32, fp16, bf16) and STS evaluation speed.

    python bench/gpu_check.py --output_json gpu_check.json          # on a CUDA machine, < 10 minutes
    python bench/gpu_check.py --tiny                                 # CPU: a tiny configuration in seconds

Training: a BERT-base-sized model (``BertConfig()`` defaults: 12 layers, hidden 768, 30,522 word pieces)
with random weights and the real bert-base-uncased tokenizer (``../shared/models/tokenizers``), the
unsupervised SimCSE recipe of Gao et al. 2021 (arXiv:2104.08821: [CLS] + MLP head in training, InfoNCE
with temperature 0.05, two dropout views of each sentence), batch 64, max length 32, 100 steps over the
wiki1m sample, in one process, one side after the other:

* ``floor``: a plain PyTorch loop over pre-collated batches already on the device: the same model and
  loss, ``torch.autocast`` + ``torch.amp.GradScaler`` for fp16 (autocast alone for bf16), fused AdamW;
* ``ours``: :class:`simcse.training.trainers.SimCSETrainer` as train.py runs it, fp32, ``--fp16`` and ``--bf16``;
* ``peer``: sentence-transformers' unsupervised SimCSE recipe on the same random backbone
  (``SentenceTransformer`` with its default mean pooling, ``MultipleNegativesRankingLoss(scale=20)``,
  (sentence, sentence) pairs, ``SentenceTransformerTrainer``), in the same precisions.

bf16 runs where ``torch.cuda.is_bf16_supported()`` (fp16 needs CUDA: on CPU only fp32 and bf16 run).
Throughput is steady state: from the end of step ``--warmup`` to the end of the last step, the device
synchronized at each step end. Peak memory is ``torch.cuda.max_memory_allocated`` per side (reset
between sides); on CPU it is the process's resident high-water mark so far (cumulative). Checks: every
loss finite, and no optimizer step skipped by the fp16 gradient scaler after the warm-up steps (the
scaler's first steps may skip while it calibrates). Ratios: each side over the floor of the same
precision, ours over the peer. The reference to beat: the Jittor reproduction of SimCSE, BERT-base batch
64 length 32 on an RTX 3090: 6.62 steps/s fp32 and 8.76 steps/s with its fp16.

Evaluation: ``bench/eval_speed.py`` on the same device: the STS suite (STS12-16, STS-B, SICK-R test) of
all-MiniLM-L6-v2 with our evaluation against sentence-transformers' ``encode`` + scipy Spearman. With
``--tiny`` it runs only when ``--sts_data`` is given (the full suite takes minutes on a CPU).

Writes everything to one JSON (``--output_json``) and exits with status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "SentEval")]

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertModel, TrainerCallback  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from senteval.datapath import shared_dir  # noqa: E402
from simcse.data import (  # noqa: E402
    SimCSECollator,
    load_training_dataset,
    tokenize_dataset,  # noqa: E402
)
from simcse.losses import build_loss  # noqa: E402
from simcse.modeling.models import BertForCL, configure  # noqa: E402
from simcse.training.arguments import SimCSETrainingArguments  # noqa: E402
from simcse.training.trainers import SimCSETrainer  # noqa: E402

MAX_LENGTH = 32
LR = 3e-5
TEMP = 0.05
JITTOR_RTX3090_STEPS_PER_S = {"fp32": 6.62, "fp16": 8.76}
TINY_CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


@dataclass
class Setup:
    device: torch.device
    config: BertConfig
    tokenizer: object
    sentences: list[str]
    examples: object  # TrainingExamples of the sentences
    backbone_dir: str  # the random backbone saved for sentence-transformers
    work: str
    batch_size: int
    steps: int
    warmup: int

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


class StepProbe(TrainerCallback):
    """The time at the end of every optimizer step and whether the fp16 scaler skipped it."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.ends: list[float] = []
        self.skipped: list[bool] = []
        self.trainer = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.cuda:
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        accelerator = getattr(self.trainer, "accelerator", None)
        self.skipped.append(bool(getattr(accelerator, "optimizer_step_was_skipped", False)))


def simcse_model(setup: Setup) -> BertForCL:
    torch.manual_seed(0)
    config = configure(BertConfig(**setup.config.to_dict()), pooler_type="cls", mlp_only_train=True, temp=TEMP)
    return BertForCL(config)


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def run_floor(setup: Setup, precision: str) -> dict:
    model = simcse_model(setup).to(setup.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, fused=True)
    loss_fn = build_loss("infonce", temp=TEMP)
    scaler = torch.amp.GradScaler(setup.device.type, enabled=precision == "fp16")
    collator = SimCSECollator(setup.tokenizer)
    b = setup.batch_size
    batches = [{k: v.to(setup.device)
                for k, v in collator(setup.examples.__getitems__(range(i * b, (i + 1) * b))).items()}
               for i in range(setup.steps)]
    dtype = autocast_dtype(precision)
    ends, skipped, losses = [], [], []
    for batch in batches:
        with torch.autocast(setup.device.type, dtype=dtype, enabled=dtype is not None):
            z = model(**batch).embeddings
        loss = loss_fn(z[:, 0].float(), z[:, 1].float())
        optimizer.zero_grad(set_to_none=True)
        scale = scaler.get_scale() if scaler.is_enabled() else None
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        skipped.append(scaler.is_enabled() and scaler.get_scale() < scale)  # the scale drops on a skipped step
        losses.append(loss.detach())
        if setup.cuda:
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
    values = torch.stack(losses).float().cpu()
    return {"ends": ends, "skipped": skipped, "loss_finite": bool(torch.isfinite(values).all()),
            "last_loss": float(values[-1]), "final_scale": scaler.get_scale() if scaler.is_enabled() else None}


def run_ours(setup: Setup, precision: str) -> dict:
    args = SimCSETrainingArguments(
        output_dir=os.path.join(setup.work, f"ours-{precision}"), per_device_train_batch_size=setup.batch_size,
        max_steps=setup.steps, learning_rate=LR, save_strategy="no", eval_strategy="no", report_to="none",
        logging_strategy="no", disable_tqdm=True, use_cpu=not setup.cuda, seed=42, dataloader_drop_last=True,
        fp16=precision == "fp16", bf16=precision == "bf16",
    )
    probe = StepProbe(setup.cuda)
    # A non-finite loss stops the run with NonFiniteLoss (SimCSETrainer's check before every backward).
    trainer = SimCSETrainer(model=simcse_model(setup), args=args, train_dataset=setup.examples,
                            data_collator=SimCSECollator(setup.tokenizer), loss_fn=build_loss("infonce", temp=TEMP),
                            callbacks=[probe])
    probe.trainer = trainer
    output = trainer.train()
    scaler = getattr(trainer.accelerator, "scaler", None)
    return {"ends": probe.ends, "skipped": probe.skipped, "loss_finite": math.isfinite(output.training_loss),
            "mean_loss": output.training_loss, "final_scale": scaler.get_scale() if scaler is not None else None}


def run_peer(setup: Setup, precision: str) -> dict:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    model = SentenceTransformer(setup.backbone_dir, device=str(setup.device))
    model.max_seq_length = MAX_LENGTH
    pairs = Dataset.from_dict({"anchor": setup.sentences, "positive": setup.sentences})
    args = SentenceTransformerTrainingArguments(
        output_dir=os.path.join(setup.work, f"peer-{precision}"), per_device_train_batch_size=setup.batch_size,
        max_steps=setup.steps, learning_rate=LR, save_strategy="no", eval_strategy="no", report_to="none",
        logging_strategy="no", disable_tqdm=True, use_cpu=not setup.cuda, seed=42, dataloader_drop_last=True,
        fp16=precision == "fp16", bf16=precision == "bf16",
    )
    probe = StepProbe(setup.cuda)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs,
                                         loss=MultipleNegativesRankingLoss(model, scale=1 / TEMP), callbacks=[probe])
    probe.trainer = trainer
    output = trainer.train()
    scaler = getattr(trainer.accelerator, "scaler", None)
    return {"ends": probe.ends, "skipped": probe.skipped, "loss_finite": math.isfinite(output.training_loss),
            "mean_loss": output.training_loss, "final_scale": scaler.get_scale() if scaler is not None else None}


RUNNERS = {"floor": run_floor, "ours": run_ours, "peer": run_peer}


def measure(setup: Setup, side: str, precision: str) -> dict:
    gc.collect()
    if setup.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    raw = RUNNERS[side](setup, precision)
    seconds = time.perf_counter() - started
    ends = raw.pop("ends")
    skipped = raw.pop("skipped")
    if len(ends) != setup.steps:
        raise SystemExit(f"{side} {precision}: {len(ends)} steps recorded, {setup.steps} expected")
    steady = setup.warmup - 1  # index of the end of the last warm-up step
    steps_per_s = (len(ends) - 1 - steady) / (ends[-1] - ends[steady])
    peak = (torch.cuda.max_memory_allocated() / 2**20 if setup.cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"side": side, "precision": precision, "steps_per_s": steps_per_s,
            "sentences_per_s": steps_per_s * setup.batch_size, "peak_mb": round(peak, 1),
            "seconds_total": round(seconds, 2), "skipped_steps": int(sum(skipped)),
            "skipped_after_warmup": int(sum(skipped[setup.warmup:])), **raw}


def build_setup(args, tiny: bool, device: torch.device) -> Setup:
    shared = shared_dir()
    tokenizer_dir = args.tokenizer or (shared and shared / "models" / "tokenizers" / "bert-base-uncased")
    train_file = args.train_file or (shared and shared / "data" / "train" / "wiki1m_for_simcse.head11913.txt")
    if not tokenizer_dir or not Path(tokenizer_dir).is_dir():
        raise SystemExit(f"bert-base-uncased tokenizer not found ({tokenizer_dir}); pass --tokenizer DIR")
    if not train_file or not Path(train_file).is_file():
        raise SystemExit(f"training sentences not found ({train_file}); pass --train_file FILE (one per line)")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = BertConfig(vocab_size=len(tokenizer), **(TINY_CONFIG if tiny else {}))
    needed = args.steps * args.batch_size
    with open(train_file, encoding="utf-8") as handle:
        sentences = [line.rstrip("\n") for line in handle if line.strip()][:needed]
    if len(sentences) < needed:
        raise SystemExit(f"{train_file} has {len(sentences)} sentences; --steps x --batch_size = {needed} needed")
    work = tempfile.mkdtemp(prefix="simcse-gpu-check-")
    text = os.path.join(work, "train.txt")
    with open(text, "w", encoding="utf-8") as handle:
        handle.write("\n".join(sentences) + "\n")
    examples = tokenize_dataset(load_training_dataset(text, cache_dir=work), tokenizer, max_seq_length=MAX_LENGTH)
    torch.manual_seed(0)
    backbone_dir = os.path.join(work, "backbone")
    BertModel(config, add_pooling_layer=False).save_pretrained(backbone_dir)
    tokenizer.save_pretrained(backbone_dir)
    return Setup(device, config, tokenizer, sentences, examples, backbone_dir, work, args.batch_size, args.steps,
                 args.warmup)


def sts_speed(args, device: torch.device) -> dict:
    spec = importlib.util.spec_from_file_location("eval_speed", REPO / "bench" / "eval_speed.py")
    eval_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_speed)
    argv = ["--device", str(device), "--batch_size", "64", "--pooler", "avg"]
    if args.sts_data:
        argv += ["--senteval_data", args.sts_data]
    return eval_speed.main(argv)


def print_table(results: list[dict], setup: Setup) -> None:
    memory = "peak GPU MB" if setup.cuda else "peak RSS MB"
    print(f"\n{'side':<6}{'prec':<6}{'steps/s':>9}{'sent/s':>10}{memory:>13}{'vs floor':>10}{'vs peer':>9}"
          f"{'skipped':>9}{'finite':>8}")
    by = {(r["side"], r["precision"]): r for r in results}
    for r in results:
        floor = by.get(("floor", r["precision"]))
        peer = by.get(("peer", r["precision"]))
        vs_floor = f"{r['steps_per_s'] / floor['steps_per_s']:.2f}" if floor else "-"
        vs_peer = f"{r['steps_per_s'] / peer['steps_per_s']:.2f}" if peer and r["side"] == "ours" else "-"
        print(f"{r['side']:<6}{r['precision']:<6}{r['steps_per_s']:>9.2f}{r['sentences_per_s']:>10.1f}"
              f"{r['peak_mb']:>13.0f}{vs_floor:>10}{vs_peer:>9}{r['skipped_steps']:>9}{str(r['loss_finite']):>8}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model and run (automatic when no CUDA GPU)")
    parser.add_argument("--steps", type=int, default=None, help="default 100 (tiny: 8)")
    parser.add_argument("--warmup", type=int, default=None, help="steps left out of steps/s (default 10; tiny: 2)")
    parser.add_argument("--batch_size", type=int, default=None, help="default 64 (tiny: 8)")
    parser.add_argument("--tokenizer", default=None, help="default: ../shared/models/tokenizers/bert-base-uncased")
    parser.add_argument("--train_file", default=None, help="default: the wiki1m sample in ../shared/data/train")
    parser.add_argument("--sts_data", default=None, help="SentEval data dir for the STS speed part (default: resolved)")
    parser.add_argument("--skip_sts", action="store_true", help="leave out the STS evaluation speed part")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "fp16", "bf16"], default=None,
                        help="default: fp32, fp16 (CUDA) and bf16 (where supported)")
    parser.add_argument("--output_json", default="gpu_check.json")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    tiny = args.tiny or not cuda
    args.steps = args.steps or (8 if tiny else 100)
    args.warmup = args.warmup if args.warmup is not None else (2 if tiny else 10)
    args.batch_size = args.batch_size or (8 if tiny else 64)
    if not 1 <= args.warmup < args.steps - 1:
        parser.error(f"--warmup must be in [1, steps - 1), got {args.warmup} with --steps {args.steps}")
    device = torch.device("cuda" if cuda else "cpu")
    if not tiny and not cuda:
        parser.error("the full-size check needs a CUDA GPU; use --tiny on CPU")

    transformers_logging.set_verbosity_error()  # no per-run load reports; the table is the output
    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    setup = build_setup(args, tiny, device)
    supported = ["fp32"] + (["fp16"] if cuda else []) + (["bf16"] if not cuda or torch.cuda.is_bf16_supported() else [])
    precisions = args.precisions or supported
    if any(p not in supported for p in precisions):
        parser.error(f"--precisions {' '.join(precisions)}: this device supports {', '.join(supported)}")
    print(f"device {device}{' (' + torch.cuda.get_device_name() + ')' if cuda else ''}; "
          f"{'tiny' if tiny else 'BERT-base'} model, "
          f"{sum(p.numel() for p in simcse_model(setup).parameters()) / 1e6:.1f}M "
          f"parameters; batch {setup.batch_size}, max length {MAX_LENGTH}, {setup.steps} steps "
          f"({setup.warmup} warm-up); precisions {', '.join(precisions)}", flush=True)
    results = []
    for precision in precisions:
        for side in ("floor", "ours", "peer"):
            print(f"{side} {precision} ...", flush=True)
            results.append(measure(setup, side, precision))
    print_table(results, setup)

    by = {(r["side"], r["precision"]): r for r in results}
    ratios = {}
    for p in precisions:
        ratios[f"ours_over_floor_{p}"] = by[("ours", p)]["steps_per_s"] / by[("floor", p)]["steps_per_s"]
        ratios[f"ours_over_peer_{p}"] = by[("ours", p)]["steps_per_s"] / by[("peer", p)]["steps_per_s"]
        if p in JITTOR_RTX3090_STEPS_PER_S and not tiny:
            ratios[f"ours_over_jittor_rtx3090_{p}"] = by[("ours", p)]["steps_per_s"] / JITTOR_RTX3090_STEPS_PER_S[p]
    checks = {
        "losses_finite": all(r["loss_finite"] for r in results),
        "no_fp16_skips_after_warmup": all(r["skipped_after_warmup"] == 0 for r in results if r["precision"] == "fp16"),
    }
    for name, value in ratios.items():
        print(f"{name} = {value:.2f}")
    print("reference to beat (Jittor reproduction, BERT-base batch 64 length 32, RTX 3090): "
          f"{JITTOR_RTX3090_STEPS_PER_S['fp32']} steps/s fp32, {JITTOR_RTX3090_STEPS_PER_S['fp16']} steps/s fp16")

    sts = None
    if args.skip_sts or (tiny and not args.sts_data):
        print("STS evaluation speed: skipped" + (" (--tiny without --sts_data)" if not args.skip_sts else ""))
    else:
        print("\nSTS evaluation speed, all-MiniLM-L6-v2 (bench/eval_speed.py):", flush=True)
        sts = sts_speed(args, device)
    for name, ok in checks.items():
        print(f"check {name}: {'ok' if ok else 'FAILED'}")
    payload = {
        "device": str(device), "gpu": torch.cuda.get_device_name() if cuda else None, "tiny": tiny,
        "torch": torch.__version__, "platform": platform.platform(), "batch_size": setup.batch_size,
        "max_length": MAX_LENGTH, "steps": setup.steps, "warmup": setup.warmup,
        "model": "BertConfig(" + ("" if not tiny else ", ".join(f"{k}={v}" for k, v in TINY_CONFIG.items())) + ")",
        "reference_jittor_rtx3090_steps_per_s": JITTOR_RTX3090_STEPS_PER_S,
        "results": results, "ratios": ratios, "checks": checks, "sts_eval_speed": sts,
    }
    Path(args.output_json).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.output_json}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
