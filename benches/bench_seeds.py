"""Accuracy over seeds: xmrrs at PECOS's settings against PECOS XR-Linear, seeds 0..N-1.

    .venv/bin/python benches/bench_seeds.py --data ../shared/data/rcv1-subset1 \\
        --data ../shared/data/stackex-cs --synthetic 10000 --seeds 8

One seed decides the k-means trees, and on small test sets P@1 moves by +-0.005 between seeds
for both libraries (more than the 0.003 that separates "equal" from "worse"), so this compares
the means over seeds. Each library runs in its own process (PECOS with the python of
``benches/.venv-peers``) on the suite's cached copy of the data (rows L2-normalised), with
the settings of the suite's ``xmrrs-pecos-matched`` and ``pecos-xrlinear`` rows and
``random_state`` / ``seed`` = 0..N-1; both write their top-10 ids and this process scores
them with ``xmrrs.metrics``. Timings are not the point here (see ``suite.py``).

Writes a Markdown table to ``--out`` (default ``benches/results/seeds.md``) and JSON lines
next to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
sys.path.insert(0, str(HERE))


def _load(root: Path, name: str) -> Any:
    import scipy.sparse as sp

    return sp.csr_matrix(sp.load_npz(root / f"{name}.npz"), dtype=np.float32)


def _ids_of_csr(p: Any, k: int) -> np.ndarray:
    ids = np.full((p.shape[0], k), -1, np.int64)
    for i in range(p.shape[0]):
        a, b = p.indptr[i], p.indptr[i + 1]
        order = np.argsort(-p.data[a:b], kind="stable")[:k]
        ids[i, : order.size] = p.indices[a:b][order]
    return ids


def worker_xmrrs(root: Path, seeds: int, n_jobs: int) -> np.ndarray:
    import xmrrs
    from runners import XMRRS_PECOS_MATCHED
    from runners.xmrrs import estimator_kwargs

    X, Y, Xte = _load(root, "X_train"), _load(root, "Y_train"), _load(root, "X_test")
    _, kw = estimator_kwargs(XMRRS_PECOS_MATCHED, Y.shape[1])
    out = []
    for seed in range(seeds):
        est = xmrrs.XRLinearClassifier(n_jobs=n_jobs, random_state=seed, **kw).fit(X, Y)
        out.append(est.predict_topk(Xte, 10)[0])
    return np.stack(out)


def worker_pecos(root: Path, seeds: int, n_jobs: int) -> np.ndarray:
    import scipy.sparse as sp

    from runners import PECOS_PARAMS
    from runners.pecos import fit

    X, Y, Xte = _load(root, "X_train"), _load(root, "Y_train"), _load(root, "X_test")
    out = []
    for seed in range(seeds):
        model, _ = fit(X, Y, {**PECOS_PARAMS, "seed": seed}, n_jobs)
        pred = model.predict(Xte, beam_size=PECOS_PARAMS["beam_size"], only_topk=10, threads=n_jobs)
        out.append(_ids_of_csr(sp.csr_matrix(pred), 10))
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", action="append", default=[], help="data folder (repeat)")
    ap.add_argument("--synthetic", action="append", default=[], help="make_xmc spec (repeat)")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "seeds.md"))
    ap.add_argument("--cache-dir", default=None, help="the suite's data cache")
    ap.add_argument("--worker", choices=("xmrrs", "pecos"), help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        fn = worker_xmrrs if a.worker == "xmrrs" else worker_pecos
        np.save(a.ids, fn(Path(a.root), a.seeds, a.n_jobs))
        return

    import scipy.sparse as sp

    import suite
    from _machine import machine, write_results
    from xmrrs.metrics import precision_at_k

    cache = Path(a.cache_dir) if a.cache_dir else suite.DEFAULT_CACHE
    specs = list(a.data) + [f"synthetic:{s}" for s in a.synthetic]
    libs = ["xmrrs", "pecos"] if PEERS_PYTHON.exists() else ["xmrrs"]
    if "pecos" not in libs:
        print(f"note: {PEERS_PYTHON} is missing (run benches/setup_peers.sh); PECOS skipped")
    rows: list[dict[str, Any]] = []
    for spec in specs:
        ds = suite.prepare_data(spec, cache, a.n_jobs)
        Yte = sp.load_npz(ds.root / "Y_test.npz").tocsr()
        res = {}
        for lib in libs:
            python = PEERS_PYTHON if lib == "pecos" else Path(sys.executable)
            with tempfile.TemporaryDirectory() as d:
                ids_path = Path(d) / "ids.npy"
                cmd = [str(python), __file__, "--worker", lib, "--root", str(ds.root)]
                cmd += ["--ids", str(ids_path), "--seeds", str(a.seeds)]
                subprocess.run([*cmd, "--n-jobs", str(a.n_jobs)], check=True)
                all_ids = np.load(ids_path)
            per_seed = np.array(
                [[precision_at_k(Yte, ids, k=k) for k in (1, 3, 5)] for ids in all_ids]
            )
            res[lib] = per_seed
            rows.append(
                {
                    "data": ds.name,
                    "library": "xmrrs-pecos-matched" if lib == "xmrrs" else "pecos-xrlinear",
                    "seeds": a.seeds,
                    "per_seed": per_seed.round(6).tolist(),
                    "mean": per_seed.mean(axis=0).tolist(),
                    "min": per_seed.min(axis=0).tolist(),
                    "max": per_seed.max(axis=0).tolist(),
                }
            )
            m = per_seed.mean(axis=0)
            print(f"  {ds.name} {lib}: P@1/3/5 mean {m.round(4)}", flush=True)
        if len(res) == 2:
            rows[-2]["diff_vs_pecos"] = (res["xmrrs"].mean(0) - res["pecos"].mean(0)).tolist()

    info = machine()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def cell(r: dict[str, Any], i: int) -> str:
        return f"{r['mean'][i]:.4f} ({r['min'][i]:.4f}-{r['max'][i]:.4f})"

    lines = [
        f"Accuracy over seeds 0-{a.seeds - 1}, {stamp}; machine: {info['cores']} cores, "
        f"{info['cpu']}. xmrrs-pecos-matched: PECOS's settings and tree shape "
        "(pecos_fanouts); pecos-xrlinear: the suite's PECOS row; only the seed changes. "
        "Cells: mean over seeds (min-max); diff: xmrrs mean - PECOS mean.",
        "",
        "| data set | library | P@1 | P@3 | P@5 | diff P@1 | diff P@3 | diff P@5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r.get("diff_vs_pecos")
        diffs = [f"{v:+.4f}" for v in d] if d else ["-"] * 3
        lines.append(
            f"| {r['data']} | {r['library']} | {cell(r, 0)} | {cell(r, 1)} | {cell(r, 2)} | "
            + " | ".join(diffs)
            + " |"
        )
    write_results(a.out, lines, [{"date": stamp, **info, **r} for r in rows])


if __name__ == "__main__":
    main()
