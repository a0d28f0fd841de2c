"""Supervised SimCSE with NLI's own hard negatives, with negatives mined from the pairs, and without any.

    python bench/mined_negatives.py [--seeds 42,43,44] [--steps 100] [--output_dir result/mined_negatives]

The start is the [CLS] vector of paraphrase-MiniLM-L3-v2 (``--model``; trained with ``--pooler_type cls
--mlp_only_train``, scored with ``cls_before_pooler``), as in ``bench/compare_losses.py``. The data is the
NLI sample's rows whose premise falls in the proxy sets' dev half (:func:`simcse.evaluation.proxy_sets.
nli_split_of`), so the NLI retrieval proxy (the test half) is never trained on. Three training files:

* ``nli``: sent0, sent1, hard_neg as the file gives them (SimCSE's contradiction hypotheses);
* ``mined``: the (sent0, sent1) pairs only, one negative each mined by ``python -m simcse.mine`` with the
  start model's own mean pooling (the positives as the corpus, ``--relative_margin`` 0.05 by default:
  a negative must score at least 5% below its positive, NV-Retriever's false-negative guard,
  arXiv:2407.15831); pairs that get no negative are left out of this file (the report says how many);
* ``none``: the pairs without negatives (in-batch negatives only).

Each (variant, seed) trains ``--steps`` steps of InfoNCE at batch ``--batch_size`` and is scored on the STS
test suite and nDCG@10 of the three proxy retrieval sets; results go to ``<output_dir>/results/`` as they
complete (a rerun skips them) and the table of mean ± std to ``<output_dir>/mined_negatives.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import time
from pathlib import Path

from bench_defaults import default_model
from compare_losses import mean_std, proxy_folders, retrieval_scores, sts_suite, with_retrieval

from senteval.datapath import resolve_data_dir, shared_dir
from simcse.evaluation.proxy_sets import nli_split_of
from simcse.files import atomic_write_json, atomic_write_text
from simcse.mine.run import MiningArguments
from simcse.mine.run import run as mine
from simcse.training.arguments import make_train_args
from simcse.training.run import train_model

VARIANTS = ("nli", "mined", "none")


def training_files(out: Path, nli_file: str, model: str, relative_margin: float) -> tuple[dict[str, str], dict]:
    """The three training files (written once) and the mining report."""
    out.mkdir(parents=True, exist_ok=True)
    files = {name: str(out / f"train-{name}.csv") for name in VARIANTS}
    with open(nli_file, encoding="utf-8", newline="") as handle:
        rows = [row for row in list(csv.reader(handle))[1:] if row and nli_split_of(row[0]) == "dev"]
    for name, header, width in (("nli", ["sent0", "sent1", "hard_neg"], 3), ("none", ["sent0", "sent1"], 2)):
        if not Path(files[name]).is_file():
            atomic_write_text(files[name], _csv([header, *(row[:width] for row in rows)]))
    report_file = Path(files["mined"] + ".json")
    if not report_file.is_file():
        mine(MiningArguments(pairs=files["none"], model_name_or_path=model, output=files["mined"], pooler="avg",
                             max_seq_length=32, num_negatives=1, relative_margin=relative_margin, overwrite=True))
    return files, json.loads(report_file.read_text(encoding="utf-8"))


def _csv(rows) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def run_one(variant: str, seed: int, args, files: dict[str, str], data: str, folders: dict[str, str]) -> dict:
    out = Path(args.output_dir) / "runs" / f"{variant}-seed{seed}"
    started = time.perf_counter()
    train_model(*make_train_args(
        model_name_or_path=args.model, train_file=files[variant], output_dir=str(out), overwrite_output_dir=True,
        pooler_type="cls", mlp_only_train=True, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size, max_seq_length=32, max_steps=args.steps, eval_strategy="no",
        save_strategy="no", logging_steps=max(1, args.steps // 4), seed=seed, report_to="none", disable_tqdm=True,
        dataloader_drop_last=True,
    ))
    suite = sts_suite(str(out), data)
    result = with_retrieval({"variant": variant, "seed": seed, "steps": args.steps, "batch_size": args.batch_size,
                             "learning_rate": args.learning_rate, "model": args.model, "sts": suite,
                             "sts_avg": suite["Avg."], "stsb_test": suite["STSBenchmark"]},
                            retrieval_scores(str(out), folders))
    shutil.rmtree(out)
    return {**result, "seconds": round(time.perf_counter() - started, 1)}


def table(results: list[dict], report: dict, rows: dict[str, int]) -> str:
    lines = ["| training file | rows | STS avg | STS-B test | nDCG@10 avg | stsb proxy | sickr proxy | nli proxy |",
             "|---|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue

        def cell(values: list[float]) -> str:
            mean, std = mean_std(values)
            return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f} (n=1)"

        retrieval = [cell([r["retrieval"][name] for r in runs]) for name in ("stsb_proxy", "sickr_proxy", "nli_proxy")]
        lines.append(f"| {variant} | {rows[variant]:,} | {cell([r['sts_avg'] for r in runs])} | "
                     f"{cell([r['stsb_test'] for r in runs])} | {cell([r['retrieval_avg'] for r in runs])} | "
                     f"{' | '.join(retrieval)} |")
    dropped = ", ".join(f"{k} {v:,}" for k, v in report["dropped"].items() if v)
    lines.append("")
    lines.append(f"Mining ({report['seconds']['total_s']:.0f} s): {report['rows_written']:,} of {report['pairs']:,} "
                 f"pairs got a negative; candidates dropped: {dropped}; mean positive score "
                 f"{report['mean_positive_score']:.3f}, mean negative score {report['mean_negative_score']:.3f}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default: ../shared/models/paraphrase-MiniLM-L3-v2")
    parser.add_argument("--nli_file", default=None, help="SimCSE's NLI csv; default: ../shared/data/train's")
    parser.add_argument("--senteval_data", default=None)
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--relative_margin", type=float, default=0.05)
    parser.add_argument("--output_dir", default="result/mined_negatives")
    args = parser.parse_args(argv)
    args.model = args.model or default_model()
    if args.nli_file is None:
        shared = shared_dir()
        args.nli_file = str(shared / "data" / "train" / "nli_snli_devtest_for_simcse.csv") if shared else None
    if not args.nli_file or not Path(args.nli_file).is_file():
        parser.error(f"--nli_file {args.nli_file!r} does not exist; give SimCSE's NLI csv (sent0,sent1,hard_neg)")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    data = str(resolve_data_dir(args.senteval_data))
    out = Path(args.output_dir)
    folders = proxy_folders(out, data, args.nli_file)
    files, report = training_files(out, args.nli_file, args.model, args.relative_margin)
    rows = {name: sum(1 for _ in open(path, encoding="utf-8")) - 1 for name, path in files.items()}
    results = []
    for variant in VARIANTS:
        for seed in seeds:
            path = out / "results" / f"{variant}-seed{seed}.json"
            if not path.is_file():
                print(f"=== {variant} seed {seed}", flush=True)
                atomic_write_json(path, run_one(variant, seed, args, files, data, folders))
            results.append(json.loads(path.read_text(encoding="utf-8")))
            atomic_write_text(out / "mined_negatives.md", table(results, report, rows))
    print(table(results, report, rows))
    return results


if __name__ == "__main__":
    main()
