#!/usr/bin/env bash
# Supervised SimCSE with BERT-base on NLI triplets (anchor, entailment, contradiction), the paper's
# recipe: a global batch of 512 (GLOBAL_BATCH) = per-device batch x NUM_GPU processes (torchrun/DDP) x
# GRAD_ACCUM accumulation steps (4 x 128 x 1 by default), lr 5e-5, 3 epochs, max length 32, [CLS] with the
# MLP head kept at evaluation. The per-device batch is derived, never fixed:  NUM_GPU=8 bash
# run_sup_example.sh  (8 x 64). Accumulation keeps 512 examples per update but not 512 in-batch
# negatives (each micro-batch is its own contrastive batch); for those in less memory, NUM_GPU=1 with
# --grad_cache_mini_batch 128 instead. Other flags go through "$@".
# Data: bash data/download_nli.sh. Afterwards: python evaluation.py --model_name_or_path ... --pooler cls
set -euo pipefail
cd "$(dirname "$0")"
NUM_GPU=${NUM_GPU:-4}
GLOBAL_BATCH=${GLOBAL_BATCH:-512}
GRAD_ACCUM=${GRAD_ACCUM:-1}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do  # a batch setting among the extra flags would change the global batch
  case "${args[i]}" in
    --gradient_accumulation_steps=*) GRAD_ACCUM="${args[i]#*=}" ;;
    --gradient_accumulation_steps) GRAD_ACCUM="${args[i + 1]:-}" ;;
    --per_device_train_batch_size | --per_device_train_batch_size=*)
      echo "run_sup_example.sh: the per-device batch is GLOBAL_BATCH / (NUM_GPU x GRAD_ACCUM); set those" \
           "instead of --per_device_train_batch_size" >&2
      exit 2 ;;
  esac
done
for name in NUM_GPU GLOBAL_BATCH GRAD_ACCUM; do
  if ! [[ "${!name}" =~ ^[1-9][0-9]*$ ]]; then
    echo "run_sup_example.sh: $name=${!name} is not a positive integer" >&2
    exit 2
  fi
done
if (( GLOBAL_BATCH % (NUM_GPU * GRAD_ACCUM) != 0 )); then
  echo "run_sup_example.sh: GLOBAL_BATCH=$GLOBAL_BATCH does not split over NUM_GPU=$NUM_GPU processes x" \
       "GRAD_ACCUM=$GRAD_ACCUM accumulation steps" >&2
  exit 2
fi
PER_DEVICE=$(( GLOBAL_BATCH / (NUM_GPU * GRAD_ACCUM) ))
echo "run_sup_example.sh: global batch $GLOBAL_BATCH = $PER_DEVICE per device x $NUM_GPU process(es) x" \
     "$GRAD_ACCUM accumulation step(s)" >&2
PORT_ID=${PORT_ID:-$(( RANDOM % 10000 + 20000 ))}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
torchrun --nproc_per_node "$NUM_GPU" --master_port "$PORT_ID" train.py \
    --model_name_or_path bert-base-uncased \
    --train_file data/nli_for_simcse.csv \
    --output_dir result/my-sup-simcse-bert-base-uncased \
    --num_train_epochs 3 \
    --per_device_train_batch_size "$PER_DEVICE" \
    --gradient_accumulation_steps "$GRAD_ACCUM" \
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
