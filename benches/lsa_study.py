"""A dense block made from the sparse features (a truncated SVD, "LSA") beside them: does it
buy accuracy on the shared sets, and at what cost? Chosen on validation splits, not on test.

Usage::

    .venv/bin/python benches/lsa_study.py --data ../shared/data/bibtex --data ... \\
        [--components 64 128] [--seeds 2] [--threads 2]

Each set's training rows are split by the suite's fixed rule (``suite.validation_rows``:
20% validate, the rest fit; the test file is not read). Rows: the defaults on the sparse
features (one and two trees), and the defaults on ``HybridMatrix(X, D)`` where ``D`` is
``sklearn.decomposition.TruncatedSVD(k)`` of the fit rows (randomized, seeded), L2-normalised
per row (one and two trees); ``--label-space`` adds the same with the SVD of the labels'
PIFA centroids (``label_representation(X_fit, Y_fit, "pifa")``, labels x features) instead
of the rows: X projected onto their top right singular vectors. ``fit s`` includes the SVD
(its time is also shown alone); P@k is the mean over ``--seeds`` seeds of the estimator (the
SVD's seed is fixed). Prints one Markdown row per configuration.
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
    a = p.parse_args()

    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    from xmrrs import XRLinearClassifier
    from xmrrs.datasets import load_xc
    from xmrrs.hybrid import HybridMatrix
    from xmrrs.indexing import label_representation
    from xmrrs.metrics import precision_at_k

    print("| data set | features | trees | SVD s | fit s | P@1 | P@3 | P@5 |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in a.data:
        name = Path(folder).name
        X, Y = load_xc(Path(folder) / "train.txt")
        X = normalize(sp.csr_matrix(X, dtype=np.float32)).astype(np.float32)
        Y = sp.csr_matrix(Y)
        fit, val = validation_rows(X.shape[0], 0.2)
        xf, xv, yf, yv = X[fit], X[val], Y[fit], Y[val]
        inputs: list[tuple[str, float, object, object]] = [("sparse", 0.0, xf, xv)]
        for k in a.components:
            t0 = time.perf_counter()
            svd = TruncatedSVD(k, random_state=0).fit(xf)
            df = normalize(svd.transform(xf)).astype(np.float32)
            svd_s = time.perf_counter() - t0
            dv = normalize(svd.transform(xv)).astype(np.float32)
            inputs.append((f"+ SVD {k}", svd_s, HybridMatrix(xf, df), HybridMatrix(xv, dv)))
            if a.label_space:
                # the top right singular vectors of the labels' PIFA centroids instead
                t0 = time.perf_counter()
                z = label_representation(xf, yf, "pifa", n_jobs=a.threads)
                svd = TruncatedSVD(min(k, min(z.shape) - 1), random_state=0).fit(z)
                df = normalize(svd.transform(xf)).astype(np.float32)
                svd_s = time.perf_counter() - t0
                dv = normalize(svd.transform(xv)).astype(np.float32)
                inputs.append(
                    (f"+ PIFA-SVD {k}", svd_s, HybridMatrix(xf, df), HybridMatrix(xv, dv))
                )
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
