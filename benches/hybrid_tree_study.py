"""Where a HybridMatrix's label tree comes from, chosen on a validation split (not on test).

Usage::

    .venv/bin/python benches/hybrid_tree_study.py ../shared/data/debian/texts \\
        --emb-train E_train.npy --labels deps --weight 0.5 [--trees 1 2] [--threads 2] \\
        [--pca 64 128] [--tol 0.5 1.0] [--reps 5] [--only TF-IDF "one CSR" ...]

The training rows are split by the suite's fixed rule (a ``numpy.random.default_rng(0)``
permutation; its first ceil(0.2 n) rows validate, the rest fit; the test file is not read).
TF-IDF (``sublinear_tf=True, min_df=2``) is fit on the fit rows; the embeddings (one row per
line of ``train.jsonl``, as for ``bench_hybrid.py``) are scaled by ``--weight``. Rows: TF-IDF
alone, TF-IDF + embeddings as one CSR matrix, and the ``HybridMatrix`` with its tree from both
blocks (``dense_in_tree=True``) or from the TF-IDF block (``dense_in_tree=False``), each with
and without ``dense_in_ranker``. Prints one Markdown row per fit: fit seconds, the ratio to
TF-IDF's, and P@1/3/5 on the validation rows. ``--pca K`` adds a row per K: the dense block
rotated onto the top K eigenvectors of its uncentred second moment (from 10,000 fit rows) and cut
there, tree from TF-IDF; ``--tol T`` adds a row per T: the whole dense block, tree from TF-IDF,
the solver's stopping tolerance ``tol=T`` (the default is 0.1); ``--only`` keeps the rows named
(the PCA and tol rows always run). ``--reps R`` fits every row R times, the rows taken in turn
within each round so that a slower or faster spell of the machine touches them alike; the fit
time is the median (P@k is the same in every round: the fits are deterministic).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("texts")
    p.add_argument("--emb-train", required=True)
    p.add_argument("--labels", default="tags")
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--trees", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pca", type=int, nargs="*", default=[])
    p.add_argument("--tol", type=float, nargs="*", default=[])
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--only", nargs="*", default=None)
    a = p.parse_args()

    from xmrrs import XRLinearClassifier
    from xmrrs._targets import truth_indicator
    from xmrrs.hybrid import HybridMatrix
    from xmrrs.metrics import precision_at_k
    from xmrrs.text import TfidfVectorizer

    with open(Path(a.texts) / "train.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    emb = np.load(a.emb_train).astype(np.float32) * np.float32(a.weight)
    if emb.shape[0] != len(rows):
        raise SystemExit("the embeddings must have one row per line of train.jsonl")
    perm = np.random.default_rng(0).permutation(len(rows))
    n_val = int(np.ceil(0.2 * len(rows)))
    val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    texts = [r["text"] for r in rows]
    labels = [list(r[a.labels]) for r in rows]
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, n_jobs=a.threads)
    x_fit = vec.fit_transform([texts[i] for i in fit])
    x_val = vec.transform([texts[i] for i in val])
    y_fit, y_val = [labels[i] for i in fit], [labels[i] for i in val]
    h_fit, h_val = HybridMatrix(x_fit, emb[fit]), HybridMatrix(x_val, emb[val])
    configs = {
        "TF-IDF": (x_fit, x_val, {}),
        "one CSR": (h_fit.tocsr(), h_val.tocsr(), {}),
        "Hybrid, tree from both blocks": (h_fit, h_val, {"dense_in_tree": True}),
        "Hybrid, tree from both, dense_in_ranker=False": (
            h_fit,
            h_val,
            {"dense_in_tree": True, "dense_in_ranker": False},
        ),
        "Hybrid, tree from TF-IDF": (h_fit, h_val, {"dense_in_tree": False}),
        "Hybrid, tree from TF-IDF, dense_in_ranker=False": (
            h_fit,
            h_val,
            {"dense_in_tree": False, "dense_in_ranker": False},
        ),
    }
    if a.only is not None:
        configs = {k: v for k, v in configs.items() if k in a.only}
    if a.pca:
        pick = np.random.default_rng(0).choice(len(fit), min(len(fit), 10000), replace=False)
        sub = emb[fit][pick].astype(np.float64)
        vecs = np.linalg.eigh(sub.T @ sub)[1][:, ::-1].astype(np.float32)
        for k in a.pca:
            top = vecs[:, :k]
            configs[f"Hybrid, tree from TF-IDF, dense block PCA {k}"] = (
                HybridMatrix(x_fit, np.ascontiguousarray(emb[fit] @ top)),
                HybridMatrix(x_val, np.ascontiguousarray(emb[val] @ top)),
                {"dense_in_tree": False},
            )
    for tol in a.tol:
        configs[f"Hybrid, tree from TF-IDF, tol={tol:g}"] = (
            h_fit,
            h_val,
            {"dense_in_tree": False, "tol": tol},
        )
    print(f"{a.labels}: {len(fit)} fit rows, {len(val)} validation rows")
    print("| labels | trees | features | fit s | fit / TF-IDF | P@1 | P@3 | P@5 |")
    print("|---|---|---|---|---|---|---|---|")
    for trees in a.trees:
        times: dict[str, list[float]] = {name: [] for name in configs}
        fitted = {}
        for _ in range(max(1, a.reps)):
            for name, (xf, _xv, kw) in configs.items():
                est = XRLinearClassifier(n_estimators=trees, random_state=0, n_jobs=a.threads, **kw)
                t0 = time.perf_counter()
                est.fit(xf, y_fit)
                times[name].append(time.perf_counter() - t0)
                fitted[name] = est
        base = None
        for name, (_xf, xv, _kw) in configs.items():
            est = fitted[name]
            ids, _ = est.predict_topk(xv, 5)
            truth = truth_indicator(y_val, est.classes_, len(y_val))
            pk = [precision_at_k(truth, ids, k=k) for k in (1, 3, 5)]
            t = float(np.median(times[name]))
            base = base or t
            print(
                f"| {a.labels} | {trees} | {name} | {t:.2f} | {t / base:.2f}x | "
                f"{pk[0]:.4f} | {pk[1]:.4f} | {pk[2]:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
