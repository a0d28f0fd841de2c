"""Training files made from the SentEval data: STS-B's pairs with their gold scores, for graded losses.

    python -m simcse.data.prepare stsb --split train --output /tmp/stsb-train-scored.csv

STS Benchmark (Cer et al. 2017, "SemEval-2017 Task 1", arXiv:1708.00055) ships as tab-separated
``sts-{train,dev,test}.csv`` (genre, file, year, id, score, sentence 1, sentence 2[, sources]); the
output is a ``.csv`` with the header ``sent0,sent1,score`` that ``train.py --loss_type cosent`` reads as
graded pairs (:func:`simcse.data.column_roles`).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from pathlib import Path

from senteval.datapath import resolve_data_dir
from simcse.errors import SimCSEError

__all__ = ["read_stsb_pairs", "write_scored_pairs"]


def read_stsb_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """(sentence 1, sentence 2, score) of each line of an STS Benchmark split file, in file order.

    The file is split on tabs only (no quoting: its sentences contain quote characters); a line with
    fewer than 7 fields or a score that is not a finite number is an error naming the line.
    """
    pairs = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if fields == [""]:
                continue
            if len(fields) < 7:
                raise SimCSEError(f"{path}, line {number}: {len(fields)} tab-separated fields, expected at least 7 "
                                  "(genre, file, year, id, score, sentence 1, sentence 2)")
            try:
                score = float(fields[4])
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                raise SimCSEError(f"{path}, line {number}: the score field holds {fields[4]!r}, not a number")
            pairs.append((fields[5], fields[6], score))
    return pairs


def write_scored_pairs(pairs: list[tuple[str, str, float]], output: str | Path) -> Path:
    """Write ``sent0,sent1,score`` rows to a new ``.csv`` (refuses to overwrite an existing file)."""
    output = Path(output)
    if output.suffix != ".csv":
        raise SimCSEError(f"`output` {output}: write a .csv file (train.py reads graded pairs from .csv/.json)")
    if output.exists():
        raise SimCSEError(f"`output` {output} already exists; remove it or choose another path")
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f"{output.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sent0", "sent1", "score"])
        writer.writerows((a, b, repr(score)) for a, b, score in pairs)
    os.replace(temporary, output)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simcse.data.prepare", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="dataset", required=True)
    stsb = sub.add_parser("stsb", help="STS Benchmark pairs with their 0..5 scores")
    stsb.add_argument("--split", choices=["train", "dev", "test"], default="train")
    stsb.add_argument("--senteval_data", default=None, help="SentEval data dir (contains downstream/)")
    stsb.add_argument("--output", required=True, help="the .csv to write (sent0,sent1,score)")
    args = parser.parse_args(argv)
    downstream = Path(resolve_data_dir(args.senteval_data)) / "downstream"
    source = downstream / "STS" / "STSBenchmark" / f"sts-{args.split}.csv"
    if not source.is_file():
        raise SimCSEError(f"{source} does not exist; point `senteval_data` at the SentEval data directory")
    pairs = read_stsb_pairs(source)
    out = write_scored_pairs(pairs, args.output)
    print(f"wrote {len(pairs)} scored pairs from {source} to {out}")


if __name__ == "__main__":
    from simcse.cli import run_cli

    raise SystemExit(run_cli(main, prog="python -m simcse.data.prepare"))
