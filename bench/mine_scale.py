"""Hard-negative mining at scale: 10,000 pairs against a 1,000,000-sentence corpus.

    python bench/mine_scale.py [--work_dir /tmp/simcse-mine-scale] [--lines 1000000] [--pairs 10000]
                               [--model PATH] [--batch_size 128] [--max_seq_length 32] [--threads N] [--resume]

Builds (once; kept in ``--work_dir``) the corpus as ``bench/data_scale.py`` does (``--lines`` distinct lines
from the wiki1m sample, copy k prefixed with ``k``) and ``--pairs`` distinct (anchor, positive) pairs from
the NLI sample's first two columns (copy k prefixed the same way). Three stages, each in its own process so
that its peak resident memory is its own:

* ``floor``: a bare encode of exactly the texts mining embeds (the corpus plus the positives, each once,
  and the distinct anchors): the fast tokenizer, length-sorted batches through the model, mean pooling,
  rows kept in one in-memory array. Nothing else;
* ``mine``: ``python -m simcse.mine`` on an empty cache (embed into memory-mapped arrays, retrieve in
  chunks, select, write the training file and its report);
* ``rerun``: the same command again, the embeddings and candidates reused from the cache.

Prints wall and CPU seconds (user + system of the stage process, all threads: the fair measure on a shared
machine, with ``--threads 1``: a multi-threaded process spin-waits when another takes its cores, and those
spins count as CPU seconds) and peak resident memory per stage, the mining report's time per stage, and
the goals: everything but encoding adds at most 10% to the floor (CPU seconds of ``mine`` over
``floor``), and mining's peak memory stays under 2 GB beyond the embeddings' own size (the memory-mapped
pages count in the resident size). Results go to ``WORK_DIR/mine_scale.json`` after each stage;
``--resume`` keeps stages measured with the same settings (for a run that was cut off).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "SentEval"), str(REPO / "bench")]

from bench_defaults import default_model  # noqa: E402
from child_run import run_child  # noqa: E402
from data_scale import NLI_SAMPLE, build_inputs  # noqa: E402

from simcse.files import atomic_write_json  # noqa: E402

STAGES = ("floor", "mine", "rerun")


def build_pairs(work: Path, shared: Path, pairs: int) -> Path:
    """``pairs`` distinct (sent0, sent1) rows from the NLI sample, copy k prefixed with ``k``."""
    target = work / f"pairs_{pairs}.csv"
    if target.is_file():
        return target
    with open(shared / NLI_SAMPLE, encoding="utf-8", newline="") as handle:
        rows = list(dict.fromkeys(tuple(row[:2]) for row in list(csv.reader(handle))[1:] if row))
    temporary = target.with_name(target.name + ".tmp")
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sent0", "sent1"])
        for k in range(pairs):
            writer.writerow([f"{k // len(rows)} {cell}" for cell in rows[k % len(rows)]])
    os.replace(temporary, target)
    return target


def mined_texts(pairs: Path, corpus: Path) -> tuple[list[str], list[str]]:
    """(corpus texts, distinct anchors) exactly as simcse.mine assembles them."""
    with open(pairs, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    with open(corpus, encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle]
    positives = [r[1] for r in rows]
    return list(dict.fromkeys([*lines, *positives])), list(dict.fromkeys(r[0] for r in rows))


def stage_floor(spec: dict) -> dict:
    """The bare encode (see the module docstring)."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    texts, anchors = mined_texts(Path(spec["pairs"]), Path(spec["corpus"]))
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModel.from_pretrained(spec["model"]).eval()
    rows = 0
    for group in (texts, anchors):
        ids = []
        for start in range(0, len(group), 16_384):
            piece = group[start:start + 16_384]
            ids += tokenizer(piece, truncation=True, max_length=spec["max_seq_length"])["input_ids"]
        order = np.argsort([len(r) for r in ids], kind="stable")
        out = np.empty((len(group), model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), spec["batch_size"]):
                index = order[start:start + spec["batch_size"]]
                width = max(len(ids[i]) for i in index)
                batch = torch.zeros((len(index), width), dtype=torch.long)
                mask = torch.zeros_like(batch)
                for row, i in enumerate(index):
                    batch[row, :len(ids[i])], mask[row, :len(ids[i])] = torch.tensor(ids[i]), 1
                states = model(input_ids=batch, attention_mask=mask).last_hidden_state
                pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
                out[index] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        rows += len(out)
        del ids, out
    return {"rows": rows}


def mine_command(spec: dict) -> list[str]:
    return [sys.executable, "-m", "simcse.mine", "--pairs", spec["pairs"], "--corpus", spec["corpus"],
            "--model_name_or_path", spec["model"], "--pooler", "avg", "--max_seq_length", str(spec["max_seq_length"]),
            "--batch_size", str(spec["batch_size"]), "--output", spec["output"], "--cache_dir", spec["cache"],
            "--num_negatives", "1", "--overwrite"]


