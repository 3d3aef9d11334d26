"""Unpack a bundle made by benches/gpu_bundle.sh into /tmp/xt (texts, minilm, pecos).

Usage: python3 benches/gpu_unpack.py [BUNDLE] [DEST]    # defaults: .gpu, /tmp/xt
"""

from __future__ import annotations

import io
import lzma
import shutil
import sys
import tarfile
from pathlib import Path


def main() -> int:
    from safetensors.torch import load_file, save_file

    b = Path(sys.argv[1] if len(sys.argv) > 1 else ".gpu")
    d = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/xt")
    (d / "texts").mkdir(parents=True, exist_ok=True)
    (d / "minilm").mkdir(exist_ok=True)
    for s in ("train", "test"):
        packed = (b / f"{s}.jsonl.xz").read_bytes()
        (d / "texts" / f"{s}.jsonl").write_bytes(lzma.decompress(packed))
    for f in (b / "minilm").iterdir():
        if ".safetensors" not in f.name:
            shutil.copy(f, d / "minilm" / f.name)
    half = b / "minilm" / "model.fp16.safetensors"
    if not half.exists():
        half = d / "model.fp16.safetensors"
        half.write_bytes(lzma.decompress((b / "minilm" / "model.fp16.safetensors.xz").read_bytes()))
    sd = load_file(half)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    save_file(sd, d / "minilm" / "model.safetensors", metadata={"format": "pt"})
    if (b / "pecos.tar.xz").exists():
        with tarfile.open(fileobj=io.BytesIO((b / "pecos.tar.xz").read_bytes()), mode="r:xz") as t:
            t.extractall(d / "pecos", filter="data")
    print(f"bundle unpacked into {d}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
