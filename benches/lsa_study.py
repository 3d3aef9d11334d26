"""A dense block made from the sparse features (a truncated SVD, "LSA") beside them: does it
buy accuracy on the shared sets, and at what cost? Chosen on validation splits, not on test.

Usage::

    .venv/bin/python benches/lsa_study.py --data ../shared/data/bibtex --data ... \\
        [--components 64 128] [--seeds 2] [--threads 2] [--label-space] [--n-iter 5] [--test]

Each set's training rows are split by the suite's fixed rule (``suite.validation_rows``:
20% validate, the rest fit; the test file is not read). Rows: the defaults on the sparse
features (one and two trees), and the defaults on ``xmrrs.svd_features.SVDFeatures(k)``'s
output: the rows beside their projection onto the top ``k`` right singular vectors of the fit
rows (randomized, seeded), L2-normalised per row; ``--label-space`` adds the same with the
singular vectors of the labels' PIFA centroids (``source="labels"``). ``fit s`` includes the
SVD and the projection of the fit rows (their time is also shown alone); P@k is the mean over
``--seeds`` seeds of the estimator (the SVD's seed is fixed). Prints one Markdown row per
configuration. ``--test`` (once, after a choice): fit on every training row and score the
test file instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import validation_rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", required=True, help="an XC data folder")
    p.add_argument("--components", type=int, nargs="+", default=[128])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--label-space", action="store_true", help="also the PIFA-SVD rows")
    p.add_argument(
        "--n-iter", type=int, default=5, help="power iterations of the SVD (runs 1-3: 5)"
    )
    p.add_argument(
        "--test", action="store_true", help="fit on every training row, score the test file"
    )
    a = p.parse_args()

    import scipy.sparse as sp
    from sklearn.preprocessing import normalize

    from xmrrs import XRLinearClassifier
    from xmrrs.datasets import load_xc
    from xmrrs.metrics import precision_at_k
    from xmrrs.svd_features import SVDFeatures

    print("| data set | features | trees | SVD s | fit s | P@1 | P@3 | P@5 |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in a.data:
        name = Path(folder).name
        X, Y = load_xc(Path(folder) / "train.txt")
        X = normalize(sp.csr_matrix(X, dtype=np.float32)).astype(np.float32)
        Y = sp.csr_matrix(Y)
        if a.test:  # once, after the choice: the whole training file, then the test file
            Xt, Yt = load_xc(Path(folder) / "test.txt")
            xf, yf, yv = X, Y, sp.csr_matrix(Yt)
            xv = normalize(sp.csr_matrix(Xt, dtype=np.float32)).astype(np.float32)
        else:
            fit, val = validation_rows(X.shape[0], 0.2)
            xf, xv, yf, yv = X[fit], X[val], Y[fit], Y[val]
        inputs: list[tuple[str, float, object, object]] = [("sparse", 0.0, xf, xv)]
        for k in a.components:
            for source in ("rows", "labels") if a.label_space else ("rows",):
                t0 = time.perf_counter()
                svd = SVDFeatures(k, source=source, n_iter=a.n_iter).fit(xf, yf)
                hf = svd.transform(xf)
                svd_s = time.perf_counter() - t0
                name_k = f"+ SVD {k}" if source == "rows" else f"+ PIFA-SVD {k}"
                inputs.append((name_k, svd_s, hf, svd.transform(xv)))
        for trees in (1, 2):
            for label, svd_s, tr, te in inputs:
                pk, ts = [], []
                for seed in range(a.seeds):
                    est = XRLinearClassifier(
                        n_estimators=trees, random_state=seed, n_jobs=a.threads
                    )
                    t0 = time.perf_counter()
                    est.fit(tr, yf)
                    ts.append(time.perf_counter() - t0)
                    ids, _ = est.predict_topk(te, 5)
                    pk.append([precision_at_k(yv, ids, k=j) for j in (1, 3, 5)])
                m = np.mean(pk, axis=0)
                print(
                    f"| {name} | {label} | {trees} | {svd_s:.2f} | {svd_s + min(ts):.2f} | "
                    f"{m[0]:.4f} | {m[1]:.4f} | {m[2]:.4f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
