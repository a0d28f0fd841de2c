#!/usr/bin/env bash
# Set up .venv (with dev tools) and run the linters and the whole test suite (both tiers), offline, on CPU.
# The fast tier alone, on every change: `python -m pytest` (pyproject's addopts deselect the slow tier).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
. .venv/bin/activate
ruff check .
python -m pytest -q -m "slow or not slow" "$@"
