"""Directions for the defaults, measured on validation splits (never on test).

    .venv/bin/python benches/validation_study.py --data ../shared/data/bibtex \\
        --data ../shared/data/debian/deps --seeds 2

Each set is the suite's validation split of its training rows (``suite.py --validation
0.2``: the test rows are not read). Per set and seed this trains ``XRLinearClassifier``
with each configuration of ``--config`` (default: :data:`CONFIGS`), predicts the top 20 of
the validation rows and scores P@1/3/5; then it re-ranks those 20 by
``(1 - a) * score + a * max(0, cos(x, z_l))`` for each ``a`` of ``--alphas``, where
``z_l`` is label ``l``'s PIFA centroid (the normalised sum of its training rows, as the
tree is clustered on): the "label-centroid score fused with the linear scores" of issue 18.
The fit time is the training call alone, in this process (compare it within one run).

Writes ``benches/results/validation/study.md`` (mean over seeds; best peer per metric
from ``benches/results/validation/suite.jsonl`` when present) and JSON lines next to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: configurations compared by default (``XRLinearClassifier`` keyword arguments)
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "single": {"n_estimators": 1},
    "two": {"n_estimators": 2},
    "flat": {"n_estimators": 1, "max_leaf_size": 10**9},
}
#: ``flat`` (one-vs-rest) is left out above this many labels
FLAT_MAX_LABELS = 5000
METRICS = (1, 3, 5)


def centroid_scores(X: Any, Z: Any, ids: np.ndarray) -> np.ndarray:
    """``cos(x_i, z_l)`` for every candidate ``l = ids[i, j]`` (``-1`` where ``ids`` is)."""
    n, k = ids.shape
    valid = ids >= 0
    rows = np.repeat(np.arange(n), k)
    c = np.asarray(X[rows].multiply(Z[np.where(valid, ids, 0).ravel()]).sum(axis=1))
    return np.where(valid, c.reshape(n, k), -1.0)


def fused(ids: np.ndarray, scores: np.ndarray, cos: np.ndarray, alpha: float) -> np.ndarray:
    """``ids`` re-ordered by ``(1 - alpha) * scores + alpha * max(0, cos)``."""
    f = np.where(ids >= 0, (1 - alpha) * scores + alpha * np.maximum(cos, 0.0), -np.inf)
    return np.take_along_axis(ids, np.argsort(-f, axis=1, kind="stable"), axis=1)


def best_peers(slug: str) -> dict[str, tuple[float, str]]:
    """The best peer's P@k on this split (``targets.best_peer`` of the latest record of each
    peer in the validation suite results), ``{}`` when there is none."""
    import targets

    path = HERE / "results" / "validation" / "suite.jsonl"
    return targets.best_peer(targets.latest(path).get(slug, {})) if path.exists() else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", action="append", default=[], help="data folder (repeat)")
    ap.add_argument("--synthetic", action="append", default=[], help="make_xmc spec (repeat)")
    ap.add_argument("--config", action="append", default=[], metavar="NAME=JSON")
    ap.add_argument("--alphas", default="0.1,0.2,0.3")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--fraction", type=float, default=0.2, help="validation fraction")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "validation" / "study.md"))
    a = ap.parse_args()

    import scipy.sparse as sp

    import suite
    import xmrrs
    from _machine import machine, write_results
    from xmrrs.datasets import load_npz
    from xmrrs.indexing import label_representation
    from xmrrs.metrics import precision_at_k

    configs = dict(CONFIGS)
    if a.config:
        configs = {lib.name: lib.params for lib in suite.parse_xmrrs_configs(a.config, "--config")}
    alphas = [float(v) for v in a.alphas.split(",") if v.strip()]
    rows: list[dict[str, Any]] = []
    lines = []
    for spec in [*a.data, *(f"synthetic:{s}" for s in a.synthetic)]:
        ds = suite.prepare_data(spec, suite.DEFAULT_CACHE, a.n_jobs, a.fraction)

        X, Y = load_npz(ds.root / "X_train.npz", ds.root / "Y_train.npz")
        Xv, Yv = load_npz(ds.root / "X_test.npz", ds.root / "Y_test.npz")
        if alphas:  # the PIFA centroids, only for the re-ranking
            Z = label_representation(X, Y, "pifa", n_jobs=a.n_jobs)
            Z = sp.csr_matrix(Z, dtype=np.float32)
        peers = best_peers(ds.slug)
        for name, params in configs.items():
            if name == "flat" and Y.shape[1] > FLAT_MAX_LABELS:
                continue
            per_seed: dict[str, list[list[float]]] = {}
            fit_s, model_mb = [], []
            for seed in range(a.seeds):
                est = xmrrs.XRLinearClassifier(n_jobs=a.n_jobs, random_state=seed, **params)
                t = time.perf_counter()
                est.fit(X, Y)
                fit_s.append(time.perf_counter() - t)
                with tempfile.TemporaryDirectory() as d:
                    est.save(Path(d) / "model")
                    files = (Path(d) / "model").rglob("*")
                    model_mb.append(sum(f.stat().st_size for f in files if f.is_file()) / 1e6)
                ids, scores = est.predict_topk(Xv, 20)
                cos = centroid_scores(Xv, Z, ids) if alphas else None
                for alpha in [0.0, *alphas]:
                    top = fused(ids, scores, cos, alpha) if alpha else ids
                    pk = [precision_at_k(Yv, top, k=k) for k in METRICS]
                    per_seed.setdefault(f"{alpha:g}", []).append(pk)
            for alpha, pks in per_seed.items():
                m = np.mean(pks, axis=0)
                rec = {
                    "data": ds.name,
                    "config": name,
                    "params": params,
                    "alpha": float(alpha),
                    "seeds": a.seeds,
                    "mean": m.tolist(),
                    "fit_s": float(np.mean(fit_s)),
                    "model_mb": float(np.mean(model_mb)),
                    "best_peer": {str(k): peers[f"P@{k}"] for k in METRICS if peers},
                }
                rows.append(rec)
                diffs = [
                    f"{m[i] - peers[f'P@{k}'][0]:+.4f}" if peers else "-"
                    for i, k in enumerate(METRICS)
                ]
                lines.append(
                    f"| {ds.name} | {name} | {alpha} | "
                    + " | ".join(f"{v:.4f}" for v in m)
                    + " | "
                    + " | ".join(diffs)
                    + f" | {np.mean(fit_s):.2f} | {np.mean(model_mb):.1f} |"
                )
                print(lines[-1], flush=True)
        if peers:
            best = ", ".join(f"{m} {lib} {v:.4f}" for m, (v, lib) in peers.items())
            lines.append(f"| {ds.name} | best peer: {best} |" + " |" * 9)
    info = machine()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        f"Validation study, {stamp}; machine: {info['cores']} cores, {info['cpu']}; "
        f"validation split {a.fraction} of the training rows (suite.validation_rows), seeds "
        f"0-{a.seeds - 1} (means); alpha: weight of the label-centroid score in the re-ranking "
        "of the top 20 (0: none); d P@k: minus the best peer's on the same split; fit_s: "
        f"training call, {a.n_jobs} threads, this process; model_MB: the saved model (the "
        "centroids are not in it). Configurations: "
        + "; ".join(f"{n} {json.dumps(p)}" for n, p in configs.items()),
        "",
        "| data set | config | alpha | P@1 | P@3 | P@5 | d P@1 | d P@3 | d P@5 | fit_s "
        "| model_MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    write_results(a.out, head + lines, [{"date": stamp, **info, **r} for r in rows])


if __name__ == "__main__":
    main()
