"""TF-IDF plus frozen text embeddings: the dense block (HybridMatrix) against one CSR matrix.

Usage::

    python benches/bench_hybrid.py ../shared/data/debian/texts \\
        --emb-train E_train.npy --emb-test E_test.npy --labels tags --weight 1.0 \\
        [--trees 1 2] [--threads 2] [--tol 1.0] [--only TF-IDF ...]
        [--out benches/results/hybrid_debian_tags.md]

The embeddings are float32 arrays with one row per line of ``train.jsonl`` / ``test.jsonl``
(for example mean-pooled, L2-normalised all-MiniLM-L6-v2 at max length 64; see
``benches/README.md`` for the command that made them). TF-IDF is xmrrs's
``TfidfVectorizer(sublinear_tf=True, min_df=2)`` fit on the training texts; the embedding
block is scaled by ``--weight``. Rows: TF-IDF alone, TF-IDF + embeddings as one CSR matrix
(the dense block stored as explicit entries), the same features as a ``HybridMatrix`` (the
dense block kept dense; the default tree from the TF-IDF block), that with
``dense_in_tree=True`` (the tree from both blocks) and with ``dense_in_ranker=False`` (the
label layer trained on TF-IDF alone); ``--tol T`` adds the ``HybridMatrix`` with the solver's
tolerance ``tol=T`` (default 0.1), and ``--only`` keeps the rows named. Each row reports fit
and batch-predict seconds (best of ``--repeat``), P@1/3/5 on the test split and the model's
bytes; the hybrid's time ratios are against the first row (TF-IDF alone unless ``--only``
leaves it out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import check_load, machine, write_results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("texts", help="directory with train.jsonl and test.jsonl")
    p.add_argument("--emb-train", required=True)
    p.add_argument("--emb-test", required=True)
    p.add_argument("--labels", default="tags", help="label field (tags or deps)")
    p.add_argument("--weight", type=float, default=1.0, help="scale of the embedding block")
    p.add_argument("--trees", type=int, nargs="+", default=[1, 3])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--tol", type=float, nargs="*", default=[])
    p.add_argument("--only", nargs="*", default=None, help="row names to keep")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import numpy as np

    from xmrrs import XRLinearClassifier
    from xmrrs._targets import truth_indicator
    from xmrrs.hybrid import HybridMatrix
    from xmrrs.metrics import precision_at_k
    from xmrrs.text import TfidfVectorizer

    def read(split: str) -> tuple[list[str], list[list[str]]]:
        with open(Path(args.texts) / f"{split}.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [r["text"] for r in rows], [list(r[args.labels]) for r in rows]

    (t_tr, y_tr), (t_te, y_te) = read("train"), read("test")
    e_tr = np.load(args.emb_train).astype(np.float32) * np.float32(args.weight)
    e_te = np.load(args.emb_test).astype(np.float32) * np.float32(args.weight)
    if e_tr.shape[0] != len(t_tr) or e_te.shape[0] != len(t_te):
        raise SystemExit("the embeddings must have one row per text of train/test.jsonl")
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, n_jobs=args.threads)
    x_tr, x_te = vec.fit_transform(t_tr), vec.transform(t_te)
    h_tr, h_te = HybridMatrix(x_tr, e_tr), HybridMatrix(x_te, e_te)
    inputs = {
        "TF-IDF": (x_tr, x_te),
        "TF-IDF + emb, one CSR": (h_tr.tocsr(), h_te.tocsr()),
        "TF-IDF + emb, HybridMatrix": (h_tr, h_te),
        "TF-IDF + emb, HybridMatrix, dense_in_tree=True": (h_tr, h_te),
        "TF-IDF + emb, HybridMatrix, dense_in_ranker=False": (h_tr, h_te),
    }
    if args.only is not None:
        inputs = {k: v for k, v in inputs.items() if k in args.only}
    for tol in args.tol:
        inputs[f"TF-IDF + emb, HybridMatrix, tol={tol:g}"] = (h_tr, h_te)
    load, busy = check_load("bench_hybrid")
    lines = [
        f"# TF-IDF + embeddings on {args.texts} ({args.labels}), weight {args.weight}",
        "",
        f"{len(t_tr)} train / {len(t_te)} test texts, {x_tr.shape[1]} TF-IDF features, "
        f"{e_tr.shape[1]}-d embeddings; {args.threads} threads; load {load:.2f}"
        f"{' (busy: times not valid)' if busy else ''}",
        "",
        "| features | trees | fit s | predict s | P@1 | P@3 | P@5 | model MB | fit / TF-IDF |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    records = []
    for trees in args.trees:
        base = None
        for name, (a, b) in inputs.items():
            fit_s, pred_s = float("inf"), float("inf")
            est: XRLinearClassifier | None = None
            for _ in range(args.repeat):
                est = XRLinearClassifier(
                    n_estimators=trees,
                    n_jobs=args.threads,
                    dense_in_ranker="dense_in_ranker=False" not in name,
                    dense_in_tree="dense_in_tree=True" in name,
                    tol=float(name.split("tol=")[1]) if "tol=" in name else 0.1,
                )
                t0 = time.perf_counter()
                est.fit(a, y_tr)
                fit_s = min(fit_s, time.perf_counter() - t0)
                t0 = time.perf_counter()
                ids, _ = est.predict_topk(b, 5)
                pred_s = min(pred_s, time.perf_counter() - t0)
            assert est is not None
            truth = truth_indicator(y_te, est.classes_, len(y_te))
            pk = [precision_at_k(truth, ids, k) for k in (1, 3, 5)]
            mb = sum(m.nbytes for m in est.models_) / 1e6
            base = fit_s if base is None else base
            lines.append(
                f"| {name} | {trees} | {fit_s:.2f} | {pred_s:.2f} | {pk[0]:.4f} | {pk[1]:.4f} "
                f"| {pk[2]:.4f} | {mb:.1f} | {fit_s / base:.2f}x |"
            )
            records.append(
                {
                    "bench": "hybrid",
                    "labels": args.labels,
                    "weight": args.weight,
                    "features": name,
                    "trees": trees,
                    "tol": float(name.split("tol=")[1]) if "tol=" in name else 0.1,
                    "fit_s": fit_s,
                    "predict_s": pred_s,
                    "p_at": pk,
                    "model_mb": mb,
                    "busy": busy,
                    "machine": machine(),
                }
            )
            print(lines[-1], flush=True)
    if args.out:
        write_results(args.out, lines, records)
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
