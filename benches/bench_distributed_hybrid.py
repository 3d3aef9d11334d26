"""HybridMatrix blocks on a 2-worker Dask LocalCluster against one process (issue 20).

    .venv/bin/python benches/bench_distributed_hybrid.py ../shared/data/debian/texts \\
        --emb-train E_train.npy --labels deps --weight 0.5 [--blocks 4]

TF-IDF (``sublinear_tf=True, min_df=2``) of ``train.jsonl``'s texts beside ``--weight`` times
the embeddings (one row per line, as for ``bench_hybrid.py``): one ``HybridMatrix``. One
process fits ``XRLinearClassifier(n_jobs=2)`` on it; then ``xmrrs.distributed.fit`` trains
on ``--blocks`` row blocks (in memory: they travel in the task graph) with
``LocalCluster(n_workers=2, threads_per_worker=1)``. Prints JSON: fit seconds of both, the
distributed stages, peak RSS (``VmHWM``) of this process after the one-process fit (it also
holds the texts and features) and of each worker, and whether the two models' bytes are
equal.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine, peak_rss_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("texts", help="directory with train.jsonl")
    ap.add_argument("--emb-train", required=True)
    ap.add_argument("--labels", default="deps", help="label field (tags or deps)")
    ap.add_argument("--weight", type=float, default=0.5)
    ap.add_argument("--blocks", type=int, default=4)
    a = ap.parse_args()

    import distributed

    import xmrrs.distributed as dxm
    from xmrrs import XRLinearClassifier
    from xmrrs.hybrid import HybridMatrix
    from xmrrs.text import TfidfVectorizer

    with open(Path(a.texts) / "train.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    texts = [r["text"] for r in rows]
    labels = [r[a.labels] for r in rows]
    X = TfidfVectorizer(sublinear_tf=True, min_df=2).fit_transform(texts)
    E = np.load(a.emb_train)
    if E.shape[0] != len(texts):
        raise SystemExit(f"{a.emb_train} has {E.shape[0]} rows but there are {len(texts)} texts")
    H = HybridMatrix(X, a.weight * E)
    edges = np.linspace(0, len(texts), a.blocks + 1).astype(int)
    blocks = [(H[s:e], labels[s:e]) for s, e in itertools.pairwise(edges)]
    out: dict[str, object] = {
        "labels": a.labels,
        "rows": len(texts),
        "sparse_features": X.shape[1],
        "nnz": int(X.nnz),
        "dense": E.shape[1],
        "blocks": a.blocks,
    }
    t = time.perf_counter()
    one = XRLinearClassifier(n_jobs=2).fit(H, labels)
    out["one_process_fit_s"] = round(time.perf_counter() - t, 2)
    out["this_process_peak_mib"] = round(peak_rss_mb())
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        t = time.perf_counter()
        dist = dxm.fit(XRLinearClassifier(), blocks, client=client)
        out["dask_fit_s"] = round(time.perf_counter() - t, 2)
        out["dask_stages_s"] = {
            k: round(v, 2) for k, v in dist.timings_.items() if isinstance(v, float)
        }
        out["worker_peak_mib"] = sorted(round(v) for v in client.run(peak_rss_mb).values())
    out["same_model_bytes"] = all(
        m1.to_bytes() == m2.to_bytes() for m1, m2 in zip(one.models_, dist.models_, strict=True)
    )
    out["machine"] = machine()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
