#!/usr/bin/env bash
# Creates benches/.venv-peers, a virtual environment holding the peer libraries the
# benchmarks compare against (PECOS, omikuji, napkinXC). Idempotent: re-running it only
# installs what is missing.
#
#     benches/setup_peers.sh            # uses python3 from PATH
#     PYTHON=python3.11 benches/setup_peers.sh
#
# libpecos needs numpy < 2 and scipy < 1.14; its declared dependencies pull torch and
# several GB of CUDA wheels that its XR-Linear / indexing code never imports, so it is
# installed with --no-deps after its real run-time dependencies. xmrrs itself is not
# installed here: the benchmarks run the peers in their own processes with this python.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-peers"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

"${pip[@]}" install "numpy<2" "scipy<1.14" scikit-learn omikuji napkinxc
"${pip[@]}" install --no-deps libpecos

"$venv/bin/python" - <<'PY'
from importlib.metadata import version

import pecos.xmc  # noqa: F401  (import check: the indexer must load without torch)

print(
    "peers ready:",
    ", ".join(
        f"{p} {version(p)}" for p in ("libpecos", "omikuji", "napkinxc", "numpy", "scipy")
    ),
)
PY
