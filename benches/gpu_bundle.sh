#!/usr/bin/env bash
# Make the bundle that benches/gpu_xtransformer.sh reads on a GPU machine with no network:
# the debian texts (only text, tags and deps; xz), all-MiniLM-L6-v2's tokenizer and config, and
# its weights as float16, xz-compressed (to fit a 64 MiB transfer); with PECOS=1 also libpecos
# 1.2.8's package (pip download, its wheel's files as pecos.tar.xz) for gpu_pecos_xtransformer.sh.
# benches/gpu_unpack.py undoes it there. Git-ignore DEST.
#
#   [PECOS=1] benches/gpu_bundle.sh [DEST] [DATA]    # defaults: .gpu, ../shared/data/debian/texts
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-.gpu}"
data="${2:-$here/../../shared/data/debian/texts}"
py="${PYTHON:-$here/../.venv/bin/python}"
minilm="$("$here/setup_minilm.sh")"
mkdir -p "$dest/minilm"
for f in config.json special_tokens_map.json tokenizer.json tokenizer_config.json vocab.txt; do
    cp "$minilm/$f" "$dest/minilm/"
done
"$py" - "$dest" "$data" "$minilm" <<'PY'
import json, lzma, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
dest, data, minilm = map(Path, sys.argv[1:])
for s in ("train", "test"):
    rows = []
    for line in open(data / f"{s}.jsonl", encoding="utf-8"):
        if line.strip():
            r = json.loads(line)
            rows.append(json.dumps({k: r.get(k) or ([] if k != "text" else "") for k in ("text", "tags", "deps")}))
    (dest / f"{s}.jsonl.xz").write_bytes(lzma.compress(("\n".join(rows) + "\n").encode(), preset=9))
sd = load_file(minilm / "model.safetensors")
sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
half = dest / "minilm" / "model.fp16.safetensors"
save_file(sd, half, metadata={"format": "pt"})
(dest / "minilm" / (half.name + ".xz")).write_bytes(lzma.compress(half.read_bytes(), preset=9))
half.unlink()
PY
if [ "${PECOS:-0}" = 1 ]; then
    tmp="$(mktemp -d)"
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 -d "$tmp" libpecos==1.2.8
    (cd "$tmp" && unzip -q libpecos-*.whl && tar cf - pecos libpecos.libs | xz -9 > pecos.tar.xz)
    mv "$tmp/pecos.tar.xz" "$dest/"
    rm -rf "$tmp"
fi
du -sh "$dest"
