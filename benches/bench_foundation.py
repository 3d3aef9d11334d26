"""Foundation benchmark: the XC parser against scikit-learn's svmlight loader, and the sparse
kernels (Y^T X, transpose, row normalisation) against scipy, on a real data set.

    ./dev bench [--data ../shared/data/debian/deps] [--repeat 5] [--n-jobs 2]

Prints a Markdown table with ratios (scipy-or-sklearn time / xmrrs time) and writes it to
``benches/results/foundation.md`` (plus JSON lines). Results are checked for equality before
being timed, so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.datasets import load_svmlight_file
from sklearn.preprocessing import normalize

sys.path.insert(0, str(Path(__file__).parent))
import xmrrs
from _machine import machine, write_results
from xmrrs import datasets as xd
from xmrrs import sparse as xs


def best(f: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="../shared/data/debian/deps", help="folder with train.txt")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "foundation.md"))
    a = p.parse_args()
    path = Path(a.data) / "train.txt"
    info = machine()
    rows: list[dict[str, Any]] = []

    def record(what: str, t_ref: float, t_ours: float, ref: str) -> None:
        rows.append(
            {
                "kernel": what,
                "reference": ref,
                "ref_s": t_ref,
                "xmrrs_s": t_ours,
                "speedup": t_ref / t_ours,
            }
        )
        print(f"{what:<28} {ref:<34} {t_ref:8.4f} s  xmrrs {t_ours:8.4f} s  x{t_ref / t_ours:6.2f}")

    # --- parser -------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.svm"  # the same content without the XC header line
        with open(path, "rb") as f, open(body, "wb") as g:
            header = f.readline().split()
            g.write(f.read())
        n, d, L = (int(v) for v in header)
        t_ours, (X, Y) = best(lambda: xd.load_xc(path, n_jobs=a.n_jobs), a.repeat)
        t_ref, (Xs, ys) = best(
            lambda: load_svmlight_file(str(body), multilabel=True, zero_based=True, n_features=d),
            max(1, a.repeat // 2),
        )
    Xs = sp.csr_matrix(Xs, dtype=np.float32)
    Xs.sort_indices()
    assert X.shape == Xs.shape == (n, d)
    assert np.array_equal(X.indptr, Xs.indptr) and np.array_equal(X.indices, Xs.indices)
    assert np.array_equal(X.data, Xs.data), "parsed values differ from scikit-learn's"
    labels = [Y.indices[Y.indptr[i] : Y.indptr[i + 1]].tolist() for i in range(n)]
    assert labels == [sorted(int(v) for v in r) for r in ys], "labels differ"
    record("parse XC train.txt", t_ref, t_ours, "sklearn load_svmlight_file")

    # --- kernels ------------------------------------------------------------------------
    Xn_ref = normalize(X)
    t_ours, Xn = best(lambda: xs.normalize_rows(X, n_jobs=a.n_jobs), a.repeat)
    t_ref, _ = best(lambda: normalize(X), a.repeat)
    assert abs(Xn - Xn_ref).max() < 1e-6
    record("row L2 normalise X", t_ref, t_ours, "sklearn normalize")

    t_ours, Yt = best(lambda: xs.transpose(Y, n_jobs=a.n_jobs), a.repeat)
    t_ref, Yt_ref = best(lambda: Y.T.tocsr(), a.repeat)
    assert (Yt != Yt_ref).nnz == 0
    record("transpose Y (CSR->CSC)", t_ref, t_ours, "scipy .T.tocsr()")

    t_ours, Z = best(
        lambda: xs.matmul(xs.transpose(Y, n_jobs=a.n_jobs), Xn, n_jobs=a.n_jobs), a.repeat
    )
    t_ref, Z_ref = best(lambda: Y.T.tocsr() @ Xn_ref, a.repeat)
    assert Z.shape == Z_ref.shape and abs(Z - Z_ref).max() < 1e-4
    record("Y^T X (incl. transpose)", t_ref, t_ours, "scipy Y.T.tocsr() @ X")

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Foundation benchmark, {stamp}, xmrrs {xmrrs.__version__}, data `{a.data}` "
        f"({n} x {d}, {L} labels, nnz(X) {X.nnz}), n_jobs={a.n_jobs}, best of {a.repeat}.",
        f"Machine: {info['cores']} cores, {info['cpu']}, load average {info['load1']}.",
        "",
        "| kernel | reference | reference s | xmrrs s | speed-up |",
        "|---|---|---|---|---|",
        *(
            f"| {r['kernel']} | {r['reference']} | {r['ref_s']:.4f} | {r['xmrrs_s']:.4f} | "
            f"{r['speedup']:.2f}x |"
            for r in rows
        ),
    ]
    write_results(a.out, lines, [{"date": stamp, "data": a.data, **info, **r} for r in rows])


if __name__ == "__main__":
    main()
