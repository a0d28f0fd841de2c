"""Train and evaluate one recipe under several seeds; report mean ± std and a 95% confidence interval.

    python -m simcse.training.multiseed --seeds 42,43,44 -- \
        --model_name_or_path bert-base-uncased --train_file data/wiki1m_for_simcse.txt \
        --output_dir result/unsup-bert --pooler_type cls --mlp_only_train ...
    python -m simcse.training.multiseed --compare result/recipe-a/multiseed.json result/recipe-b/multiseed.json

Everything after ``--`` is a train.py command line (or a single .json file of train.py arguments);
it must not set ``--seed``. Seed s trains into ``<output_dir>/seed-<s>`` with
:func:`simcse.training.run.train_model`; the model saved there (the best checkpoint with
``--load_best_model_at_end``) is then scored by :func:`simcse.evaluation.report.evaluate` with the pooler its
config records (``cls`` + ``--mlp_only_train`` -> ``cls_before_pooler``;
see :func:`simcse.modeling.checkpoint.pooler_from_config`).

Statistics are computed from the unrounded scores (Spearman ×100 as SentEval returns it, before
evaluation.py rounds it for printing; the average column is the mean of the unrounded task scores):
the mean, the sample standard deviation (ddof 1) and the 95% confidence interval of the mean,
mean ± t(0.975, n-1) · std / √n (Student's t, as the seeds are few). With one seed there is no spread:
the table says ``n=1`` instead of printing ``± 0.00``.

Resumable: each seed's result is written to ``<output_dir>/seed-<s>/multiseed_seed.json`` as soon as it is
evaluated, and ``<output_dir>/multiseed.json`` (or ``--output_json``) is rewritten after every seed. A rerun
of the same command skips finished seeds, evaluates a seed whose final model is complete but was not
scored, resumes a seed from its newest complete checkpoint (``--resume_from_checkpoint last``), and
restarts a seed that left nothing usable. A seed folder trained with other arguments is an error,
never reused or overwritten.

Paired comparison (``--compare_to OTHER.json`` after a run, or ``--compare A.json B.json`` alone): two
recipes evaluated on the same seeds; per column the mean of the per-seed differences A - B, their 95%
confidence interval and the two-sided p-value of the paired t-test (scipy's ``ttest_rel``). Pairing by
seed removes the share of the variance that the seed causes in both recipes alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from simcse.errors import SimCSEError
from simcse.training.seed_statistics import (
    paired_comparison,
    read_per_seed,
    render,
    render_comparison,
    summarize,
    summary_title,
    unrounded_scores,
)

SEED_RESULT = "multiseed_seed.json"  # per seed: the scores, written once the seed is evaluated
SEED_ARGS = "multiseed_args.json"  # per seed: the settings it was started with, written before training


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SimCSEError(f"`seeds` {text!r} must be comma-separated integers, e.g. 42,43,44") from None
    if not seeds:
        raise SimCSEError("`seeds` is empty; give e.g. 42,43,44")
    if len(set(seeds)) != len(seeds):
        raise SimCSEError(f"`seeds` {text!r} repeats a seed; each run needs its own")
    return seeds


def _flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def seed_train_args(train_args: list[str], seed: int, seed_dir: str,
                    extra: dict[str, object] | None = None) -> list[str]:
    """train.py arguments for one seed: --seed and --output_dir replaced (a .json file is rewritten);
    ``extra`` adds flags (``{"resume_from_checkpoint": "last"}``; True = a bare boolean flag)."""
    extra = extra or {}
    if len(train_args) == 1 and train_args[0].endswith(".json"):
        with open(train_args[0], encoding="utf-8") as handle:
            values = json.load(handle)
        values.update(seed=seed, output_dir=seed_dir, **extra)
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
    flags = [item for key, value in extra.items()
             for item in ([f"--{key}"] if value is True else [f"--{key}", str(value)])]
    return kept + ["--output_dir", seed_dir, "--seed", str(seed), *flags]


def base_output_dir(train_args: list[str]) -> str:
    if len(train_args) == 1 and train_args[0].endswith(".json"):
        with open(train_args[0], encoding="utf-8") as handle:
            values = json.load(handle)
        if "seed" in values:
            raise SimCSEError(f"{train_args[0]!r} sets seed; remove it, `seeds` chooses the seeds")
        output_dir = values.get("output_dir")
    else:
        if _flag_value(train_args, "--seed") is not None:
            raise SimCSEError("the train.py arguments set `seed`; remove it, `seeds` chooses the seeds")
        output_dir = _flag_value(train_args, "--output_dir")
    if not output_dir:
        raise SimCSEError("the train.py arguments need `output_dir`; seed s trains into <output_dir>/seed-<s>")
    return output_dir


# ---------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None):
    from simcse.cli import OneLineArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" not in argv:
        own, train_args = argv, []
    else:
        cut = argv.index("--")
        own, train_args = argv[:cut], argv[cut + 1:]
    parser = OneLineArgumentParser(prog="python -m simcse.training.multiseed",
                                   description=__doc__.split("\n\n")[0],
                                   usage="python -m simcse.training.multiseed --seeds 42,43,44 [options] -- "
                                   "TRAIN.PY ARGS",
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 42,43,44")
    parser.add_argument("--mode", default="test", choices=["dev", "test", "fasttest"], help="evaluation.py --mode")
    parser.add_argument("--task_set", default="sts", choices=["sts", "transfer", "full", "na"],
                        help="evaluation.py --task_set (na: use --tasks)")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                        help="evaluate these tasks (sets --task_set na)")
    parser.add_argument("--pooler", default=None, help="override the pooler recorded in the checkpoint")
    parser.add_argument("--senteval_data", default=None,
                        help="SentEval data dir (contains downstream/) for the evaluation; also passed to train.py")
    parser.add_argument("--output_json", default=None, help="default: <output_dir>/multiseed.json")
    parser.add_argument("--compare_to", default=None, metavar="OTHER.json",
                        help="after the run, compare with another recipe's multiseed.json over the same seeds")
    parser.add_argument("--compare", nargs=2, default=None, metavar=("A.json", "B.json"),
                        help="only compare two multiseed.json files (paired by seed), no training")
    args = parser.parse_args(own)
    if args.compare:
        if train_args or args.seeds:
            parser.error("--compare reads two finished runs; give no --seeds and no train.py arguments")
        return args, train_args
    if args.seeds is None:
        parser.error("the following arguments are required: --seeds")
    if not train_args:
        parser.error("give the train.py arguments after --, e.g. -- --model_name_or_path ... --output_dir DIR")
    return args, train_args


def _run_arguments(train_args: list[str], seed: int, seed_dir: str) -> list[str] | dict:
    """What identifies one seed's training: its train.py command line, or its JSON arguments."""
    if len(train_args) == 1 and train_args[0].endswith(".json"):
        with open(train_args[0], encoding="utf-8") as handle:
            return {**json.load(handle), "seed": seed, "output_dir": seed_dir}
    return seed_train_args(train_args, seed, seed_dir)


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError:
        raise SimCSEError(f"{path!r} is not valid JSON (a write cut off?); delete it to redo that step") from None


