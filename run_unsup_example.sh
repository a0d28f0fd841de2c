#!/usr/bin/env bash
# Unsupervised SimCSE with BERT-base, the paper's recipe (REFERENCE §1): batch 64, lr 3e-5, max length
# 32, 1 epoch of wiki1m, STS-B dev every 125 steps, best checkpoint kept, [CLS] + training-only MLP.
# Single GPU (or CPU). Any flag can be overridden or added:  bash run_unsup_example.sh --seed 43
# Data: bash data/download_wiki.sh; SentEval data: see README. Afterwards evaluate with
#   python evaluation.py --model_name_or_path result/my-unsup-simcse-bert-base-uncased --pooler cls_before_pooler
set -euo pipefail
cd "$(dirname "$0")"
python train.py \
    --model_name_or_path bert-base-uncased \
    --train_file data/wiki1m_for_simcse.txt \
    --output_dir result/my-unsup-simcse-bert-base-uncased \
    --num_train_epochs 1 \
    --per_device_train_batch_size 64 \
    --learning_rate 3e-5 \
    --max_seq_length 32 \
    --eval_strategy steps \
    --metric_for_best_model stsb_spearman \
    --load_best_model_at_end \
    --eval_steps 125 \
    --save_total_limit 1 \
    --pooler_type cls \
    --mlp_only_train \
    --overwrite_output_dir \
    --temp 0.05 \
    --do_train \
    --fp16 \
    "$@"
