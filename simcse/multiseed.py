"""Train and evaluate one recipe under several seeds; report mean ± std per task (REFERENCE §8-9).

    python -m simcse.multiseed --seeds 42,43,44 -- \
        --model_name_or_path bert-base-uncased --train_file data/wiki1m_for_simcse.txt \
        --output_dir result/unsup-bert --pooler_type cls --mlp_only_train ...

Everything after ``--`` is a train.py command line (or a single .json file of train.py arguments);
it must not set ``--seed``. Seed s trains into ``<output_dir>/seed-<s>`` with ``train.main``; the model
train.py saves there (the best checkpoint with ``--load_best_model_at_end``) is then scored by
``evaluation.main`` with the pooler its config records (``cls`` + ``--mlp_only_train`` -> ``cls_before_pooler``;
see :func:`simcse.tool.pooler_from_config`). The figures averaged are the ones evaluation.py prints
(×100, two decimals); std is the sample standard deviation (ddof 1) across seeds. The table is printed
and, with every per-seed result, written to ``<output_dir>/multiseed.json`` (or ``--output_json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from prettytable import PrettyTable

from simcse.errors import SimCSEError


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SimCSEError(f"--seeds {text!r} must be comma-separated integers, e.g. 42,43,44") from None
    if not seeds:
        raise SimCSEError("--seeds is empty; give e.g. 42,43,44")
    if len(set(seeds)) != len(seeds):
        raise SimCSEError(f"--seeds {text!r} repeats a seed; each run needs its own")
    return seeds


def _flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def seed_train_args(train_args: list[str], seed: int, seed_dir: str) -> list[str]:
    """train.py arguments for one seed: --seed and --output_dir replaced (a .json file is rewritten)."""
    if len(train_args) == 1 and train_args[0].endswith(".json"):
        with open(train_args[0], encoding="utf-8") as handle:
            values = json.load(handle)
        values.update(seed=seed, output_dir=seed_dir)
        parent = os.path.dirname(os.path.abspath(seed_dir))
        os.makedirs(parent, exist_ok=True)
        path = os.path.join(parent, f"train_args.seed-{seed}.json")  # kept: the exact arguments of the run
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(values, handle, indent=2)
        return [path]
    kept, skip = [], False
    for arg in train_args:
        if skip:
            skip = False
            continue
        if arg == "--output_dir":
            skip = True
            continue
        if arg.startswith("--output_dir="):
            continue
        kept.append(arg)
    return kept + ["--output_dir", seed_dir, "--seed", str(seed)]


def base_output_dir(train_args: list[str]) -> str:
    if len(train_args) == 1 and train_args[0].endswith(".json"):
        with open(train_args[0], encoding="utf-8") as handle:
            values = json.load(handle)
        if "seed" in values:
            raise SimCSEError(f"{train_args[0]!r} sets seed; remove it, --seeds chooses the seeds")
        output_dir = values.get("output_dir")
    else:
        if _flag_value(train_args, "--seed") is not None:
            raise SimCSEError("the train.py arguments set --seed; remove it, --seeds chooses the seeds")
        output_dir = _flag_value(train_args, "--output_dir")
    if not output_dir:
        raise SimCSEError("the train.py arguments need --output_dir; seed s trains into <output_dir>/seed-<s>")
    return output_dir


def summarize(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """{column: {"mean", "std"}} over the seeds (sample std; 0 for a single seed)."""
    columns = list(dict.fromkeys(c for row in per_seed.values() for c in row))
    summary = {}
    for column in columns:
        values = [row[column] for row in per_seed.values() if column in row]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        summary[column] = {"mean": statistics.fmean(values), "std": std, "n": len(values)}
    return summary


def render(per_seed: dict[int, dict[str, float]], summary: dict[str, dict[str, float]]) -> str:
    table = PrettyTable()
    table.field_names = ["seed", *summary]
    for seed, row in per_seed.items():
        table.add_row([str(seed), *(f"{row[c]:.2f}" if c in row else "-" for c in summary)])
    table.add_row(["mean ± std", *(f"{s['mean']:.2f} ± {s['std']:.2f}" for s in summary.values())])
    return table.get_string()


def parse_args(argv: list[str] | None):
    from simcse.cli import OneLineArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" not in argv:
        own, train_args = argv, []
    else:
        cut = argv.index("--")
        own, train_args = argv[:cut], argv[cut + 1:]
    parser = OneLineArgumentParser(prog="python -m simcse.multiseed", description=__doc__.split("\n\n")[0],
                                   usage="python -m simcse.multiseed --seeds 42,43,44 [options] -- TRAIN.PY ARGS",
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--seeds", required=True, help="comma-separated seeds, e.g. 42,43,44")
    parser.add_argument("--mode", default="test", choices=["dev", "test", "fasttest"], help="evaluation.py --mode")
    parser.add_argument("--task_set", default="sts", choices=["sts", "transfer", "full", "na"],
                        help="evaluation.py --task_set (na: use --tasks)")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="evaluate these tasks (sets --task_set na)")
    parser.add_argument("--pooler", default=None, help="override the pooler recorded in the checkpoint")
    parser.add_argument("--senteval_data", default=None,
                        help="SentEval data dir (contains downstream/) for the evaluation; also passed to train.py")
    parser.add_argument("--output_json", default=None, help="default: <output_dir>/multiseed.json")
    args = parser.parse_args(own)
    if not train_args:
        parser.error("give the train.py arguments after --, e.g. -- --model_name_or_path ... --output_dir DIR")
    return args, train_args


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoConfig

    import evaluation
    import train
    from simcse.tool import pooler_from_config

    args, train_args = parse_args(argv)
    seeds = parse_seeds(args.seeds)
    output_dir = base_output_dir(train_args)
    eval_common = ["--mode", args.mode]
    if args.tasks:
        eval_common += ["--task_set", "na", "--tasks", *args.tasks]
    else:
        eval_common += ["--task_set", args.task_set]
    if args.senteval_data:
        eval_common += ["--senteval_data", args.senteval_data]
        if len(train_args) != 1 and _flag_value(train_args, "--senteval_data") is None:
            train_args = [*train_args, "--senteval_data", args.senteval_data]  # for the in-training dev scores

    runs: dict[int, dict] = {}
    per_seed: dict[int, dict[str, float]] = {}
    for seed in seeds:
        seed_dir = os.path.join(output_dir, f"seed-{seed}")
        print(f"====== seed {seed}: training into {seed_dir}", flush=True)
        train_metrics = train.main(seed_train_args(train_args, seed, seed_dir))
        pooler = args.pooler or pooler_from_config(AutoConfig.from_pretrained(seed_dir))
        print(f"====== seed {seed}: evaluating {seed_dir} with --pooler {pooler}", flush=True)
        payload = evaluation.main(["--model_name_or_path", seed_dir, "--pooler", pooler, *eval_common,
                                   "--output_json", os.path.join(seed_dir, "eval_results.json")])
        scores = {name: value for table in payload["tables"].values() for name, value in table.items()}
        if "sts" in payload["tables"] and "transfer" in payload["tables"]:  # both tables have an Avg.
            scores = {**{f"{k} (STS)" if k == "Avg." else k: v for k, v in payload["tables"]["sts"].items()},
                      **{f"{k} (transfer)" if k == "Avg." else k: v for k, v in payload["tables"]["transfer"].items()}}
        per_seed[seed] = scores
        runs[seed] = {"output_dir": seed_dir, "pooler": pooler, "scores": scores,
                      "best_model_checkpoint": train_metrics.get("best_model_checkpoint"),
                      "best_metric": train_metrics.get("best_metric")}

    summary = summarize(per_seed)
    print(f"------ {args.mode}: {len(seeds)} seeds, mean ± std (sample std, ddof 1) ------")
    print(render(per_seed, summary))
    result = {"seeds": seeds, "mode": args.mode, "std_ddof": 1, "train_args": train_args, "runs": runs,
              "summary": summary}
    json_path = args.output_json or os.path.join(output_dir, "multiseed.json")
    evaluation.write_json_atomic(json_path, result)
    print(f"wrote {json_path}")
    return result


if __name__ == "__main__":
    from simcse.cli import run_cli

    sys.exit(run_cli(main, prog="python -m simcse.multiseed"))
