"""Smoke test of an installed wheel, run by scripts/build_wheel.sh in a venv without Rust."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import xmrrs
from xmrrs import XRLinearClassifier
from xmrrs.datasets import make_xmc


def main() -> int:
    for tool in ("cargo", "rustc", "rustup"):
        if shutil.which(tool):
            raise SystemExit(f"{tool} is on PATH: this is not a Rust-free environment")
    if "site-packages" not in str(Path(xmrrs.__file__)):
        raise SystemExit(f"xmrrs imported from {xmrrs.__file__}, not from the installed wheel")
    cli = Path(sys.executable).with_name("xmrrs")
    out = subprocess.run([str(cli), "--version"], capture_output=True, text=True, check=True)
    if out.stdout.strip() != f"xmrrs {xmrrs.__version__}":
        raise SystemExit(f"xmrrs --version printed {out.stdout!r}")
    X, Y = make_xmc(1200, 2000, 150, random_state=0)
    clf = XRLinearClassifier(n_estimators=2).fit(X[:1000], Y[:1000])
    ids, scores = clf.predict_topk(X[1000:], k=5)
    with tempfile.TemporaryDirectory() as d:
        clf.save(Path(d) / "m")
        back = XRLinearClassifier.load(Path(d) / "m", mmap=True)
        ids2, scores2 = back.predict_topk(X[1000:], k=5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_array_equal(scores, scores2)
    p1 = float(np.mean([Y[1000 + i, j] for i, j in enumerate(ids[:, 0])]))
    print(f"wheel smoke test: {out.stdout.strip()}, {xmrrs.__file__}, P@1 {p1:.3f}, ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
