#!/usr/bin/env bash
# Supervised SimCSE with BERT-base on NLI triplets (anchor, entailment, contradiction), the paper's
# recipe: a global batch of 512 (GLOBAL_BATCH) split over NUM_GPU processes by torchrun/DDP (4 x 128),
# lr 5e-5, 3 epochs, max length 32, [CLS] with the MLP head kept at evaluation. Any flag can be
# overridden:  NUM_GPU=8 bash run_sup_example.sh  (8 x 64); on one GPU add --grad_cache_mini_batch 128.
# Data: bash data/download_nli.sh. Afterwards: python evaluation.py --model_name_or_path ... --pooler cls
set -euo pipefail
cd "$(dirname "$0")"
NUM_GPU=${NUM_GPU:-4}
GLOBAL_BATCH=${GLOBAL_BATCH:-512}
if (( GLOBAL_BATCH % NUM_GPU != 0 )); then
  echo "run_sup_example.sh: GLOBAL_BATCH=$GLOBAL_BATCH does not split over NUM_GPU=$NUM_GPU processes" >&2
  exit 2
fi
PER_DEVICE=$(( GLOBAL_BATCH / NUM_GPU ))
echo "run_sup_example.sh: global batch $GLOBAL_BATCH = $PER_DEVICE per device x $NUM_GPU process(es)" >&2
PORT_ID=${PORT_ID:-$(( RANDOM % 10000 + 20000 ))}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
torchrun --nproc_per_node "$NUM_GPU" --master_port "$PORT_ID" train.py \
    --model_name_or_path bert-base-uncased \
    --train_file data/nli_for_simcse.csv \
    --output_dir result/my-sup-simcse-bert-base-uncased \
    --num_train_epochs 3 \
    --per_device_train_batch_size "$PER_DEVICE" \
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
