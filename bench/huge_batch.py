"""Contrastive batches beyond 100,000: the plain InfoNCE loss against the tiled one, memory and time.

    python bench/huge_batch.py --output_dir /work/runs/huge_batch [--batches 4096,16384,65536,131072]
        [--tile 4096] [--memory_budget_gb 16] [--end_to_end] [--resume]

Loss cases: precomputed random unit embeddings (dim 384, float32; each positive a noisy copy of its
anchor), InfoNCE (τ 0.05) forward and backward at each batch, ``plain`` (the registry's loss: (B, B)
logits) and ``tiled`` (:class:`~simcse.losses.tiled.TiledLoss`, (tile, tile) blocks). Each case runs in a
child process, so its peak resident set is its own: reported as the child's peak RSS and its growth over
the RSS once the embeddings exist. Times are wall and CPU seconds (the CPU may be shared: CPU seconds are
the steadier figure). The plain loss is refused where it would not fit: two calibration runs, at
``--calibration_batch`` b and 2b, measure how many (B, B) float32 temporaries its peak holds (the slope
of the peak's growth against B² x 4 bytes, so the fixed overhead drops out), and a batch whose estimate
(that many x B² x 4 bytes, plus the embeddings) exceeds ``--memory_budget_gb`` is not run; the estimate
is printed instead (and, for the batches that do run, set beside the measured growth).

``--end_to_end``: one gradient-cached training step (embed without gradient in chunks, the tiled loss
and its gradient on all embeddings, re-embed each chunk with gradient, AdamW step) of
paraphrase-MiniLM-L3-v2 with mean pooling at batch ``--end_to_end_batch`` (16,384; unsupervised: each
sentence twice, dropout makes the views; max length 32; the wiki sample's lines, cycled), through
:func:`simcse.training.gradcache.cached_step`, with its time and peak RSS.

Each child runs with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at ``--malloc_mmap_threshold`` (128 KiB;
0 leaves glibc's default): with glibc's default, the threshold rises with use and freed blocks of up to
32 MiB stay resident in the heap, so the end-to-end step's peak RSS read 4.3 GB where its live memory
peaked under 2 GB. The fixed threshold returns freed blocks to the system, so peak RSS follows live memory.

Results are appended to ``huge_batch.json`` in the output folder after each case; ``--resume`` skips the
cases it already holds. The markdown table goes to stdout and ``huge_batch.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from simcse.files import atomic_write_json, atomic_write_text

DIM, TEMP, MAX_LENGTH = 384, 0.05, 32
GB = 1e9


def reset_peak_rss() -> None:
    """Start this process's peak resident set afresh (Linux: ``clear_refs`` 5 resets VmHWM), so the peak of
    a measured step is not that of the imports before it; elsewhere the peak stays the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss() -> int:
    """This process's peak resident set since :func:`reset_peak_rss`, bytes (VmHWM; ru_maxrss without /proc)."""
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def loss_worker(batch: int, method: str, tile: int, seed: int = 0) -> dict:
    from simcse.losses import build_loss
    from simcse.losses.tiled import TiledLoss

    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(batch, DIM, generator=g), dim=1)
    # Positives at cosine ≈ 0.55 from their anchors, negatives ≈ 0 ± 0.05: a loss of order 1.
    y = torch.nn.functional.normalize(x + 1.5 * torch.randn(batch, DIM, generator=g) / DIM ** 0.5, dim=1)
    z1, z2 = x.requires_grad_(True), y.requires_grad_(True)
    loss_fn = build_loss("infonce", temp=TEMP)
    if method == "tiled":
        loss_fn = TiledLoss(loss_fn, tile_size=tile)
    reset_peak_rss()
    before, cpu, wall = current_rss(), cpu_seconds(), time.perf_counter()
    loss = loss_fn(z1, z2)
    loss.backward()
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return {"loss": loss.item(), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_gb": peak_rss() / GB,
            "rss_before_gb": before / GB, "growth_gb": (peak_rss() - before) / GB,
            "grad_norm": float(torch.cat([z1.grad, z2.grad]).norm())}


