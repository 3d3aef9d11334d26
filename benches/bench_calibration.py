"""Calibration of the top-k scores before and after :class:`xmrrs.calibration.CalibratedRanker`.

    PYTHONPATH=python .venv/bin/python benches/bench_calibration.py \\
        --data ../shared/data/bibtex --data ../shared/data/delicious \\
        --data ../shared/data/rcv1-subset1

For each set (XC format ``train.txt`` / ``test.txt``): ``XRLinearClassifier()`` (defaults)
is wrapped in ``CalibratedRanker(method=..., cv=3, k=5)`` and fitted on the train split only
(the map is fitted on 3 held-out folds of train, the ranker refitted on all of train). On the
test split, every top-5 candidate is one (probability, hit) pair; the table reports the ECE
(15 equal-width bins) of the raw path score (``l3-hinge``, in (0, 1], read as a probability)
and of the calibrated probability, the Brier score of both, and the precision/recall of
``predict_above(threshold=0.5)``. Writes ``--out`` (default
``benches/results/calibration.md``) and one reliability-curve PNG per set beside it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from xmrrs import XRLinearClassifier
from xmrrs.calibration import (
    CalibratedRanker,
    expected_calibration_error,
    reliability_curve,
    topk_hits,
)
from xmrrs.datasets import load_split

HERE = Path(__file__).resolve().parent
K = 5
BINS = 15


def _plot(path: Path, name: str, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    for label, (hits, probs) in curves.items():
        mean_p, freq, count = reliability_curve(hits, probs, BINS)
        nz = count > 0
        ax.plot(mean_p[nz], freq[nz], "o-", label=label, markersize=4)
    ax.set_xlabel("predicted probability (top-5 candidates)")
    ax.set_ylabel("fraction that are true labels")
    ax.set_title(f"{name}: reliability ({BINS} bins)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True, help="folder with train/test.txt")
    ap.add_argument("--out", default=str(HERE / "results" / "calibration.md"))
    ap.add_argument("--n-jobs", type=int, default=None)
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in args.data:
        name = Path(folder).name
        (Xtr, Ytr), (Xte, Yte) = load_split(folder, n_jobs=args.n_jobs)
        curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        raw_done = False
        for method in ("isotonic", "sigmoid"):
            t0 = time.perf_counter()
            cal = CalibratedRanker(
                XRLinearClassifier(n_jobs=args.n_jobs), method=method, cv=3, k=K
            ).fit(Xtr, Ytr)
            secs = time.perf_counter() - t0
            ids, probs = cal.predict_topk(Xte)
            _, raw = cal.estimator_.predict_topk(Xte, K)
            hits = topk_hits(Yte, ids)
            valid = ids >= 0
            h, p, r = hits[valid], probs[valid], np.clip(raw[valid], 0.0, 1.0)
            if not raw_done:
                curves["raw path score"] = (h, r)
                raw_done = True
            curves[f"calibrated ({method})"] = (h, p)
            above = cal.predict_above(Xte, 0.5)
            tp = float(above.multiply(Yte).sum())
            prec = tp / max(above.nnz, 1)
            rec = tp / max(Yte.nnz, 1)
            rows.append(
                (
                    name,
                    method,
                    expected_calibration_error(h, r, BINS),
                    expected_calibration_error(h, p, BINS),
                    float(np.mean((r - h) ** 2)),
                    float(np.mean((p - h) ** 2)),
                    prec,
                    rec,
                    above.nnz / Xte.shape[0],
                    secs,
                )
            )
            print(rows[-1], flush=True)
        _plot(out.parent / f"calibration_{name}.png", name, curves)
    lines = [
        f"Top-{K} candidates of XRLinearClassifier() on the test split; calibrator fitted on "
        f"3 held-out folds of train. ECE: {BINS} equal-width bins.",
        "",
        "| set | method | ECE raw | ECE calibrated | Brier raw | Brier calibrated "
        "| P (p>=0.5) | R (p>=0.5) | labels/row (p>=0.5) | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]:.4f} | {r[4]:.4f} | {r[5]:.4f} "
            f"| {r[6]:.3f} | {r[7]:.3f} | {r[8]:.2f} | {r[9]:.1f} |"
        )
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out} and calibration_<set>.png beside it")


if __name__ == "__main__":
    main()
