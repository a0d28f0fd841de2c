#!/usr/bin/env bash
# Set up .venv (with dev tools) and run the linters and the test suite, offline, on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
. .venv/bin/activate
ruff check .
python -m pytest -q "$@"