def end_to_end_worker(args) -> dict:
    from transformers import AutoConfig, AutoTokenizer

    from simcse.losses import build_loss
    from simcse.losses.tiled import TiledLoss
    from simcse.modeling.backbones import model_class_for
    from simcse.modeling.models import configure
    from simcse.training.gradcache import cached_step

    torch.manual_seed(0)
    config = configure(AutoConfig.from_pretrained(args.model), pooler_type="avg")
    model = model_class_for(config.model_type).from_pretrained(args.model, config=config).train()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    with open(args.train_file, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    sentences = [lines[i % len(lines)] for i in range(args.end_to_end_batch)]
    encoded = tokenizer(sentences, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    inputs = {key: value[:, None].repeat(1, 2, 1) for key, value in encoded.items()}  # (B, 2, L): two views
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5)
    loss_fn = TiledLoss(build_loss("infonce", temp=TEMP), tile_size=args.tile)
    timing = {}

    def loss_of_embeddings(z):
        started = time.perf_counter()
        loss = loss_fn(z[:, 0], z[:, 1])
        timing["loss_forward_s"] = time.perf_counter() - started
        return loss

    reset_peak_rss()
    before, cpu, wall = current_rss(), cpu_seconds(), time.perf_counter()
    loss, _ = cached_step(model, inputs, args.end_to_end_chunk, loss_of_embeddings, backward=lambda t: t.backward())
    optimizer.step()
    optimizer.zero_grad()
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return {"loss": loss.item(), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_gb": peak_rss() / GB,
            "rss_before_gb": before / GB, "growth_gb": (peak_rss() - before) / GB,
            "tokens": int(encoded["attention_mask"].sum()) * 2, "max_length": int(encoded["input_ids"].shape[1]),
            "chunk": args.end_to_end_chunk, "tile": args.tile, "model": args.model,
            "loss_forward_s": round(timing.get("loss_forward_s", 0.0), 2)}


def run_child(argv: list[str], result_file: str, mmap_threshold: int = 0) -> dict:
    """Run this script as a worker in a child process; its result, or the way it failed."""
    if os.path.exists(result_file):
        os.unlink(result_file)
    env = dict(os.environ)
    if mmap_threshold > 0:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", *argv, "--result_file",
                           result_file], capture_output=True, text=True, env=env)
    if done.returncode != 0 or not os.path.exists(result_file):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit status {done.returncode}" + (f": {' | '.join(tail)}" if tail else "")}
    with open(result_file) as handle:
        result = json.load(handle)
    os.unlink(result_file)
    return result


def plain_estimate_gb(batch: int, temporaries: float) -> float:
    """What the plain loss would need at ``batch``: its (B, B) float32 temporaries and the embeddings
    with their gradients."""
    return (temporaries * batch * batch * 4 + 4 * batch * DIM * 4) / GB


def fmt_row(case: dict) -> str:
    label = case["method"] if case["method"] == "plain" else f"tiled ({case['tile']})"
    if "refused" in case:
        return f"| {case['batch']:,} | {label} | refused: needs ≈ {case['refused']['need_gb']:.3g} GB | | | |"
    if "error" in case:
        return f"| {case['batch']:,} | {label} | failed: {case['error'][:80]} | | | |"
    return (f"| {case['batch']:,} | {label} | {case['wall_s']:.1f} | {case['cpu_s']:.1f} | {case['peak_rss_gb']:.2f} | "
            f"{case['growth_gb']:.2f} |")


