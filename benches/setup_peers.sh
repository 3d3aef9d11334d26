#!/usr/bin/env bash
# Creates benches/.venv-peers, a virtual environment holding the peer libraries the
# benchmarks compare against (PECOS, omikuji, napkinXC, LibMultiLabel). Idempotent: re-running
# it only installs what is missing.
#
#     benches/setup_peers.sh            # uses python3 from PATH
#     PYTHON=python3.11 benches/setup_peers.sh
#
# libpecos needs numpy < 2 and scipy < 1.14; its declared dependencies pull torch and
# several GB of CUDA wheels that its XR-Linear / indexing code never imports, so it is
# installed with --no-deps after its real run-time dependencies. LibMultiLabel's linear
# methods need no torch (that is its "nn" extra): libmultilabel pulls liblinear-multicore,
# numba, pandas, sparsekmeans (python-graphblas), psutil, PyYAML and tqdm, all of which resolve
# next to the numpy / scipy pins, so it shares this environment. xmrrs itself is not
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

"${pip[@]}" install "numpy<2" "scipy<1.14" scikit-learn omikuji napkinxc "libmultilabel==0.10.0"
"${pip[@]}" install --no-deps libpecos

"$venv/bin/python" - <<'PY'
from importlib.metadata import version

import libmultilabel.linear  # noqa: F401  (its linear methods, without torch)
import pecos.xmc  # noqa: F401  (import check: the indexer must load without torch)

print(
    "peers ready:",
    ", ".join(
        f"{p} {version(p)}"
        for p in (
            "libpecos",
            "omikuji",
            "napkinxc",
            "libmultilabel",
            "liblinear-multicore",
            "numpy",
            "scipy",
        )
    ),
)
PY
