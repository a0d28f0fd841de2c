#!/usr/bin/env bash
# Set up .venv, then the offline demo: unsupervised SimCSE on the packaged all-MiniLM-L6-v2 with the
# wiki1m sample, STS-B dev every 25 steps, best checkpoint kept and converted, STS suite before/after.
# Extra arguments go to `python -m simcse.training.demo` (e.g. --max_steps 60 --output_dir /tmp/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m simcse.training.demo "$@"