def compare_main(path_a: str, path_b: str) -> dict:
    comparison = paired_comparison(read_per_seed(path_a), read_per_seed(path_b))
    print(f"------ paired by seed: A = {path_a}, B = {path_b} ------")
    print(render_comparison(comparison, "A", "B"))
    return {"a": path_a, "b": path_b, "comparison": comparison}


def main(argv: list[str] | None = None) -> dict:
    args, train_args = parse_args(argv)
    if args.compare:
        return compare_main(*args.compare)

    from transformers import AutoConfig

    from simcse.cli import configure_training_logging, print_notices
    from simcse.evaluation.report import EvaluationConfig, evaluate
    from simcse.files import atomic_write_json
    from simcse.modeling.checkpoint import pooler_from_config
    from simcse.training.arguments import parse_train_args
    from simcse.training.reliability import final_save_incomplete, newest_complete_checkpoint
    from simcse.training.run import train_model

    seeds = parse_seeds(args.seeds)
    output_dir = base_output_dir(train_args)
    eval_common = ["--mode", args.mode]  # as evaluation.py flags: recorded with each seed, compared on resume
    eval_config = {"mode": args.mode, "task_set": "na" if args.tasks else args.task_set,
                   "senteval_data": args.senteval_data}
    if args.tasks:
        eval_common += ["--task_set", "na", "--tasks", *args.tasks]
        eval_config["tasks"] = list(args.tasks)
    else:
        eval_common += ["--task_set", args.task_set]
    if args.senteval_data:
        eval_common += ["--senteval_data", args.senteval_data]
        if len(train_args) != 1 and _flag_value(train_args, "--senteval_data") is None:
            train_args = [*train_args, "--senteval_data", args.senteval_data]  # for the in-training dev scores
    json_path = args.output_json or os.path.join(output_dir, "multiseed.json")

    runs: dict[int, dict] = {}
    per_seed: dict[int, dict[str, float]] = {}

    def write_progress(done: bool) -> dict:
        summary = summarize(per_seed) if per_seed else {}
        result = {"seeds": seeds, "finished": list(per_seed), "complete": done, "mode": args.mode, "std_ddof": 1,
                  "ci": "95% t-interval of the mean", "train_args": train_args, "runs": runs, "summary": summary}
        atomic_write_json(json_path, result)
        return result

    for seed in seeds:
        seed_dir = os.path.join(output_dir, f"seed-{seed}")
        settings = {"train_args": _run_arguments(train_args, seed, seed_dir), "evaluation": eval_common,
                    "pooler": args.pooler}
        recorded = _read_json(os.path.join(seed_dir, SEED_ARGS))
        if recorded is not None and recorded != settings:
            raise SimCSEError(f"{seed_dir!r} was started with other settings (see its {SEED_ARGS}); use another "
                              "`output_dir`, or move that folder away to rerun this seed")
        done = _read_json(os.path.join(seed_dir, SEED_RESULT))
        if done is not None:
            print(f"====== seed {seed}: already done, read {os.path.join(seed_dir, SEED_RESULT)}", flush=True)
            runs[seed], per_seed[seed] = done, done["scores"]
            write_progress(False)
            continue
        if os.path.isdir(seed_dir) and recorded is None and os.listdir(seed_dir):
            raise SimCSEError(f"{seed_dir!r} holds files this command did not start (no {SEED_ARGS}); use another "
                              "`output_dir`, or move that folder away")
        train_metrics: dict = {}
        if os.path.isdir(seed_dir) and final_save_incomplete(seed_dir) is None:
            print(f"====== seed {seed}: trained earlier ({seed_dir} holds a complete model), evaluating", flush=True)
        else:
            # the folder holds at least SEED_ARGS, so a fresh start writes into a non-empty folder
            extra: dict[str, object] = {"overwrite_output_dir": True}
            if os.path.isdir(seed_dir) and newest_complete_checkpoint(seed_dir) is not None:
                extra = {"resume_from_checkpoint": "last"}
                print(f"====== seed {seed}: resuming in {seed_dir} from {newest_complete_checkpoint(seed_dir)}",
                      flush=True)
            elif os.path.isdir(seed_dir) and set(os.listdir(seed_dir)) - {SEED_ARGS}:
                print(f"====== seed {seed}: no complete checkpoint in {seed_dir}, training it again", flush=True)
            else:
                print(f"====== seed {seed}: training into {seed_dir}", flush=True)
            os.makedirs(seed_dir, exist_ok=True)
            atomic_write_json(os.path.join(seed_dir, SEED_ARGS), settings)
            *groups, notices = parse_train_args(seed_train_args(train_args, seed, seed_dir, extra))
            print_notices(notices, "multiseed")
            model_args, data_args, training_args = groups
            configure_training_logging(training_args.should_log)
            train_metrics = train_model(model_args, data_args, training_args) or {}
        pooler = args.pooler or pooler_from_config(AutoConfig.from_pretrained(seed_dir))
        print(f"====== seed {seed}: evaluating {seed_dir} with --pooler {pooler}", flush=True)
        payload = evaluate(EvaluationConfig(model_name_or_path=seed_dir, pooler=pooler, **eval_config))
        atomic_write_json(os.path.join(seed_dir, "eval_results.json"), payload)
        printed = {name: value for table in payload["tables"].values() for name, value in table.items()}
        if "sts" in payload["tables"] and "transfer" in payload["tables"]:  # both tables have an Avg.
            printed = {**{f"{k} (STS)" if k == "Avg." else k: v for k, v in payload["tables"]["sts"].items()},
                       **{f"{k} (transfer)" if k == "Avg." else k: v for k, v in payload["tables"]["transfer"].items()}}
        scores = unrounded_scores(payload)
        runs[seed] = {"output_dir": seed_dir, "pooler": pooler, "scores": scores, "printed": printed,
                      "best_model_checkpoint": train_metrics.get("best_model_checkpoint"),
                      "best_metric": train_metrics.get("best_metric")}
        per_seed[seed] = scores
        atomic_write_json(os.path.join(seed_dir, SEED_RESULT), runs[seed])
        write_progress(False)

    result = write_progress(True)
    print(summary_title(args.mode, len(seeds)))
    print(render(per_seed, result["summary"]))
    if args.compare_to:
        other = read_per_seed(args.compare_to)
        result["comparison"] = paired_comparison(per_seed, other)
        print(f"------ paired by seed: this run - {args.compare_to} ------")
        print(render_comparison(result["comparison"], "this", "other"))
        atomic_write_json(json_path, result)
    print(f"wrote {json_path}")
    return result


if __name__ == "__main__":
    from simcse.cli import run_cli

    sys.exit(run_cli(main, prog="python -m simcse.training.multiseed"))
