"""The training data path at the paper's sizes: 1,000,000 Wikipedia lines and 275,601 NLI triplets.

    python bench/data_scale.py [--work_dir /tmp/simcse-data-scale] [--lines 1000000] [--nli_rows 275601]

Builds (once; kept in ``--work_dir``) a ``.txt`` file of ``--lines`` distinct lines from the wiki1m
sample in ``../shared/data/train`` and an NLI-shaped ``.csv`` (sent0, sent1, hard_neg) of ``--nli_rows``
distinct rows from the NLI sample: copy k of a sample line is prefixed with ``k``, so lines stay distinct
after truncation to 32 tokens while the sample's own repeats (an NLI premise with several hypotheses)
stay repeats. On each file it runs the functions train.py runs, with the bert-base-uncased tokenizer and
max length 32, each stage in a fresh process so that its peak resident memory is its own:

* ``floor``: the file read and split (``str.split`` / ``csv.reader``) and every sentence through the
  bare fast tokenizer, batched (4096 texts a call, as our map): the work no data path can avoid;
* ``prepare (first run)``: :func:`simcse.data.load_training_dataset` + :func:`simcse.data.tokenize_dataset`
  on an empty cache (parse, Arrow file, tokenize with ``datasets.map``, token cache);
* ``prepare (second run)``: the same calls again, served from the cache;
* ``sampler epoch``: :func:`simcse.data.sampler.sentence_keys` and one epoch of
  :class:`simcse.data.sampler.NoDuplicatesBatchSampler` (the ``--no_duplicates_in_batch`` path), planned and
  iterated;
* ``fetch + collate epoch``: a DataLoader over that epoch fetching each batch from the memory-mapped
  Arrow table and padding it with :class:`simcse.data.SimCSECollator`.

Prints wall seconds, CPU seconds (user + system, every thread of the stage process: the fair measure on
a machine shared with other jobs) and peak resident memory (MB, the stage process's high-water mark,
imports included) per stage, then the goals: preparation within 1.3x the floor, a cached run under 10%
of the first, a sampler epoch over 1M examples in seconds, peak memory under 3 GB. ``--output_json``
writes every figure.
Results are also kept in ``WORK_DIR/data_scale.json`` after each stage; ``--resume`` reuses the stages
already measured with the same settings (for a run that was cut off). The script empties its own cache
folder ``WORK_DIR/cache/<file>`` before each first-run measurement; it writes nothing else.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "SentEval")]

from simcse.files import atomic_write_text  # noqa: E402

MAX_LENGTH = 32
TOKENIZE_BATCH = 4096  # texts per tokenizer call, the floor's and tokenize_dataset's
WIKI_SAMPLE = "wiki1m_for_simcse.head11913.txt"
NLI_SAMPLE = "nli_snli_devtest_for_simcse.csv"
STAGES = ("floor", "prepare_first", "prepare_cached", "sampler_epoch")
LABELS = {
    "floor": "floor: read + bare fast tokenizer",
    "prepare_first": "prepare, first run (parse+Arrow+tokenize)",
    "prepare_cached": "prepare, second run (cached)",
    "sampler_epoch": "sentence keys + sampler epoch",
    "collate_epoch": "fetch + collate, whole epoch",
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads (the fast tokenizer's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ----- inputs -----------------------------------------------------------------------------------------


def build_inputs(work: Path, shared: Path, lines: int, nli_rows: int) -> dict[str, Path]:
    """The two training files, written once (atomically) and reused while their sizes match."""
    work.mkdir(parents=True, exist_ok=True)
    wiki = work / f"wiki_{lines}.txt"
    if not wiki.is_file():
        with open(shared / WIKI_SAMPLE, encoding="utf-8") as handle:
            sample = list(dict.fromkeys(line.rstrip("\n") for line in handle if line.strip()))
        atomic_write_text(wiki, "".join(f"{k // len(sample)} {sample[k % len(sample)]}\n" for k in range(lines)))
    nli = work / f"nli_{nli_rows}.csv"
    if not nli.is_file():
        with open(shared / NLI_SAMPLE, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows = list(dict.fromkeys(tuple(row) for row in reader if row))
        temporary = nli.with_name(nli.name + ".tmp")
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for k in range(nli_rows):
                copy, row = k // len(rows), rows[k % len(rows)]
                writer.writerow([f"{copy} {cell}" for cell in row])
        os.replace(temporary, nli)
    return {"unsupervised (wiki .txt)": wiki, "supervised (NLI .csv)": nli}


# ----- stages (each run in its own process unless --in_process) ----------------------------------------


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def stage_floor(train_file: Path, tokenizer_dir: str, **_) -> dict:
    tokenizer = load_tokenizer(tokenizer_dir)
    started = time.perf_counter()
    if train_file.suffix == ".csv":
        with open(train_file, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))[1:]
        columns = [list(column) for column in zip(*rows)]
        del rows
    else:
        columns = [[line for line in train_file.read_text(encoding="utf-8").split("\n") if line.strip()]]
    read = time.perf_counter() - started
    tokens = sentences = 0
    for column in columns:
        for start in range(0, len(column), TOKENIZE_BATCH):
            ids = tokenizer(column[start:start + TOKENIZE_BATCH], max_length=MAX_LENGTH, truncation=True,
                            return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            tokens += sum(map(len, ids))
            sentences += len(ids)
    return {"seconds": time.perf_counter() - started, "read_seconds": read, "sentences": sentences, "tokens": tokens}


def _prepare(train_file: Path, tokenizer_dir: str, cache: Path):
    from simcse.data import load_training_dataset, tokenize_dataset

    tokenizer = load_tokenizer(tokenizer_dir)
    started = time.perf_counter()
    examples = tokenize_dataset(load_training_dataset(train_file, cache_dir=cache), tokenizer,
                                max_seq_length=MAX_LENGTH, batch_size=TOKENIZE_BATCH)
    return examples, tokenizer, time.perf_counter() - started


def stage_prepare(train_file: Path, tokenizer_dir: str, cache: Path, **_) -> dict:
    examples, _, seconds = _prepare(train_file, tokenizer_dir, cache)
    return {"seconds": seconds, "examples": len(examples), "num_sent": examples.num_sent,
            "cache_mb": round(sum(f.stat().st_size for f in cache.rglob("*.arrow")) / 2**20, 1)}


def stage_sampler(train_file: Path, tokenizer_dir: str, cache: Path, batch_size: int, **_) -> dict:
    import torch

    from simcse.data import SimCSECollator
    from simcse.data.sampler import NoDuplicatesBatchSampler, sentence_keys

    examples, tokenizer, opened = _prepare(train_file, tokenizer_dir, cache)
    started = time.perf_counter()
    keys = sentence_keys(examples)
    hashed = time.perf_counter()
    sampler = NoDuplicatesBatchSampler(keys, batch_size, seed=42)
    batches = sum(1 for _ in sampler)  # plans the epoch, then yields its batches
    sampled = time.perf_counter()
    loader = torch.utils.data.DataLoader(examples, batch_sampler=sampler, collate_fn=SimCSECollator(tokenizer))
    collated = padded_tokens = 0
    for batch in loader:
        collated += 1
        padded_tokens += batch["input_ids"].numel()
    done = time.perf_counter()
    return {"seconds": sampled - started, "keys_seconds": hashed - started, "open_cached_seconds": opened,
            "batches": batches, "batch_size": batch_size, "examinations": sampler.examinations,
            "keys_mb": round(keys.nbytes / 2**20, 1), "collate_seconds": done - sampled,
            "collate_ms_per_batch": 1000 * (done - sampled) / max(collated, 1), "collated_batches": collated,
            "padded_tokens": padded_tokens}


STAGE_FUNCTIONS = {"floor": stage_floor, "prepare_first": stage_prepare, "prepare_cached": stage_prepare,
                   "sampler_epoch": stage_sampler}


def run_stage(stage: str, spec: dict, in_process: bool) -> dict:
    if in_process:
        return measured(stage, spec)
    command = [sys.executable, __file__, "--_stage", stage, "--_spec", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), str(REPO / "SentEval"), os.environ.get("PYTHONPATH", "")])})
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_main(stage: str, spec: str) -> None:
    """Child process: import, then run one stage and print its figures as one JSON line."""
    import datasets

    datasets.disable_progress_bars()
    import simcse.data  # noqa: F401  (imports counted in rss_before_mb, not in the stage)
    import simcse.data.sampler  # noqa: F401
    print(json.dumps(measured(stage, json.loads(spec))))


def measured(stage: str, spec: dict) -> dict:
    """Run one stage; add its CPU seconds, the peak resident memory and the resident memory before it."""
    before, cpu = current_rss_mb(), cpu_seconds()
    result = STAGE_FUNCTIONS[stage](**{**spec, "train_file": Path(spec["train_file"]), "cache": Path(spec["cache"])})
    return {**result, "cpu_seconds": round(cpu_seconds() - cpu, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
            "rss_before_mb": round(before, 1)}


# ----- report ----------------------------------------------------------------------------------------


def summarize(name: str, stages: dict, sizes: dict) -> tuple[list[str], dict]:
    floor, first, cached, sampler = (stages[s] for s in STAGES)
    summary = {
        "prepare_over_floor": first["seconds"] / floor["seconds"],
        "prepare_over_floor_cpu": first["cpu_seconds"] / floor["cpu_seconds"],
        "cached_over_first": cached["seconds"] / first["seconds"],
        "sampler_epoch_seconds": sampler["seconds"],
        "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
    }
    lines = [f"== {name}: {first['examples']:,} examples x {first['num_sent']} sentence(s), "
             f"{sizes['mb']:.0f} MB file =="]
    lines.append(f"{'stage':<44}{'seconds':>9}{'CPU s':>9}{'peak RSS MB':>13}")
    for stage in STAGES:
        lines.append(f"{LABELS[stage]:<44}{stages[stage]['seconds']:>9.2f}{stages[stage]['cpu_seconds']:>9.2f}"
                     f"{stages[stage]['peak_rss_mb']:>13.0f}")
    lines.append(f"{LABELS['collate_epoch']:<44}{sampler['collate_seconds']:>9.2f}{'':>9}{'(same)':>13}")
    lines.append(f"  floor: {floor['sentences']:,} sentences, {floor['tokens']:,} tokens, "
                 f"read {floor['read_seconds']:.2f} s; "
                 f"cache {cached['cache_mb']} MB; sampler: {sampler['batches']:,} batches of {sampler['batch_size']}, "
                 f"keys {sampler['keys_mb']} MB ({sampler['keys_seconds']:.2f} s), {sampler['examinations']:,} "
                 f"examinations; collate {sampler['collate_ms_per_batch']:.2f} ms/batch")
    lines.append(f"  prepare / floor = {summary['prepare_over_floor']:.2f} (CPU time: "
                 f"{summary['prepare_over_floor_cpu']:.2f})   cached / first = "
                 f"{summary['cached_over_first']:.3f}   sampler epoch = {summary['sampler_epoch_seconds']:.2f} s   "
                 f"peak RSS = {summary['peak_rss_mb']:.0f} MB")
    return lines, summary


def goals(summaries: dict) -> list[str]:
    wiki = next(v for k, v in summaries.items() if k.startswith("unsupervised"))
    checks = [
        ("preparation within 1.3x the floor (CPU time; wall time in brackets)",
         all(s["prepare_over_floor_cpu"] <= 1.3 for s in summaries.values()),
         ", ".join(f"{s['prepare_over_floor_cpu']:.2f} ({s['prepare_over_floor']:.2f})" for s in summaries.values())),
        ("cached second run under 10% of the first", all(s["cached_over_first"] < 0.1 for s in summaries.values()),
         ", ".join(f"{100 * s['cached_over_first']:.1f}%" for s in summaries.values())),
        ("sampler epoch over the wiki file in seconds (< 60 s)", wiki["sampler_epoch_seconds"] < 60,
         f"{wiki['sampler_epoch_seconds']:.2f} s"),
        ("peak memory under 3 GB", all(s["peak_rss_mb"] < 3072 for s in summaries.values()),
         ", ".join(f"{s['peak_rss_mb']:.0f} MB" for s in summaries.values())),
    ]
    return [f"  [{'met' if ok else 'MISSED'}] {what}: {value}" for what, ok, value in checks]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="/tmp/simcse-data-scale", help="where the files and caches go")
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines of the unsupervised .txt file")
    parser.add_argument("--nli_rows", type=int, default=275_601, help="rows of the NLI-shaped .csv file")
    parser.add_argument("--shared", default=None, help="the shared/ folder (default: ../shared beside the repo)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer dir (default: shared/models/tokenizers/bert-base-uncased)")
    parser.add_argument("--unsup_batch_size", type=int, default=64, help="the paper's unsupervised batch")
    parser.add_argument("--sup_batch_size", type=int, default=512, help="the paper's supervised (global) batch")
    parser.add_argument("--in_process", action="store_true",
                        help="run the stages in this process (quick; peak RSS is then cumulative)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse stages already measured in WORK_DIR/data_scale.json")
    parser.add_argument("--output_json", default=None)
    parser.add_argument("--_stage", help=argparse.SUPPRESS)
    parser.add_argument("--_spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lines < 1 or args.nli_rows < 1:
        parser.error(f"--lines and --nli_rows must be positive, got {args.lines} and {args.nli_rows}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args._stage:
        stage_main(args._stage, args._spec)
        return {}
    from senteval.datapath import shared_dir

    shared = Path(args.shared) if args.shared else shared_dir()
    if shared is None or not (shared / "data" / "train" / WIKI_SAMPLE).is_file():
        raise SystemExit(f"the wiki1m and NLI samples are not under {shared}/data/train; pass --shared")
    tokenizer_dir = args.tokenizer or str(shared / "models" / "tokenizers" / "bert-base-uncased")
    work = Path(args.work_dir).resolve()
    files = build_inputs(work, shared / "data" / "train", args.lines, args.nli_rows)
    record_path = work / "data_scale.json"
    record = json.loads(record_path.read_text()) if args.resume and record_path.is_file() else {}
    payload: dict = {"lines": args.lines, "nli_rows": args.nli_rows, "max_length": MAX_LENGTH,
                     "tokenizer": tokenizer_dir, "in_process": args.in_process, "cpus": os.cpu_count(),
                     "platform": platform.platform(), "datasets": {}}
    summaries, report = {}, []
    for name, train_file in files.items():
        batch_size = args.unsup_batch_size if train_file.suffix == ".txt" else args.sup_batch_size
        cache = work / "cache" / train_file.stem
        spec = {"train_file": str(train_file), "tokenizer_dir": tokenizer_dir, "cache": str(cache),
                "batch_size": batch_size}
        stages = record.get(train_file.name, {}).get("stages", {})
        for stage in STAGES:
            if stage in stages:
                print(f"[{name}] {stage}: reused from {record_path}", flush=True)
                continue
            if stage == "prepare_first":
                shutil.rmtree(cache, ignore_errors=True)  # our own cache folder: the first run starts empty
                stages.pop("prepare_cached", None)
            print(f"[{name}] {stage} ...", flush=True)
            stages[stage] = run_stage(stage, spec, args.in_process)
            record[train_file.name] = {"stages": stages}
            atomic_write_text(record_path, json.dumps(record, indent=1))
        lines, summaries[name] = summarize(name, stages, {"mb": train_file.stat().st_size / 2**20})
        report += lines + [""]
        payload["datasets"][name] = {"file": str(train_file), "stages": stages, "summary": summaries[name]}
    report += ["goals:"] + goals(summaries)
    print("\n".join(report))
    payload["goals"] = goals(summaries)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main()
