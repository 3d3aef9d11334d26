"""Accuracy over seeds: xmrrs at PECOS's settings against PECOS XR-Linear (and LibMultiLabel's
tree and one-vs-rest), seeds 0..N-1.

    .venv/bin/python benches/bench_seeds.py --data ../shared/data/rcv1-subset1 \\
        --data ../shared/data/stackex-cs --synthetic 10000 --seeds 8

One seed decides the k-means trees, and on small test sets P@1 moves by +-0.005 between seeds
for both libraries (more than the 0.003 that separates "equal" from "worse"), so this compares
the means over seeds. Each library runs in its own process (PECOS with the python of
``benches/.venv-peers``) on the suite's cached copy of the data (rows L2-normalised), with
the settings of the suite's ``xmrrs-pecos-matched`` and ``pecos-xrlinear`` rows and
``random_state`` / ``seed`` = 0..N-1; both write their top-10 ids and this process scores
them with ``xmrrs.metrics``. Timings are not the point here (see ``suite.py``).

The peers (``--peers``, default all three) run with the settings of the suite's rows of the same
name: ``pecos-xrlinear`` with ``seed`` = 0..N-1, ``libmultilabel-tree`` and
``libmultilabel-1vsrest`` with numpy's global RNG seeded 0..N-1 before each training (the tree's
k-means draws its seeds from it; the one-vs-rest model has no random step of its own beyond
LIBLINEAR's, which Python cannot seed). LibMultiLabel's rows are left out with a note when the
peers' python lacks ``libmultilabel``, and ``libmultilabel-1vsrest`` when its dense weights
would exceed the suite's bound. Only the xmrrs row gets the diff columns (xmrrs - PECOS).

Writes a Markdown table to ``--out`` (default ``benches/results/seeds.md``) and JSON lines
next to it.

``--defaults`` compares the library defaults instead: ``XRLinearClassifier()`` with
``random_state`` = 0..N-1 against every run of the peers on the same split recorded in
``benches/results/suite.jsonl`` (omikuji is not seeded, so its spread comes from repeated
suite runs; PECOS is seeded 0 there). Default ``--out``: ``benches/results/seeds_defaults.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
sys.path.insert(0, str(HERE))

#: the peers this script can run over seeds (worker name = the suite's row name)
SEEDED_PEERS = ("pecos-xrlinear", "libmultilabel-tree", "libmultilabel-1vsrest")


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


def worker_xmrrs(root: Path, seeds: int, n_jobs: int, params: dict[str, Any] | None) -> np.ndarray:
    """Top-10 ids of ``XRLinearClassifier(**params)`` over seeds (``None``: PECOS's settings
    and tree shape)."""
    import xmrrs
    from runners import XMRRS_PECOS_MATCHED
    from runners.xmrrs import estimator_kwargs

    X, Y, Xte = _load(root, "X_train"), _load(root, "Y_train"), _load(root, "X_test")
    kw = estimator_kwargs(XMRRS_PECOS_MATCHED if params is None else params, Y.shape[1])[1]
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


def worker_libmultilabel(root: Path, seeds: int, row: str) -> np.ndarray:
    """Top-10 ids of LibMultiLabel's suite row ``row`` trained with numpy's global RNG seeded
    0..N-1 (inside :func:`runners.libmultilabel.fit`)."""
    from runners import PEERS as SUITE_PEERS
    from runners.libmultilabel import as_inputs, fit, topk_ids

    params = next(lib.params for lib in SUITE_PEERS if lib.name == row)
    X, Y = as_inputs(_load(root, "X_train"), _load(root, "Y_train"))
    Xte = as_inputs(_load(root, "X_test"))[0]
    beam = params["beam_width"] if params["method"] == "tree" else None
    out = []
    for seed in range(seeds):
        model = fit(X, Y, {**params, "seed": seed})
        out.append(topk_ids(model, Xte, 10, beam))
        del model
    return np.stack(out)


def lml_skip_reason(row: str, meta: dict[str, Any]) -> str | None:
    """Why LibMultiLabel's ``row`` is left out on this data set, or ``None``."""
    from runners import PEERS as SUITE_PEERS
    from runners.libmultilabel import ovr_skip_reason

    probe = subprocess.run(
        [str(PEERS_PYTHON), "-c", "import libmultilabel.linear"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return f"libmultilabel is not importable by {PEERS_PYTHON} (run benches/setup_peers.sh)"
    params = next(lib.params for lib in SUITE_PEERS if lib.name == row)
    return ovr_skip_reason(params, meta["n_features"], meta["n_labels"])


PEERS = (
    "pecos-xrlinear",
    "omikuji-parabel",
    "omikuji-bonsai",
    "napkinxc-plt",
    "libmultilabel-tree",
    "libmultilabel-1vsrest",
)


SPLIT_KEYS = ("name", "n_train", "n_test", "n_features", "n_labels", "nnz_X_train", "nnz_Y_train")


def peer_history(meta: dict[str, Any], results: Path) -> dict[str, np.ndarray]:
    """P@1/3/5 of every recorded suite run of each peer on this split in
    ``results/suite.jsonl`` (same name and sizes; the cache digest also covers the files'
    mtimes, which change when the data is copied)."""
    runs: dict[str, list[list[float]]] = {}
    path = results / "suite.jsonl"
    want = [meta.get(k) for k in SPLIT_KEYS]
    for line in path.read_text().splitlines() if path.exists() else []:
        r = json.loads(line)
        if r.get("status") != "ok" or r.get("library") not in PEERS:
            continue
        if [r.get("data_meta", {}).get(k) for k in SPLIT_KEYS] != want:
            continue
        m = r["metrics"]
        runs.setdefault(r["library"], []).append([m["P@1"], m["P@3"], m["P@5"]])
    return {lib: np.array(v) for lib, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", action="append", default=[], help="data folder (repeat)")
    ap.add_argument("--synthetic", action="append", default=[], help="make_xmc spec (repeat)")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--defaults", action="store_true", help="the library defaults vs the peers")
    ap.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="an XRLinearClassifier configuration compared as --defaults is (repeat), e.g. "
        "'single={\"n_estimators\": 1}'",
    )
    ap.add_argument(
        "--validation",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="the suite's validation split of each training set (suite.py --validation); peers "
        "from benches/results/validation/suite.jsonl, default --out under results/validation/",
    )
    ap.add_argument(
        "--peers",
        default=",".join(SEEDED_PEERS),
        help="comma-separated peers run over seeds (default: %(default)s; not with --defaults)",
    )
    ap.add_argument("--out", default=None, help="Markdown table (see above)")
    ap.add_argument("--cache-dir", default=None, help="the suite's data cache")
    ap.add_argument("--worker", choices=("xmrrs", *SEEDED_PEERS), help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        if a.worker == "xmrrs":
            params = None if a.params is None else json.loads(a.params)
            ids = worker_xmrrs(Path(a.root), a.seeds, a.n_jobs, params)
        elif a.worker == "pecos-xrlinear":
            ids = worker_pecos(Path(a.root), a.seeds, a.n_jobs)
        else:
            ids = worker_libmultilabel(Path(a.root), a.seeds, a.worker)
        np.save(a.ids, ids)
        return
    import suite

    configs: list[tuple[str, dict[str, Any] | None]] = [
        (lib.name, lib.params) for lib in suite.parse_xmrrs_configs(a.config, "--config")
    ]
    if a.defaults:
        configs.insert(0, ("xmrrs-defaults", {}))
    versus_history = bool(configs)
    if not configs:
        configs = [("xmrrs-pecos-matched", None)]
    results_dir = HERE / "results" / ("validation" if a.validation else "")
    default_out = "seeds_defaults.md" if versus_history else "seeds.md"
    out = a.out or str(results_dir / default_out)

    import scipy.sparse as sp

    from _machine import machine, write_results
    from xmrrs.metrics import precision_at_k

    cache = Path(a.cache_dir) if a.cache_dir else suite.DEFAULT_CACHE
    specs = list(a.data) + [f"synthetic:{s}" for s in a.synthetic]
    peers = [] if versus_history else [p.strip() for p in a.peers.split(",") if p.strip()]
    for p in peers:
        if p not in SEEDED_PEERS:
            raise SystemExit(f"--peers: unknown peer {p!r}; choose from {', '.join(SEEDED_PEERS)}")
    if peers and not PEERS_PYTHON.exists():
        print(f"note: {PEERS_PYTHON} is missing (run benches/setup_peers.sh); peers skipped")
        peers = []
    rows: list[dict[str, Any]] = []
    for spec in specs:
        ds = suite.prepare_data(spec, cache, a.n_jobs, a.validation)
        Yte = sp.load_npz(ds.root / "Y_test.npz").tocsr()
        res: dict[str, np.ndarray] = {}
        libs: list[tuple[str, str, dict[str, Any] | None]] = [
            (name, "xmrrs", params) for name, params in configs
        ]
        for p in peers:
            why = lml_skip_reason(p, ds.meta) if p.startswith("libmultilabel") else None
            if why:
                print(f"  {ds.name} {p}: skipped ({why})", flush=True)
            else:
                libs.append((p, p, None))
        for name, worker, params in libs:
            python = Path(sys.executable) if worker == "xmrrs" else PEERS_PYTHON
            with tempfile.TemporaryDirectory() as d:
                ids_path = Path(d) / "ids.npy"
                cmd = [str(python), __file__, "--worker", worker, "--root", str(ds.root)]
                cmd += ["--ids", str(ids_path), "--seeds", str(a.seeds)]
                cmd += [] if params is None else ["--params", json.dumps(params)]
                subprocess.run([*cmd, "--n-jobs", str(a.n_jobs)], check=True)
                all_ids = np.load(ids_path)
            per_seed = np.array(
                [[precision_at_k(Yte, ids, k=k) for k in (1, 3, 5)] for ids in all_ids]
            )
            res[name] = per_seed
            rows.append(
                {
                    "data": ds.name,
                    "library": name,
                    "params": params,
                    "seeds": a.seeds,
                    "per_seed": per_seed.round(6).tolist(),
                    "mean": per_seed.mean(axis=0).tolist(),
                    "min": per_seed.min(axis=0).tolist(),
                    "max": per_seed.max(axis=0).tolist(),
                }
            )
            m = per_seed.mean(axis=0)
            print(f"  {ds.name} {name}: P@1/3/5 mean {m.round(4)}", flush=True)
        if "pecos-xrlinear" in res:
            ours = next(r for r in rows if r["data"] == ds.name and r["library"] == configs[0][0])
            diff = res[configs[0][0]].mean(0) - res["pecos-xrlinear"].mean(0)
            ours["diff_vs_pecos"] = diff.tolist()
        if versus_history:
            first = res[configs[0][0]].mean(0)
            for lib, per_run in peer_history(ds.meta, results_dir).items():
                rows.append(
                    {
                        "data": ds.name,
                        "library": lib,
                        "seeds": len(per_run),
                        "per_seed": per_run.round(6).tolist(),
                        "mean": per_run.mean(axis=0).tolist(),
                        "min": per_run.min(axis=0).tolist(),
                        "max": per_run.max(axis=0).tolist(),
                        "diff_vs_ours": (first - per_run.mean(0)).tolist(),
                    }
                )

    info = machine()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def cell(r: dict[str, Any], i: int) -> str:
        return f"{r['mean'][i]:.4f} ({r['min'][i]:.4f}-{r['max'][i]:.4f})"

    if versus_history:
        split = "validation splits" if a.validation else "test splits"
        head = (
            f"Accuracy over seeds 0-{a.seeds - 1} on the {split}, {stamp}; machine: "
            f"{info['cores']} cores, {info['cpu']}. "
            + "; ".join(f"{n}: XRLinearClassifier(**{json.dumps(p)})" for n, p in configs)
            + ", random_state 0..N-1; peers: every suite run on the same split in "
            f"{results_dir.relative_to(HERE.parent)}/suite.jsonl (runs: the number of them). "
            f"Cells: mean (min-max); diff: {configs[0][0]} mean - the peer's mean."
        )
    else:
        head = (
            f"Accuracy over seeds 0-{a.seeds - 1}, {stamp}; machine: {info['cores']} cores, "
            f"{info['cpu']}. xmrrs-pecos-matched: PECOS's settings and tree shape "
            "(pecos_fanouts); pecos-xrlinear, libmultilabel-tree, libmultilabel-1vsrest: the "
            "suite's rows (LibMultiLabel seeded through numpy's global RNG); only the seed "
            "changes. Cells: mean over seeds (min-max); diff: xmrrs mean - PECOS mean."
        )
    lines = [
        head,
        "",
        "| data set | library | runs | P@1 | P@3 | P@5 | diff P@1 | diff P@3 | diff P@5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = r.get("diff_vs_pecos") or r.get("diff_vs_ours")
        diffs = [f"{v:+.4f}" for v in diff] if diff else ["-"] * 3
        lines.append(
            f"| {r['data']} | {r['library']} | {r['seeds']} | {cell(r, 0)} | {cell(r, 1)} | "
            f"{cell(r, 2)} | " + " | ".join(diffs) + " |"
        )
    write_results(out, lines, [{"date": stamp, **info, **r} for r in rows])


if __name__ == "__main__":
    main()
