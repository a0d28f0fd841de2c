"""Per-process memory of DDP against FSDP2 (``train.py --fsdp``), both under ``torchrun --nproc_per_node 2``.

    python bench/fsdp_memory.py --output_dir /tmp/simcse-fsdp-memory [--layers 12 --hidden 768] [--steps 2]
                                [--batch 8] [--max_seq_length 32] [--nproc 2]

Builds (once, in ``--output_dir``) a randomly initialised BERT of the given size (default: bert-base's
shape, 110M parameters; no pretrained weights are needed to measure memory) with the real bert-base-uncased
tokenizer, and the first lines of the wiki1m sample. Then runs the same few AdamW steps of unsupervised
SimCSE twice through the real entry point, once under DDP and once with ``--fsdp``, and reports for each:
each process's resident memory when training begins and the largest at the end of an optimizer step (a
start-up hook, ``bench/fsdpmem/sitecustomize.py``, reads ``/proc/self/status``: a CPU stand-in for GPU
memory, the imported libraries in both), the peak while loading and the peak of the whole run (``VmHWM``,
``ru_maxrss``: both engines load the whole model before sharding or wrapping it), the wall time, the
parameters each process holds (from train.py's log) and the final loss (the two runs train the same
steps). What FSDP saves is the weights, their gradients and AdamW's two moments, each cut to 1/W per
process, minus the one block it gathers at a time; what it costs is the gathers. Results go to
``OUTPUT_DIR/fsdp_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "SentEval")]

sys.path.insert(0, str(REPO / "bench"))

from child_run import free_port, run_child  # noqa: E402
from data_scale import WIKI_SAMPLE  # noqa: E402

from simcse.files import atomic_write_json  # noqa: E402

WIKI = Path("data") / "train" / WIKI_SAMPLE
INJECT = REPO / "bench" / "fsdpmem"  # the runs' start-up hook: resident memory in training (sitecustomize.py)
TOKENIZER = Path("models") / "tokenizers" / "bert-base-uncased"


def build_inputs(out: Path, shared: Path, layers: int, hidden: int, lines: int) -> tuple[Path, Path]:
    """A random BERT of ``layers`` x ``hidden`` with the real tokenizer, and ``lines`` wiki lines."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    model = out / f"bert-{layers}x{hidden}"
    if not (model / "model.safetensors").is_file():
        tokenizer = AutoTokenizer.from_pretrained(shared / TOKENIZER)
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden)
        BertModel(config).save_pretrained(model)
        tokenizer.save_pretrained(model)
    data = out / f"wiki-{lines}.txt"
    if not data.is_file():
        with open(shared / WIKI, encoding="utf-8") as handle:
            data.write_text("".join(handle.readline() for _ in range(lines)), encoding="utf-8")
    return model, data


def run(mode: str, model: Path, data: Path, out: Path, args) -> dict:
    """One torchrun launch of train.py; its largest process's peak RSS, wall time and the logged facts."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}",
               f"--master_port={free_port()}", str(REPO / "train.py"), "--model_name_or_path", str(model),
               "--train_file", str(data), "--output_dir", str(out / f"run-{mode}"), "--overwrite_output_dir",
               "--per_device_train_batch_size", str(args.batch), "--max_steps", str(args.steps),
               "--max_seq_length", str(args.max_seq_length), "--learning_rate", "3e-5", "--pooler_type", "cls",
               "--mlp_only_train", "--save_strategy", "no", "--eval_strategy", "no", "--report_to", "none",
               "--use_cpu", "--ddp_backend", "gloo", "--logging_steps", "1", "--seed", "1", "--disable_tqdm", "true",
               *(["--fsdp"] if mode == "fsdp" else [])]
    trace = out / f"trace-{mode}"
    trace.mkdir(parents=True, exist_ok=True)
    for old in trace.glob("rank*.json"):
        old.unlink()
    run = run_child(command, f"the {mode} run", {
        "OMP_NUM_THREADS": str(args.threads), "FSDP_MEMORY_TRACE": str(trace),
        "PYTHONPATH": os.pathsep.join([str(INJECT), str(REPO), str(REPO / "SentEval")])})
    output = run.output
    ranks = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(trace.glob("rank*.json"))]
    if len(ranks) != args.nproc:
        raise SystemExit(f"the {mode} run left {len(ranks)} memory traces in {trace}, expected {args.nproc}")
    held = re.findall(r"this one holds ([\d,]+) of ([\d,]+) parameters", output)
    losses = re.findall(r"'loss': '?([0-9.e+-]+)'?", output)
    return {"mode": mode, "peak_rss_mb": run.peak_rss_mb, "wall_s": run.wall_s,
            "begin_rss_mb": round(max(r["begin_rss_mb"] for r in ranks), 1),
            "step_rss_mb": round(max(r["step_rss_mb"] for r in ranks), 1),
            "load_peak_mb": round(max(r["begin_hwm_mb"] for r in ranks), 1),
            **{key: round(max(r[key] for r in ranks), 1) for key in ("weights_mb", "grads_mb", "optimizer_mb")},
            "held": int(held[0][0].replace(",", "")) if held else None,
            "parameters": int(held[0][1].replace(",", "")) if held else None,
            "last_loss": float(losses[-1]) if losses else None}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="/tmp/simcse-fsdp-memory")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="per process")
    parser.add_argument("--max_seq_length", type=int, default=32)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per process")
    args = parser.parse_args(argv)
    from senteval.datapath import shared_dir

    shared = shared_dir()
    if shared is None:
        raise SystemExit("../shared (the bert-base-uncased tokenizer and the wiki1m sample) is needed")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, data = build_inputs(out, shared, args.layers, args.hidden, args.nproc * args.batch * args.steps)
    results = [run(mode, model, data, out, args) for mode in ("ddp", "fsdp")]
    ddp, fsdp = results
    lines = [f"BERT {args.layers} x {args.hidden} (random weights), {args.nproc} processes x batch {args.batch}, "
             f"{args.steps} AdamW steps, max length {args.max_seq_length}, {args.threads} thread(s) per process",
             "| engine | parameters per process | weights + gradients + AdamW state MB | RSS in training MB "
             "| peak while loading MB | peak of the run MB | wall s | last loss |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        held = f"{r['held']:,} of {r['parameters']:,}" if r["held"] else "all"
        r["state_mb"] = r["weights_mb"] + r["grads_mb"] + r["optimizer_mb"]
        state = f"{r['weights_mb']:.0f} + {r['grads_mb']:.0f} + {r['optimizer_mb']:.0f} = {r['state_mb']:.0f}"
        lines.append(f"| {r['mode']} | {held} | {state} | {r['step_rss_mb']:.0f} | {r['load_peak_mb']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['wall_s']:.1f} | {r['last_loss']} |")
    lines.append(f"FSDP / DDP per process: model state {fsdp['state_mb'] / ddp['state_mb']:.2f}, resident memory in "
                 f"training {fsdp['step_rss_mb'] / ddp['step_rss_mb']:.2f} "
                 f"({ddp['step_rss_mb'] - fsdp['step_rss_mb']:.0f} MB less), "
                 f"wall time {fsdp['wall_s'] / ddp['wall_s']:.2f}x")
    print("\n".join(lines))
    payload = {"args": vars(args), "results": results}
    atomic_write_json(out / "fsdp_memory.json", payload)
    return payload


if __name__ == "__main__":
    main()
