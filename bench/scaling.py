"""Batch-size scaling with and without gradient caching: sentences/s and peak memory, one run.

    python bench/scaling.py [--batch_sizes 64,128,256,512] [--chunk 64] [--steps 2] [--output_json out.json]

Each configuration runs in its own process (so peak memory is its own): the same model, sentences
(wiki1m sample), max length 32 and seed, unsupervised SimCSE with InfoNCE through SimCSETrainer, with
``--grad_cache_mini_batch`` off or set to ``--chunk``. Peak memory is torch's max allocated on CUDA;
on CPU it is the growth of the process's peak resident set during training (model and libraries,
identical for every row, are taken out). The first-step loss is printed too: with caching, a batch of
512 is trained on the batch-512 loss (log 512 scale), not on 8 accumulated batch-64 losses.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

MAX_LENGTH = 32


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args) -> dict:
    from transformers import AutoConfig, AutoTokenizer

    from simcse.data import SimCSECollator, load_training_dataset, tokenize_dataset
    from simcse.losses import build_loss
    from simcse.modeling.backbones import model_class_for
    from simcse.modeling.models import configure
    from simcse.training.arguments import SimCSETrainingArguments
    from simcse.training.trainers import SimCSETrainer

    workdir = tempfile.mkdtemp(prefix="bench-scaling-")
    with open(args.train_file, encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip()][: args.batch_size * args.steps]
    train_file = os.path.join(workdir, "train.txt")
    with open(train_file, "w", encoding="utf-8") as handle:
        handle.writelines(lines)
    config = configure(AutoConfig.from_pretrained(args.model), pooler_type="cls", mlp_only_train=True)
    model = model_class_for(config.model_type).from_pretrained(args.model, config=config)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    dataset = tokenize_dataset(load_training_dataset(train_file, cache_dir=workdir), tokenizer,
                               max_seq_length=MAX_LENGTH)
    training_args = SimCSETrainingArguments(
        output_dir=workdir, per_device_train_batch_size=args.batch_size, max_steps=args.steps, learning_rate=3e-5,
        save_strategy="no", eval_strategy="no", report_to="none", logging_steps=1, disable_tqdm=True,
        use_cpu=args.device == "cpu", seed=42, grad_cache_mini_batch=args.chunk or None,
    )
    trainer = SimCSETrainer(model=model, args=training_args, train_dataset=dataset,
                            data_collator=SimCSECollator(tokenizer), loss_fn=build_loss("infonce"))
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    baseline = rss_mb()
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else rss_mb() - baseline
    return {"batch_size": args.batch_size, "grad_cache": bool(args.chunk), "chunk": args.chunk or None,
            "sentences_per_s": round(args.batch_size * args.steps / seconds, 2), "peak_mb": round(peak, 1),
            "first_step_loss": round(losses[0], 4)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default: ../shared/models/paraphrase-MiniLM-L3-v2")
    parser.add_argument("--train_file", default=None)
    parser.add_argument("--batch_sizes", default="64,128,256,512")
    parser.add_argument("--chunk", type=int, default=64, help="gradient-caching chunk (examples)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output_json", default=None)
    parser.add_argument("--output_md", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch_size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result_file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model is None:
        from bench_defaults import default_model

        args.model = default_model()
    if args.train_file is None:
        from simcse.training.demo import default_train_file

        args.train_file = default_train_file()
    if args.worker:
        with open(args.result_file, "w") as handle:
            json.dump(worker(args), handle)
        return {}

    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        for chunk in (0, args.chunk):
            if chunk and chunk >= batch_size:
                continue  # caching with one chunk is the uncached run plus a second forward
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
                result_file = handle.name
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", args.model, "--train_file",
                   args.train_file, "--batch_size", str(batch_size), "--chunk", str(chunk), "--steps",
                   str(args.steps), "--device", args.device, "--result_file", result_file]
            print(f"batch {batch_size}, grad cache {'chunk ' + str(chunk) if chunk else 'off'} ...", flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(result_file) as handle:
                rows.append(json.load(handle))
            os.unlink(result_file)

    memory = "peak MB (torch max allocated)" if args.device.startswith("cuda") else "peak MB (RSS growth)"
    lines = [f"| batch | grad cache | sentences/s | {memory} | first-step loss |", "|---|---|---|---|---|"]
    for r in rows:
        cache = f"chunk {r['chunk']}" if r["grad_cache"] else "off"
        lines.append(f"| {r['batch_size']} | {cache} | {r['sentences_per_s']:.1f} | {r['peak_mb']:.0f} | "
                     f"{r['first_step_loss']:.3f} |")
    table = "\n".join(lines)
    print(table)
    base = next((r for r in rows if r["batch_size"] == 64 and not r["grad_cache"]), None)
    big = next((r for r in rows if r["batch_size"] == 512 and r["grad_cache"]), None)
    if base and big:
        print(f"batch 512 with caching uses {big['peak_mb'] / base['peak_mb']:.2f}x the memory of batch 64 without")
    report = {"model": args.model, "device": args.device, "steps": args.steps, "max_seq_length": MAX_LENGTH,
              "rows": rows}
    if args.output_json:
        with open(args.output_json, "w") as handle:
            json.dump(report, handle, indent=2)
    if args.output_md:
        with open(args.output_md, "w") as handle:
            handle.write(table + "\n")
    return report


if __name__ == "__main__":
    main()
