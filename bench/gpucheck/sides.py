"""The throughput sides of the GPU check: the same workload trained three ways, one after the other.

* ``floor``: a plain PyTorch loop doing the work our trainer does, and nothing else: the same collator
  and shuffled DataLoader (pinned memory on CUDA), the host-to-device copy of every batch, autocast
  (fp16 with a ``GradScaler``: unscale, clip to norm 1.0, step, update), fused AdamW, the linear
  schedule, gradients set to None. What it leaves out (:data:`FLOOR_LEAVES_OUT`) is reported with it.
* ``ours``: :func:`simcse.training.run.build_trainer`, the assembly train.py runs, with the sides' flags.
* ``peer``: sentence-transformers' recipe for the same data (``MultipleNegativesRankingLoss`` with scale
  1/temperature on (anchor, positive[, negative]) columns, ``SentenceTransformerTrainer``).

Every side is timed by :class:`~gpucheck.probes.StepClock`, its fp16 skips read from the scaler's scale
(:class:`~gpucheck.probes.ScaleTrace`), its tokens counted as its collator makes them, and it stops
early (reporting the steps made) once ``max_seconds`` have passed.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import time
from dataclasses import dataclass, field

import torch

from gpucheck.probes import (
    ScaleTrace,
    StepClock,
    TokenCounter,
    TrainerProbe,
    non_embedding_parameters,
    peak_tflops,
    training_flops,
    utilisation,
)

MAX_LENGTH = 32
LR = 3e-5
TEMP = 0.05
MAX_GRAD_NORM = 1.0  # the Trainer's default, which ours and the peer run with
FLOOR_LEAVES_OUT = ("the per-step non-finite bookkeeping of the Trainer (logging_nan_inf_filter) and of our "
                    "trainer (and any host read it makes)",
                    "our per-step diagnostics (alignment, uniformity, p_pos of the batch, kept on the device)",
                    "the Trainer's callbacks, accelerate's dataloader wrapper and the RandomSampler")


@dataclass
class Setup:
    device: torch.device
    tokenizer: object
    backbone_dir: str  # the random backbone (with the tokenizer) every side starts from
    work: str
    gpu_name: str | None = None
    tf32: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class Workload:
    """One training point: ``unsup`` (one sentence, two dropout views) or ``sup`` (NLI triplets)."""

    name: str
    train_file: str
    batch_size: int
    steps: int
    warmup: int
    mlp_only_train: bool
    examples: object = None  # TrainingExamples, tokenized once for the floor
    texts: dict = field(default_factory=dict)  # the peer's columns: anchor, positive(, negative)


def load_workload(name: str, train_file: str, tokenizer, batch_size: int, steps: int, warmup: int,
                  work: str) -> Workload:
    from simcse.data import column_roles, load_training_dataset, tokenize_dataset

    raw = load_training_dataset(train_file, cache_dir=work)
    roles = column_roles(raw, where=f"training file {train_file}")
    if len(raw) < batch_size:
        raise ValueError(f"{train_file} has {len(raw)} examples, fewer than the batch size {batch_size}")
    examples = tokenize_dataset(raw, tokenizer, max_seq_length=MAX_LENGTH, roles=roles)
    columns = [raw[c] for c in roles.sentences]
    texts = ({"anchor": columns[0], "positive": columns[0]} if len(columns) == 1
             else dict(zip(("anchor", "positive", "negative"), columns)))
    return Workload(name, train_file, batch_size, steps, warmup, mlp_only_train=name == "unsup",
                    examples=examples, texts=texts)


def simcse_config(setup: Setup, workload: Workload):
    from transformers import AutoConfig

    from simcse.modeling.models import configure

    config = AutoConfig.from_pretrained(setup.backbone_dir)
    return configure(config, pooler_type="cls", mlp_only_train=workload.mlp_only_train, temp=TEMP)


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def run_floor(setup: Setup, workload: Workload, precision: str, max_seconds: float | None) -> dict:
    from simcse.data import SimCSECollator
    from simcse.losses import build_loss
    from simcse.modeling.models import BertForCL

    torch.manual_seed(42)
    model = BertForCL.from_pretrained(setup.backbone_dir, config=simcse_config(setup, workload))
    model = model.to(setup.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=True)
    steps = workload.steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, (steps - s) / steps))
    scaler = torch.amp.GradScaler(setup.device.type, enabled=precision == "fp16")
    loss_fn = build_loss("infonce", temp=TEMP)
    counter = TokenCounter(SimCSECollator(setup.tokenizer))
    loader = torch.utils.data.DataLoader(workload.examples, batch_size=workload.batch_size, shuffle=True,
                                         drop_last=True, collate_fn=counter, pin_memory=setup.cuda,
                                         generator=torch.Generator().manual_seed(42))
    dtype = autocast_dtype(precision)
    clock = StepClock(setup.cuda, workload.warmup)
    trace = ScaleTrace(scaler) if scaler.is_enabled() else None
    losses, batches, stopped_early = [], iter(loader), False
    for step in range(1, steps + 1):
        try:
            batch = next(batches)
        except StopIteration:  # another epoch
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(setup.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(setup.device.type, dtype=dtype, enabled=dtype is not None):
            z = model(**batch).embeddings
        z = z.float()
        loss = loss_fn(z[:, 0], z[:, 1], z[:, 2:] if z.shape[1] > 2 else None)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        if trace is not None:
            trace.after_step()
        stopped_early = max_seconds is not None and clock.elapsed() > max_seconds and step < steps
        clock.mark(last=stopped_early or step == steps)
        if stopped_early:
            break
    values = torch.stack(losses).float().cpu()
    return {"clock": clock, "skipped": trace.skipped() if trace else None, "scales": trace.scales() if trace else None,
            "tokens_per_step": counter.tokens_per_batch(), "params": non_embedding_parameters(model),
            "loss_finite": bool(torch.isfinite(values).all()), "last_loss": float(values[-1]),
            "stopped_early": stopped_early, "leaves_out": list(FLOOR_LEAVES_OUT)}


def run_ours(setup: Setup, workload: Workload, precision: str, max_seconds: float | None) -> dict:
    from simcse.training.arguments import make_train_args
    from simcse.training.run import build_trainer

    clock = StepClock(setup.cuda, workload.warmup)
    probe = TrainerProbe(clock, max_seconds)
    output_dir = os.path.join(setup.work, f"ours-{workload.name}-{precision}")
    args = make_train_args(
        model_name_or_path=setup.backbone_dir, train_file=workload.train_file, output_dir=output_dir,
        cache_dir=setup.work, pooler_type="cls", mlp_only_train=workload.mlp_only_train, temp=TEMP,
        learning_rate=LR, per_device_train_batch_size=workload.batch_size, max_seq_length=MAX_LENGTH,
        max_steps=workload.steps, save_strategy="no", eval_strategy="no", report_to="none",
        logging_strategy="no", disable_tqdm=True, use_cpu=not setup.cuda, seed=42, dataloader_drop_last=True,
        fp16=precision == "fp16", bf16=precision == "bf16")
    trainer = build_trainer(*args, callbacks=[probe])
    probe.trainer = trainer
    counter = trainer.data_collator = TokenCounter(trainer.data_collator)
    output = trainer.train()
    return {"clock": clock, "skipped": probe.skipped(), "scales": probe.trace.scales() if probe.trace else None,
            "tokens_per_step": counter.tokens_per_batch(), "params": non_embedding_parameters(trainer.model),
            "loss_finite": math.isfinite(output.training_loss), "mean_loss": output.training_loss,
            "stopped_early": probe.stopped_early}


def run_peer(setup: Setup, workload: Workload, precision: str, max_seconds: float | None) -> dict:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers.trainer_callback import PrinterCallback

    torch.manual_seed(42)
    model = SentenceTransformer(setup.backbone_dir, device=str(setup.device))
    model.max_seq_length = MAX_LENGTH
    clock = StepClock(setup.cuda, workload.warmup)
    probe = TrainerProbe(clock, max_seconds)
    args = SentenceTransformerTrainingArguments(
        output_dir=os.path.join(setup.work, f"peer-{workload.name}-{precision}"),
        per_device_train_batch_size=workload.batch_size, max_steps=workload.steps, learning_rate=LR,
        save_strategy="no", eval_strategy="no", report_to="none", logging_strategy="no", disable_tqdm=True,
        use_cpu=not setup.cuda, seed=42, dataloader_drop_last=True, fp16=precision == "fp16",
        bf16=precision == "bf16")
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(workload.texts),
                                         loss=MultipleNegativesRankingLoss(model, scale=1 / TEMP), callbacks=[probe])
    probe.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # its end-of-training line; the table is the output
    counter = trainer.data_collator = TokenCounter(trainer.data_collator)
    output = trainer.train()
    return {"clock": clock, "skipped": probe.skipped(), "scales": probe.trace.scales() if probe.trace else None,
            "tokens_per_step": counter.tokens_per_batch(), "params": non_embedding_parameters(model),
            "loss_finite": math.isfinite(output.training_loss), "mean_loss": output.training_loss,
            "stopped_early": probe.stopped_early}


RUNNERS = {"floor": run_floor, "ours": run_ours, "peer": run_peer}


def measure(setup: Setup, workload: Workload, side: str, precision: str, max_seconds: float | None = None) -> dict:
    """One side, run and summarised: steady-state steps/s (host clock, and CUDA events), examples and
    tokens per second, FLOPs per step, achieved TFLOPS and MFU, peak memory, fp16 skips (after the
    warm-up too), loss finiteness and the seconds the side took in all."""
    gc.collect()
    if setup.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    raw = RUNNERS[side](setup, workload, precision, max_seconds)
    clock = raw.pop("clock")
    window = clock.window()
    seconds = time.perf_counter() - started
    steps_per_s = window["timed_steps"] / window["seconds"] if window["seconds"] else None
    event_steps_per_s = window["timed_steps"] / window["event_seconds"] if window["event_seconds"] else None
    skipped = raw.pop("skipped")
    tokens = raw.pop("tokens_per_step")
    flops = training_flops(raw["params"], tokens) if tokens else None
    peak, peak_note = peak_tflops(setup.gpu_name, precision, setup.tf32)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if setup.cuda
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"workload": workload.name, "side": side, "precision": precision, "batch_size": workload.batch_size,
            "steps_done": clock.steps, "timed_steps": window["timed_steps"], "window_seconds": window["seconds"],
            "steps_per_s": steps_per_s, "steps_per_s_cuda_events": event_steps_per_s,
            "examples_per_s": steps_per_s * workload.batch_size if steps_per_s else None,
            "tokens_per_step": tokens, "tokens_per_s": steps_per_s * tokens if steps_per_s and tokens else None,
            "flops_per_step": flops, **utilisation(flops, steps_per_s, peak), "peak_tflops": peak,
            "peak_note": peak_note, "peak_mb": round(peak_mb, 1),
            "memory": "torch.cuda.max_memory_allocated" if setup.cuda else "process max RSS so far (cumulative)",
            "skipped_steps": sum(skipped) if skipped is not None else None,
            "skipped_after_warmup": sum(skipped[workload.warmup:]) if skipped is not None else None,
            "seconds_total": round(seconds, 2), **raw}
