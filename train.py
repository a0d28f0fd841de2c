"""Train a SimCSE sentence encoder (unsupervised, supervised, or with another contrastive loss).

    python train.py --model_name_or_path bert-base-uncased --train_file data/wiki1m_for_simcse.txt \
        --output_dir result/my-unsup-simcse --pooler_type cls --mlp_only_train --temp 0.05 \
        --learning_rate 3e-5 --per_device_train_batch_size 64 --max_seq_length 32 \
        --eval_strategy steps --eval_steps 125 --metric_for_best_model stsb_spearman \
        --load_best_model_at_end --save_total_limit 1

A ``.json`` file of the same keys works too, followed by flags that override it; ``configs/`` holds the
papers' recipes (``python train.py configs/simcse-unsup-bert-base.json --output_dir result/x``). The
start prints the recipe and the global batch. Every flag: ``python train.py --help``.
A killed run continues with ``--resume_from_checkpoint last`` (the newest complete checkpoint).
The work is :func:`simcse.training.run.train_model`; this script parses, configures logging and calls it.
"""

from __future__ import annotations

import sys

from simcse.cli import configure_training_logging, print_notices, run_cli
from simcse.training.arguments import parse_train_args
from simcse.training.recipes import run_notices
from simcse.training.run import train_model


def parse_args(argv: list[str] | None):
    """(model, data, training) arguments; flags of the original train.py are translated, each change
    announced on stderr in one line (see simcse.training.legacy_flags.LEGACY_FLAGS), then the recipe (of a
    recipe file) and the global batch size in one more line."""
    argv = sys.argv[1:] if argv is None else argv
    print_notices(run_notices(argv), "train.py")  # a recipe's name and global batch, before any check
    *groups, notices = parse_train_args(argv)
    print_notices(notices, "train.py")
    return groups


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_args(argv)
    configure_training_logging(training_args.should_log)
    return train_model(model_args, data_args, training_args)


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="train.py"))
