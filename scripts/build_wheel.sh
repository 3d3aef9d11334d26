#!/usr/bin/env bash
# Builds the portable wheel (abi3, CPython >= 3.10, manylinux2014 = glibc >= 2.17) with a
# pinned toolchain from PyPI (maturin, linking through zig), shows its tags with auditwheel,
# then installs it into a fresh venv that has no Rust toolchain on PATH and runs a smoke test.
#
#   scripts/build_wheel.sh            wheel into dist/, then the smoke test
#
# PYTHON picks the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(command -v "${PYTHON:-python3}")"
TOOLS=.venv-wheel
SMOKE=.venv-smoke
MATURIN=maturin==1.16.0
ZIG=ziglang==0.17.0
AUDITWHEEL=auditwheel==6.8.2

if [ ! -x "$TOOLS/bin/python" ]; then
    "$PY" -m venv "$TOOLS"
fi
"$TOOLS/bin/python" -m pip install -q --upgrade pip
"$TOOLS/bin/python" -m pip install -q "$MATURIN" "$ZIG" "$AUDITWHEEL"

rm -rf dist
# zig (from the ziglang package) links against glibc 2.17 symbols; a separate target
# directory keeps the development build's artefacts intact
PATH="$PWD/$TOOLS/bin:$PATH" CARGO_TARGET_DIR=target/wheel \
    maturin build --release --zig --compatibility manylinux2014 -o dist
wheel=$(ls dist/xmrrs-*.whl)
"$TOOLS/bin/auditwheel" show "$wheel"
"$TOOLS/bin/python" - "$wheel" <<'PYEOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
missing = [f for f in ("LICENSE-MIT", "LICENSE-APACHE") if not any(n.endswith("/licenses/" + f) for n in names)]
if missing:
    sys.exit(f"the wheel lacks {missing}")
print("licenses in the wheel:", [n for n in names if "/licenses/" in n])
PYEOF

rm -rf "$SMOKE"
"$PY" -m venv "$SMOKE"
"$SMOKE/bin/python" -m pip install -q --upgrade pip
"$SMOKE/bin/python" -m pip install -q "$wheel"
# no cargo, rustc or rustup reachable: the wheel must not need them
env -i HOME="$HOME" LANG=C.UTF-8 PATH="$PWD/$SMOKE/bin:/usr/bin:/bin" \
    "$PWD/$SMOKE/bin/python" scripts/wheel_smoke.py
