#!/usr/bin/env bash
# 1 million English Wikipedia sentences for unsupervised SimCSE (about 120 MB). Needs internet.
set -euo pipefail
cd "$(dirname "$0")"
URL=https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main/wiki1m_for_simcse.txt
if command -v wget >/dev/null; then wget -q --show-progress -O wiki1m_for_simcse.txt.part "$URL"; else curl -fL -o wiki1m_for_simcse.txt.part "$URL"; fi
mv wiki1m_for_simcse.txt.part wiki1m_for_simcse.txt
