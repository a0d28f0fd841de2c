"""STS test average of one or more models at several embedding widths (prefixes), each model encoded once.

    python bench/matryoshka_dims.py --models A:cls_before_pooler B:cls_before_pooler --dims 0,128,64

A width D scores the first D coordinates of every embedding, exactly as ``evaluation.py --truncate_dim D``
(0 = the full width); the sentences are encoded once per model and sliced per width. Prints one row per
model: the 7-task STS average (STS12-16 "all", STS-B and SICK-R test, as evaluation.py --mode test) at
each width, and writes them to --output_json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from senteval.datapath import resolve_data_dir  # noqa: E402
from senteval.engine import SE  # noqa: E402
from senteval.registry import STS_TASKS  # noqa: E402
from simcse.evaluation.report import sts_row  # noqa: E402
from simcse.evaluation.senteval_tasks import senteval_params  # noqa: E402
from simcse.modeling.encoder import build_encoder  # noqa: E402


def sts_average_by_width(model: str, pooler: str, dims: list[int], data_dir: str) -> dict[int, dict]:
    encoder = build_encoder(model, pooler, device="cpu")  # caches every sentence's full embedding

    def text(tokens) -> str:
        return " ".join(w.decode("utf-8") if isinstance(w, bytes) else w for w in tokens)

    rows = {}
    for dim in dims:
        def batcher(params, batch, dim=dim):
            vectors = encoder.encode([text(s) for s in batch])
            return (vectors if dim == 0 else vectors[:, :dim]).numpy()

        se = SE(senteval_params("test", data_dir, "cpu"), batcher)
        results = {task: se.eval(task) for task in STS_TASKS}
        names, scores = sts_row(results, "test", "all")
        rows[dim] = dict(zip(names, (float(s) for s in scores)))
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, metavar="PATH:POOLER")
    parser.add_argument("--dims", default="0,128,64", help="comma-separated widths; 0 = the full width")
    parser.add_argument("--senteval_data", default=None)
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    dims = [int(d) for d in args.dims.split(",")]
    data_dir = str(resolve_data_dir(args.senteval_data))
    started = time.perf_counter()
    table = {}
    for spec in args.models:
        path, _, pooler = spec.rpartition(":")
        table[spec] = sts_average_by_width(path, pooler, dims, data_dir)
    header = " | ".join("full" if d == 0 else str(d) for d in dims)
    print(f"| model | STS avg at width: {header} |")
    for spec, rows in table.items():
        print(f"| {spec} | " + " | ".join(f"{rows[d]['Avg.']:.2f}" for d in dims) + " |")
    print(f"total time {time.perf_counter() - started:.0f}s")
    if args.output_json:
        Path(args.output_json).write_text(json.dumps({"dims": dims, "table": table}, indent=2) + "\n")
    return table


if __name__ == "__main__":
    main()