def summary(payload: dict, budget: float) -> str:
    cases = sorted((c for c in payload["cases"] if c["kind"] == "loss"),
                   key=lambda c: (c["batch"], c["method"] != "plain"))
    lines = ["| batch | loss | forward + backward s (wall) | CPU s | peak RSS GB | growth over inputs GB |",
             "|---|---|---|---|---|---|"] + [fmt_row(c) for c in cases] + [""]
    ran = [c for c in cases if c["method"] == "plain" and "wall_s" in c]
    if ran:
        largest = max(c["batch"] for c in ran)
        plain = next(c for c in ran if c["batch"] == largest)
        tiled = next((c for c in cases if c["method"] == "tiled" and c["batch"] == largest and "wall_s" in c), None)
        if tiled:
            lines.append(f"At {largest:,}, the largest batch the plain loss fits in {budget:g} GB: tiled / plain "
                         f"= {tiled['wall_s'] / plain['wall_s']:.2f}x wall, {tiled['cpu_s'] / plain['cpu_s']:.2f}x CPU "
                         f"time, {tiled['growth_gb'] / plain['growth_gb']:.3f}x memory growth; the losses differ by "
                         f"{abs(tiled['loss'] - plain['loss']):.1e}.")
    for c in ran:
        if "estimated_gb" in c:
            lines.append(f"Plain at {c['batch']:,}: estimated {c['estimated_gb']:.3g} GB, measured growth "
                         f"{c['growth_gb']:.3g} GB.")
    for c in (c for c in cases if "refused" in c):
        r = c["refused"]
        lines.append(f"Plain at {c['batch']:,} refused: ≈ {r['temporaries']:.1f} (B, B) float32 temporaries x "
                     f"{c['batch'] ** 2 * 4 / GB:.3g} GB + embeddings = {r['need_gb']:.3g} GB > {budget:g} GB budget.")
    for c in (c for c in payload["cases"] if c["kind"] == "end_to_end"):
        lines += ["", "| end to end (one gradient-cached step) | wall s | CPU s | peak RSS GB | growth GB | "
                      "loss forward s |", "|---|---|---|---|---|---|"]
        if "error" in c:
            lines.append(f"| MiniLM-L3 batch {c['batch']:,} | failed: {c['error'][:80]} | | | | |")
        else:
            lines.append(f"| MiniLM-L3, mean pooling, batch {c['batch']:,}, chunk {c['chunk']}, tiled loss "
                         f"({c['tile']}), {c['tokens']:,} tokens | {c['wall_s']:.0f} | {c['cpu_s']:.0f} | "
                         f"{c['peak_rss_gb']:.2f} | {c['growth_gb']:.2f} | {c['loss_forward_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="result/huge_batch")
    parser.add_argument("--batches", default="4096,16384,65536,131072")
    parser.add_argument("--methods", default="plain,tiled")
    parser.add_argument("--tile", type=int, default=4096)
    parser.add_argument("--memory_budget_gb", type=float, default=16.0)
    parser.add_argument("--calibration_batch", type=int, default=2048)
    parser.add_argument("--end_to_end", action="store_true")
    parser.add_argument("--end_to_end_batch", type=int, default=16384)
    parser.add_argument("--end_to_end_chunk", type=int, default=128)
    parser.add_argument("--model", default=None, help="default: ../shared/models/paraphrase-MiniLM-L3-v2")
    parser.add_argument("--train_file", default=None, help="default: the wiki1m sample")
    parser.add_argument("--malloc_mmap_threshold", type=int, default=131072,
                        help="glibc's MALLOC_MMAP_THRESHOLD_ in each child, bytes (0: glibc's dynamic default)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of each case (default: torch's)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--result_file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.kind == "end_to_end":
            result = end_to_end_worker(args)
        else:
            result = loss_worker(args.batch, args.method, args.tile)
        with open(args.result_file, "w") as handle:
            json.dump(result, handle)
        return result

    os.makedirs(args.output_dir, exist_ok=True)
    json_path = os.path.join(args.output_dir, "huge_batch.json")
    payload = {"dim": DIM, "temp": TEMP, "cases": []}
    if args.resume and os.path.exists(json_path):
        with open(json_path) as handle:
            payload = json.load(handle)
    payload.update(budget_gb=args.memory_budget_gb, torch=torch.__version__,
                   threads=args.threads or torch.get_num_threads(), cpus=os.cpu_count(),
                   malloc_mmap_threshold=args.malloc_mmap_threshold)
    result_file = os.path.join(args.output_dir, ".worker-result.json")
    threads = ["--threads", str(args.threads)] if args.threads else []

    def stored(key: dict) -> dict | None:
        return next((c for c in payload["cases"] if all(c.get(k) == v for k, v in key.items())), None)

    def store(case: dict, replacing: dict | None) -> dict:
        """Save ``case`` in place of the stored one of its key (same position), or after the others."""
        cases = payload["cases"]
        if replacing is None:
            cases.append(case)
        else:
            cases[next(i for i, c in enumerate(cases) if c is replacing)] = case
        atomic_write_json(json_path, payload)
        return case

    def run_case(key: dict, argv: list[str]) -> dict:
        found = stored(key)
        if found is not None and "error" not in found:
            print(f"{key}: kept from {json_path}", flush=True)
            return found
        print(f"{key} ...", flush=True)
        case = store({**key, **run_child(argv + threads, result_file, args.malloc_mmap_threshold)}, found)
        print(f"  {json.dumps(case)}", flush=True)
        return case

    methods = args.methods.split(",")
    temporaries = None
    if "plain" in methods:
        small, large = (run_case({"kind": "calibration", "batch": b, "method": "plain"},
                                 ["--batch", str(b), "--method", "plain", "--tile", str(args.tile)])
                        for b in (args.calibration_batch, 2 * args.calibration_batch))
        if "growth_gb" in small and "growth_gb" in large:
            slope = (large["growth_gb"] - small["growth_gb"]) * GB / (3 * args.calibration_batch ** 2 * 4)
            temporaries = max(slope, 1.0)  # at least the logits themselves, whatever the noise
            payload["plain_temporaries"] = round(temporaries, 2)
    for batch in [int(b) for b in args.batches.split(",")]:
        for method in methods:
            key = {"kind": "loss", "batch": batch, "method": method, "tile": args.tile if method == "tiled" else None}
            if method == "plain" and temporaries is not None:
                need = plain_estimate_gb(batch, temporaries)
                if need > args.memory_budget_gb:
                    store({**key, "refused": {"need_gb": round(need, 3), "temporaries": round(temporaries, 2)}},
                          stored(key))
                    print(f"plain at {batch:,} refused: needs ≈ {need:.3g} GB > budget {args.memory_budget_gb:g} GB",
                          flush=True)
                    continue
            case = run_case(key, ["--batch", str(batch), "--method", method, "--tile", str(args.tile)])
            if method == "plain" and temporaries is not None:
                case["estimated_gb"] = round(plain_estimate_gb(batch, temporaries), 3)
                atomic_write_json(json_path, payload)
    if args.end_to_end:
        from bench_defaults import default_model

        model = args.model or default_model()
        if args.train_file is None:
            from simcse.training.demo import default_train_file

            args.train_file = default_train_file()
        run_case({"kind": "end_to_end", "batch": args.end_to_end_batch, "method": "tiled", "tile": args.tile},
                 ["--kind", "end_to_end", "--end_to_end_batch", str(args.end_to_end_batch), "--end_to_end_chunk",
                  str(args.end_to_end_chunk), "--tile", str(args.tile), "--model", model, "--train_file",
                  args.train_file])
    table = summary(payload, args.memory_budget_gb)
    atomic_write_text(os.path.join(args.output_dir, "huge_batch.md"), table + "\n")
    print(table)
    return payload


if __name__ == "__main__":
    main()
