#!/usr/bin/env bash
# Build gpu_pack/ (git-ignored): what an offline GPU node needs to run bench/gpu_check.py besides its
# preinstalled packages and this working tree. It holds
#   wheels/     the wheels the node lacks ("pack" lines of scripts/gpu_pack.txt), one version each (the
#               pin of constraints.txt), binary wheels for the node's Python and platform, no dependencies
#               pulled in: the list names them all
#   tokenizer/  the bert-base-uncased tokenizer
#   data/       wiki1m.txt (the first 6,400 lines of the wiki1m sample: 100 steps of batch 64) and nli.csv
#               (the header and the first 5,120 triplets: 40 steps of 128)
#   senteval/   downstream/STS/STSBenchmark and downstream/SICK (the dev evaluation and the STS part read
#               them; the readers load all three splits)
#   manifest.json   what is in it, with sizes and sha256
# copied from ../shared (or --shared DIR), and prints its size; it fails above 64 MiB.
#   bash scripts/gpu_pack.sh [--python-version 3.12] [--platform manylinux2014_x86_64] [--output gpu_pack]
#                            [--shared DIR]
# On the node (README, "The GPU check"):
#   python -m pip install --no-index --no-deps --upgrade --target gpu_pack/site gpu_pack/wheels/*.whl
#   PYTHONPATH=$PWD/gpu_pack/site python bench/gpu_check.py --output_json gpu_check.json
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY_VERSION=3.12
PLATFORM=manylinux2014_x86_64
OUTPUT=$REPO/gpu_pack
SHARED=${SIMCSE_SHARED:-$REPO/../shared}
LIMIT_MIB=64
WIKI_LINES=6400
NLI_ROWS=5120
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PY_VERSION=$2; shift 2 ;;
    --platform) PLATFORM=$2; shift 2 ;;
    --output) OUTPUT=$(realpath -m "$2"); shift 2 ;;
    --shared) SHARED=$(realpath -m "$2"); shift 2 ;;
    *) echo "gpu_pack.sh: unknown argument $1 (--python-version, --platform, --output, --shared)" >&2; exit 2 ;;
  esac
done
cd "$REPO"
case "$OUTPUT" in
  /|"$REPO"|"$REPO/") echo "gpu_pack.sh: --output $OUTPUT would be emptied; name a folder of its own" >&2; exit 2 ;;
esac
if [ -x .venv/bin/python ]; then PYTHON=${PYTHON:-.venv/bin/python}; else PYTHON=${PYTHON:-python3}; fi
for source in "$SHARED/models/tokenizers/bert-base-uncased" "$SHARED/data/train/wiki1m_for_simcse.head11913.txt" \
              "$SHARED/data/train/nli_snli_devtest_for_simcse.csv" "$SHARED/data/downstream/STS/STSBenchmark" \
              "$SHARED/data/downstream/SICK"; do
  if [ ! -e "$source" ]; then
    echo "gpu_pack.sh: $source is missing (the shared data beside the repository; --shared DIR)" >&2
    exit 1
  fi
done

rm -rf "$OUTPUT"
mkdir -p "$OUTPUT/wheels" "$OUTPUT/tokenizer" "$OUTPUT/data" "$OUTPUT/senteval/downstream/STS"
for name in $(awk '$1 == "pack" {print $2}' scripts/gpu_pack.txt); do
  pin=$(grep -i -E "^${name//-/[-_]}==" constraints.txt || true)
  if [ -z "$pin" ]; then
    echo "gpu_pack.sh: $name has no pin in constraints.txt (the pack carries one version of each wheel)" >&2
    exit 1
  fi
  "$PYTHON" -m pip download --disable-pip-version-check -q --only-binary=:all: --no-deps \
    --python-version "$PY_VERSION" --platform "$PLATFORM" --implementation cp -d "$OUTPUT/wheels" "$pin" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
done
cp "$SHARED"/models/tokenizers/bert-base-uncased/* "$OUTPUT/tokenizer/"
head -n "$WIKI_LINES" "$SHARED/data/train/wiki1m_for_simcse.head11913.txt" > "$OUTPUT/data/wiki1m.txt"
head -n "$((NLI_ROWS + 1))" "$SHARED/data/train/nli_snli_devtest_for_simcse.csv" > "$OUTPUT/data/nli.csv"
cp -r "$SHARED/data/downstream/STS/STSBenchmark" "$OUTPUT/senteval/downstream/STS/"
cp -r "$SHARED/data/downstream/SICK" "$OUTPUT/senteval/downstream/"
chmod -R u+w "$OUTPUT"

"$PYTHON" - "$OUTPUT" "$PY_VERSION" "$PLATFORM" "$LIMIT_MIB" "$REPO" <<'EOF'
import datetime, hashlib, json, subprocess, sys
from pathlib import Path

out, py_version, platform, limit, repo = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
files = sorted(p for p in out.rglob("*") if p.is_file())
try:
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = None
manifest = {
    "built": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": commit or None,
    "python_version": py_version, "platform": platform,
    "wheels": sorted(p.name for p in (out / "wheels").glob("*.whl")),
    "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
              for p in files},
}
(out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
print(f"gpu pack: {out} holds {total / 2**20:.1f} MiB in {len(files) + 1} files "
      f"({len(manifest['wheels'])} wheels for Python {py_version} on {platform}; limit {limit} MiB)")
if total > limit * 2**20:
    sys.exit(f"gpu_pack.sh: {out} is over {limit} MiB")
EOF
