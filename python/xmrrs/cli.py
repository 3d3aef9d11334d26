"""The ``xmrrs`` command line (also ``python -m xmrrs``).

Subcommands:

- ``demo``: generate the built-in synthetic data set, train, evaluate, print P@k and timings.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    from xmrrs import _xmrrs
    from xmrrs import sparse as xs
    from xmrrs.baseline import LabelCentroidBaseline
    from xmrrs.datasets import make_xmc
    from xmrrs.metrics import ndcg_at_k, precision_at_k

    t0 = time.perf_counter()
    X, Y = make_xmc(args.n_samples, args.n_features, args.n_labels, random_state=args.seed)
    n_test = max(1, args.n_samples // 5)
    Xtr, Ytr, Xte, Yte = X[:-n_test], Y[:-n_test], X[-n_test:], Y[-n_test:]
    t_data = time.perf_counter() - t0
    print(
        f"xmrrs {_xmrrs.__version__} | {platform.machine()} | simd {_xmrrs.simd_level()} "
        f"| threads {xs.effective_n_jobs(args.n_jobs)}"
    )
    print(
        f"data: make_xmc(n_samples={args.n_samples}, n_features={args.n_features}, "
        f"n_labels={args.n_labels}, random_state={args.seed}) -> train {Xtr.shape[0]}, "
        f"test {Xte.shape[0]}, nnz(X) {X.nnz}, labels/sample {Y.nnz / Y.shape[0]:.2f} "
        f"[{t_data:.2f} s]"
    )
    model = LabelCentroidBaseline(n_jobs=args.n_jobs)
    name = "label-centroid baseline (PIFA cosine, exhaustive; not XR-Linear)"
    t0 = time.perf_counter()
    model.fit(Xtr, Ytr)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids, _ = model.predict_topk(Xte, k=5)
    t_pred = time.perf_counter() - t0
    print(f"model: {name}")
    print(
        f"train: {t_fit:.3f} s | predict top-5 of {Xte.shape[0]} rows: {t_pred:.3f} s "
        f"({1e3 * t_pred / Xte.shape[0]:.3f} ms/row)"
    )
    scores = {f"P@{k}": precision_at_k(Yte, ids, k=k) for k in (1, 3, 5)}
    scores["nDCG@5"] = ndcg_at_k(Yte, ids, k=5)
    print(" | ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return 0 if np.isfinite(list(scores.values())).all() else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xmrrs", description="Extreme multi-label ranking.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train and evaluate on the built-in synthetic data set")
    d.add_argument("--n-samples", type=int, default=25000, help="samples (train + test)")
    d.add_argument("--n-features", type=int, default=30000, help="feature dimension")
    d.add_argument("--n-labels", type=int, default=5000, help="number of labels")
    d.add_argument("--seed", type=int, default=0, help="random seed of the generator")
    d.add_argument("--n-jobs", type=int, default=None, help="threads (default: all cores)")
    d.set_defaults(func=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, OSError) as e:
        print(f"xmrrs: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
