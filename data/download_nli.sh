#!/usr/bin/env bash
# SNLI + MNLI triplets (anchor, entailment, contradiction) for supervised SimCSE. Needs internet.
set -euo pipefail
cd "$(dirname "$0")"
URL=https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main/nli_for_simcse.csv
if command -v wget >/dev/null; then wget -q --show-progress -O nli_for_simcse.csv.part "$URL"; else curl -fL -o nli_for_simcse.csv.part "$URL"; fi
mv nli_for_simcse.csv.part nli_for_simcse.csv