def measured(stage: str, spec: dict) -> dict:
    """Run one stage in a child process; its wall and CPU seconds and peak resident memory."""
    if stage == "mine":
        shutil.rmtree(spec["cache"], ignore_errors=True)
    command = mine_command(spec) if stage in ("mine", "rerun") else \
        [sys.executable, __file__, "--stage", stage, "--spec", json.dumps(spec)]
    env = {"OMP_NUM_THREADS": str(spec["threads"]), "RAYON_NUM_THREADS": str(spec["threads"])} \
        if spec.get("threads") else {}  # torch's intra-op threads and the fast tokenizer's
    run = run_child(command, f"stage {stage}", env)
    result = {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "peak_rss_mb": run.peak_rss_mb}
    if stage in ("mine", "rerun"):
        result["report"] = json.loads(Path(spec["output"] + ".json").read_text(encoding="utf-8"))
        result["last_line"] = run.output.strip().splitlines()[-1]
    return result


def summarize(spec: dict, stages: dict) -> tuple[list[str], dict]:
    lines = [f"{spec['lines']:,}-line corpus, {spec['pairs_count']:,} pairs, {Path(spec['model']).name}, batch "
             f"{spec['batch_size']}, max length {spec['max_seq_length']}, threads {spec.get('threads') or 'default'}",
             f"{'stage':<10} {'wall s':>9} {'CPU s':>9} {'peak MB':>9}"]
    for stage in STAGES:
        if stage in stages:
            s = stages[stage]
            lines.append(f"{stage:<10} {s['wall_s']:>9.1f} {s['cpu_s']:>9.1f} {s['peak_rss_mb']:>9.0f}")
    figures = {}
    if "mine" in stages and "floor" in stages:
        report = stages["mine"]["report"]
        seconds = report["seconds"]
        lines.append("mining's own stages (wall s): " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}"
                                                                  for k, v in seconds.items()))
        ratio = stages["mine"]["cpu_s"] / stages["floor"]["cpu_s"]
        rows = report["corpus_texts"] + report["distinct_anchors"]
        hidden = 384 if "MiniLM" in spec["model"] else None
        embeddings_mb = rows * (hidden or 0) * 4 / 2**20
        beyond = stages["mine"]["peak_rss_mb"] - embeddings_mb
        figures = {"mine_over_floor_cpu": round(ratio, 3), "embeddings_mb": round(embeddings_mb, 1),
                   "peak_beyond_embeddings_mb": round(beyond, 1)}
        lines.append(f"mine / floor (CPU s) = {ratio:.3f}: everything but encoding adds {100 * (ratio - 1):+.1f}% "
                     f"(goal <= +10%)")
        lines.append(f"peak memory {stages['mine']['peak_rss_mb']:.0f} MB = embeddings {embeddings_mb:.0f} MB + "
                     f"{beyond:.0f} MB (goal: under 2048 MB beyond the embeddings)")
    if "rerun" in stages:
        lines.append(f"rerun from the cache: {stages['rerun']['wall_s']:.1f} s wall")
    return lines, figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="/tmp/simcse-mine-scale")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--model", default=None, help="default: bench_defaults.default_model()")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--max_seq_length", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="threads per stage (default: torch's)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        return stage_floor(json.loads(args.spec))
    from senteval.datapath import shared_dir

    work = Path(args.work_dir)
    shared = shared_dir()
    if shared is None:
        raise SystemExit("../shared (the wiki1m and NLI samples) is needed to build the inputs")
    corpus = build_inputs(work, shared / "data" / "train", args.lines, 0)["unsupervised (wiki .txt)"]
    pairs = build_pairs(work, shared / "data" / "train", args.pairs)
    spec = {"pairs": str(pairs), "corpus": str(corpus), "model": args.model or default_model(),
            "batch_size": args.batch_size, "max_seq_length": args.max_seq_length, "lines": args.lines,
            "pairs_count": args.pairs, "output": str(work / "mined.csv"), "cache": str(work / "cache"),
            "threads": args.threads}
    results_path = work / "mine_scale.json"
    stages = {}
    if args.resume and results_path.is_file():
        saved = json.loads(results_path.read_text(encoding="utf-8"))
        stages = saved["stages"] if saved.get("spec") == spec else {}
    for stage in STAGES:
        if stage not in stages:
            print(f"running {stage} ...", flush=True)
            stages[stage] = measured(stage, spec)
            atomic_write_json(results_path, {"spec": spec, "stages": stages})
    lines, figures = summarize(spec, stages)
    print("\n".join(lines))
    atomic_write_json(results_path, {"spec": spec, "stages": stages, "figures": figures})
    return {"stages": stages, "figures": figures}


if __name__ == "__main__":
    main()
