#!/usr/bin/env bash
# Supervised SimCSE with BERT-base on NLI triplets (anchor, entailment, contradiction), the paper's
# recipe: 4 GPUs x 128 = batch 512 through torchrun/DDP, lr 5e-5, 3 epochs, max length 32, [CLS] with
# the MLP head kept at evaluation. Any flag can be overridden:  NUM_GPU=1 bash run_sup_example.sh
# Data: bash data/download_nli.sh. Afterwards: python evaluation.py --model_name_or_path ... --pooler cls
set -euo pipefail
cd "$(dirname "$0")"
NUM_GPU=${NUM_GPU:-4}
PORT_ID=${PORT_ID:-$(( RANDOM % 10000 + 20000 ))}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
torchrun --nproc_per_node "$NUM_GPU" --master_port "$PORT_ID" train.py \
    --model_name_or_path bert-base-uncased \
    --train_file data/nli_for_simcse.csv \
    --output_dir result/my-sup-simcse-bert-base-uncased \
    --num_train_epochs 3 \
    --per_device_train_batch_size 128 \
    --learning_rate 5e-5 \
    --max_seq_length 32 \
    --eval_strategy steps \
    --metric_for_best_model stsb_spearman \
    --load_best_model_at_end \
    --eval_steps 125 \
    --save_total_limit 1 \
    --pooler_type cls \
    --overwrite_output_dir \
    --temp 0.05 \
    --do_train \
    --fp16 \
    "$@"
