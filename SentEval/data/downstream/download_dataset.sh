#!/usr/bin/env bash
# Download the SentEval evaluation data (STS12-16, STS-B, SICK, MR, CR, SUBJ, MPQA, SST, TREC, MRPC)
# as packaged by the SimCSE authors, into this directory. Needs internet; run from anywhere.
# Offline machines: point --senteval_data or $SENTEVAL_DATA at an existing copy instead.
set -euo pipefail
cd "$(dirname "$0")"
URL=${SENTEVAL_URL:-https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main/senteval.tar}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if command -v wget >/dev/null; then wget -q --show-progress -O "$tmp/senteval.tar" "$URL"; else curl -fL -o "$tmp/senteval.tar" "$URL"; fi
tar -xf "$tmp/senteval.tar" -C "$tmp"
# The archive holds the task folders, possibly under a downstream/ folder.
src="$tmp"; [ -d "$tmp/downstream" ] && src="$tmp/downstream"
for task in STS SICK MR CR SUBJ MPQA SST TREC MRPC SNLI; do
  if [ -d "$src/$task" ]; then rm -rf "./$task"; mv "$src/$task" .; fi
done
for required in STS/STSBenchmark/sts-dev.csv SICK/SICK_trial.txt MR/rt-polarity.pos; do
  [ -f "$required" ] || { echo "download_dataset.sh: $required missing after extraction" >&2; exit 1; }
done
echo "SentEval data ready in $(pwd)"
