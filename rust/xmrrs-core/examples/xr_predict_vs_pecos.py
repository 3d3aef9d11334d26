"""PECOS XR-Linear on the synthetic model of ``xr_predict_bench.rs``, side by side.

    cargo run --release -p xmrrs-core --example xr_predict_bench -- --what batch --export /tmp/xrx
    PYTHONDONTWRITEBYTECODE=1 <python with libpecos> rust/xmrrs-core/examples/xr_predict_vs_pecos.py /tmp/xrx

Builds the same layers as a PECOS model (W = [weights^T; bias] with bias feature 1.0, C from
the child pointers), saves it, loads it predict-only (as the anchors do), predicts the same
queries with beam 10, top-10, l3-hinge, and compares with xmrrs's predictions (written by
the export): label ids must agree and scores to float rounding. Prints batch time at 2 and 1
threads and single-query latency at 1 thread, with the machine load.
"""

import os
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp


def load_csr(d, name):
    shape = tuple(int(v) for v in open(os.path.join(d, f"{name}.shape")).read().split())
    ip = np.load(os.path.join(d, f"{name}.indptr.npy")).astype(np.int64)
    ix = np.load(os.path.join(d, f"{name}.indices.npy")).astype(np.int32)
    da = np.load(os.path.join(d, f"{name}.data.npy"))
    return sp.csr_matrix((da, ix, ip), shape=shape)


def main(d):
    from pecos.xmc.base import HierarchicalMLModel, MLModel
    from pecos.xmc.xlinear.model import XLinearModel

    n_layers = int(open(os.path.join(d, "n_layers")).read())
    chain = []
    for m in range(n_layers):
        w = load_csr(d, f"layer{m}.w")  # children x features
        bias = np.load(os.path.join(d, f"layer{m}.bias.npy"))
        cp = np.load(os.path.join(d, f"layer{m}.child_ptr.npy")).astype(np.int64)
        k = w.shape[0]
        wp = sp.vstack([w.T.tocsr(), sp.csr_matrix(bias[None, :])]).tocsc().astype(np.float32)
        parent = np.repeat(np.arange(len(cp) - 1), np.diff(cp))
        c = sp.csc_matrix(
            (np.ones(k, dtype=np.float32), (np.arange(k), parent)), shape=(k, len(cp) - 1)
        )
        chain.append(
            MLModel(W=wp, C=c, bias=1.0, pred_params={"only_topk": 10, "post_processor": "l3-hinge"})
        )
    model = XLinearModel(HierarchicalMLModel(chain))
    x = load_csr(d, "x")
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        t = time.time()
        pm = XLinearModel.load(tmp, is_predict_only=True)
        load_s = time.time() - t

        def run(threads, xs):
            return pm.predict(xs, beam_size=10, only_topk=10, post_processor="l3-hinge", threads=threads)

        run(2, x[:100])
        for threads in (2, 1):
            ts = []
            for _ in range(5):
                t = time.time()
                y = run(threads, x)
                ts.append(time.time() - t)
            print(
                f"pecos batch {x.shape[0]} queries, {threads} thread(s): median {np.median(ts):.3f} s"
                f" (min {min(ts):.3f}); load {os.getloadavg()}"
            )
        lat = []
        for i in range(1000):
            xi = x[i : i + 1]
            t = time.perf_counter()
            run(1, xi)
            lat.append(time.perf_counter() - t)
        print(
            f"pecos single query, 1 thread: median {np.median(lat) * 1e6:.0f} us, "
            f"p99 {np.percentile(lat, 99) * 1e6:.0f} us; predict-only load {load_s * 1e3:.0f} ms; "
            f"load {os.getloadavg()}"
        )
    # agreement with xmrrs
    ids = np.load(os.path.join(d, "pred.ids.npy")).reshape(x.shape[0], 10)
    scores = np.load(os.path.join(d, "pred.scores.npy")).reshape(x.shape[0], 10)
    y = y.tocsr()
    same_ids = same_sets = 0
    max_err = 0.0
    for i in range(x.shape[0]):
        row = y[i]
        order = np.lexsort((row.indices, -row.data))
        pid, psc = row.indices[order], row.data[order]
        mine = ids[i][ids[i] >= 0]
        same_sets += set(pid.tolist()) == set(mine.tolist())
        same_ids += len(pid) == len(mine) and bool((pid == mine).all())
        if len(pid) == len(mine) and (pid == mine).all():
            max_err = max(max_err, float(np.max(np.abs(psc - scores[i][: len(mine)]), initial=0)))
    print(
        f"agreement: identical ranked ids {same_ids}/{x.shape[0]} rows, same top-10 sets "
        f"{same_sets}/{x.shape[0]}, max |score diff| on identical rows {max_err:.2e}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
