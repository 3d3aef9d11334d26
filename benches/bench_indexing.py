"""Indexing benchmark: xmrrs's hierarchical k-means against PECOS's, on the same PIFA rows.

    .venv/bin/python benches/bench_indexing.py --data ../shared/data/debian/deps \\
        --synthetic 200000 [--synthetic 1000000] --n-jobs 2 --out benches/results/indexing.md

For every data set the PIFA label representation ``Z`` is computed once with xmrrs (rows of X
L2-normalised first) and saved as an uncompressed ``.npz``; each indexer then runs in its own
process on that file, so timings and peak memory are not mixed up:

- xmrrs: ``HierarchicalKMeans(branching=16, max_leaf_size=100, spherical=True, balanced=True,
  max_iter=20, n_jobs=N)``, with this python (``--max-iter`` changes 20 for both);
- PECOS: ``pecos.xmc.Indexer.gen(Z, indexer_type="hierarchicalkmeans", nr_splits=16,
  max_leaf_size=100, spherical=True, kmeans_max_iter=20, threads=N, seed=0)``, with the
  python of ``benches/.venv-peers`` (made by ``benches/setup_peers.sh``; skipped if missing).

A worker times the indexing call only (not loading ``Z``), reads its RSS before the call
and its peak RSS after (``VmHWM``; ``ru_maxrss`` is kept too, but Linux carries it over
fork/exec, so a worker would report its parent's peak), and writes the tree as per-level
parent assignments (the input of ``ClusterTree.from_assignments``; the last array is the
leaf of every label). This process then computes the same statistics for both trees with
one function: leaves, leaf sizes, depth (level of the leaves below the root) and the mean
cosine similarity of each label's row to its leaf centroid (the normalised sum of the
leaf's rows). With unit rows that mean is exactly ``sum over leaves |sum of rows| / L``.

Synthetic sets come from ``xmrrs.datasets.make_xmc(n_samples, n_features, n_labels,
random_state=0)``: 200k labels use 100k samples x 100k features, 1M labels 200k x 200k
(other label counts scale the same way, n_samples = n_features = max(n_labels / 5, 100k)).

Prints a Markdown table and writes it to ``--out`` (plus JSON lines next to it, appended).
The worker mode (``--worker``) imports only numpy and scipy, so it runs in either venv.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _machine import peak_rss_mb, rss_mb, ru_maxrss_mb  # noqa: E402

PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
INDEXERS = ("xmrrs", "pecos")


# --------------------------------------------------------------------------------------------
# worker: one indexer, in its own process
# --------------------------------------------------------------------------------------------


def run_xmrrs(z: sp.csr_matrix, cfg: dict[str, Any]) -> tuple[Any, list[np.ndarray]]:
    from xmrrs.indexing import HierarchicalKMeans

    est = HierarchicalKMeans(
        branching=cfg.get("fanouts") or 16,
        max_leaf_size=cfg["max_leaf_size"],
        spherical=True,
        balanced=True,
        max_iter=cfg["max_iter"],
        random_state=cfg.get("seed", 0),
        n_jobs=cfg["n_jobs"],
    )
    return lambda: est.fit(z), lambda: est.tree_.level_assignments()


def run_pecos(z: sp.csr_matrix, cfg: dict[str, int]) -> tuple[Any, list[np.ndarray]]:
    from pecos.xmc import Indexer

    out: list[Any] = []

    def call() -> None:
        out[:] = Indexer.gen(
            z,
            indexer_type="hierarchicalkmeans",
            nr_splits=16,
            max_leaf_size=cfg["max_leaf_size"],
            spherical=True,
            kmeans_max_iter=cfg["max_iter"],
            threads=cfg["n_jobs"],
            seed=cfg.get("seed", 0),
        )

    def levels() -> list[np.ndarray]:
        # chain[t] is a (nodes of level t+1) x (nodes of level t) CSC indicator; every row
        # has one entry, its parent. The last one maps labels to leaves.
        res = []
        for c in out:
            r = sp.csr_matrix(c)
            assert np.all(np.diff(r.indptr) == 1), "a node without exactly one parent"
            res.append(r.indices.astype(np.int64))
        return res

    return call, levels


def worker(which: str, z_path: str, out_dir: str, cfg: dict[str, int]) -> None:
    """Loads Z, runs one indexer ``cfg["repeat"]`` times (best time kept; memory is read
    after the first call) and writes ``<which>.json``, ``<which>_leaf.npy`` and
    ``<which>_levels.npz`` into ``out_dir``."""
    t = time.perf_counter()
    z = sp.load_npz(z_path).tocsr()
    load_s = time.perf_counter() - t
    before = rss_mb()
    call, levels_of = (run_pecos if which == "pecos" else run_xmrrs)(z, cfg)
    times, cpu = [], []
    for i in range(max(1, cfg["repeat"])):
        t, c = time.perf_counter(), time.process_time()
        call()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if i == 0:
            peak, ru_peak = peak_rss_mb(), ru_maxrss_mb()
    levels = levels_of()
    out = Path(out_dir)
    np.save(out / f"{which}_leaf.npy", levels[-1])
    np.savez(out / f"{which}_levels.npz", *levels)
    seed_times = [min(times)]
    for seed in range(1, cfg.get("seeds", 1)):  # untimed-for-best extra seeds: quality spread
        call, levels_of = (run_pecos if which == "pecos" else run_xmrrs)(z, {**cfg, "seed": seed})
        t = time.perf_counter()
        call()
        seed_times.append(time.perf_counter() - t)
        np.savez(out / f"{which}_levels_s{seed}.npz", *levels_of())
    info = {
        "time_s": min(times),
        "times_s": times,
        "cpu_s": cpu[times.index(min(times))],
        "load_s": load_s,
        "rss_before_mb": before,
        "peak_rss_mb": peak,
        "ru_maxrss_mb": ru_peak,
        "seed_times_s": seed_times,
    }
    (out / f"{which}.json").write_text(json.dumps(info) + "\n")


# --------------------------------------------------------------------------------------------
# parent: data, runs, statistics, table
# --------------------------------------------------------------------------------------------


def tree_stats(z: sp.csr_matrix, levels: list[np.ndarray]) -> dict[str, Any]:
    """Statistics of a tree given as per-level parent assignments (the same for all trees)."""
    from xmrrs.indexing import ClusterTree

    tree = ClusterTree.from_assignments(levels)  # validates the shape
    leaf = tree.leaf_of_label
    sizes = np.bincount(leaf, minlength=tree.n_leaves)
    zn = sp.csr_matrix(z, dtype=np.float64)
    norms = np.sqrt(np.asarray(zn.multiply(zn).sum(axis=1)).ravel())
    zn = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ zn
    member = sp.csr_matrix(
        (np.ones(leaf.size), (leaf, np.arange(leaf.size))), shape=(tree.n_leaves, leaf.size)
    )
    sums = sp.csr_matrix(member @ zn)  # one row per leaf: the sum of its unit rows
    # sum_i z_i . s/|s| over a leaf is |s|: the mean cosine is the mean of the leaf norms
    leaf_norms = np.sqrt(np.asarray(sums.multiply(sums).sum(axis=1)).ravel())
    return {
        "leaves": tree.n_leaves,
        "leaf_min": int(sizes.min()),
        "leaf_max": int(sizes.max()),
        "depth": tree.depth,
        "fanouts": tree.n_nodes_per_level,
        "mean_cos": float(leaf_norms.sum() / leaf.size),
    }


def load_set(spec: str, n_jobs: int) -> tuple[str, Any, Any, float]:
    """(name, X, Y, generation seconds or nan) for a folder or ``synthetic:<n_labels>``."""
    from xmrrs import datasets as xd

    if spec.startswith("synthetic:"):
        n_labels = int(spec.split(":", 1)[1])
        n = max(n_labels // 5, 100_000)
        t = time.perf_counter()
        X, Y = xd.make_xmc(n, n, n_labels, random_state=0)
        gen_s = time.perf_counter() - t
        return f"synthetic {n_labels // 1000}k ({n} x {n})", X, Y, gen_s
    X, Y = xd.load_xc(Path(spec) / "train.txt", n_jobs=n_jobs)
    return Path(spec).parent.name + "/" + Path(spec).name, X, Y, float("nan")


def run_worker(
    python: Path, which: str, z_path: Path, tmp: Path, cfg: dict[str, int]
) -> dict[str, Any]:
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", which]
    cmd += ["--z", str(z_path), "--tmp", str(tmp), "--cfg", json.dumps(cfg)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t
    info = json.loads((tmp / f"{which}.json").read_text())
    with np.load(tmp / f"{which}_levels.npz") as f:
        levels = [f[f"arr_{i}"] for i in range(len(f.files))]
    leaf = np.load(tmp / f"{which}_leaf.npy")
    assert np.array_equal(leaf, levels[-1])
    more = []
    for seed in range(1, cfg.get("seeds", 1)):
        with np.load(tmp / f"{which}_levels_s{seed}.npz") as f:
            more.append([f[f"arr_{i}"] for i in range(len(f.files))])
    return {**info, "process_s": wall, "levels": levels, "seed_levels": more}


def fmt(v: float, spec: str) -> str:
    return "-" if v != v else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", action="append", default=[], help="folder with train.txt (repeat)")
    p.add_argument(
        "--synthetic", action="append", type=int, default=[], metavar="N_LABELS", help="(repeat)"
    )
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--max-iter", type=int, default=20, help="k-means iterations, both indexers")
    p.add_argument("--indexers", default=",".join(INDEXERS), help="comma-separated subset")
    p.add_argument("--repeat", type=int, default=3, help="calls per worker, best time kept")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="also fit seeds 1..N-1 once each and report the spread of mean cos over seeds",
    )
    p.add_argument(
        "--no-match-leaves",
        action="store_true",
        help="skip the extra xmrrs run on PECOS's tree shape (xmrrs.indexing.pecos_fanouts)",
    )
    p.add_argument("--out", default=str(HERE / "results" / "indexing.md"))
    p.add_argument("--worker", choices=(*INDEXERS, "xmrrs-matched"), help=argparse.SUPPRESS)
    p.add_argument("--cfg", help=argparse.SUPPRESS)
    p.add_argument("--z", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.z, a.tmp, json.loads(a.cfg))
        return

    import xmrrs
    from _machine import machine, write_results
    from xmrrs import sparse as xs
    from xmrrs.indexing import label_representation, pecos_fanouts

    specs = list(a.data) + [f"synthetic:{n}" for n in a.synthetic]
    if not specs:
        specs = ["../shared/data/debian/deps"]
    indexers = [s for s in a.indexers.split(",") if s]
    if "pecos" in indexers and not PEERS_PYTHON.exists():
        print(f"note: {PEERS_PYTHON} is missing (run benches/setup_peers.sh); PECOS skipped")
        indexers.remove("pecos")
    info = machine()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for spec in specs:
        t0 = time.perf_counter()
        name, X, Y, gen_s = load_set(spec, a.n_jobs)
        load_s = time.perf_counter() - t0
        t = time.perf_counter()
        Xn = xs.normalize_rows(X, n_jobs=a.n_jobs)
        Z = label_representation(Xn, Y, "pifa", n_jobs=a.n_jobs)
        pifa_s = time.perf_counter() - t
        n_labels = Z.shape[0]
        note = (
            f"{name}: {X.shape[0]} x {X.shape[1]}, nnz(X) {X.nnz}, L {n_labels}, "
            f"nnz(Z) {Z.nnz}; "
            + (f"generated in {gen_s:.1f} s, " if gen_s == gen_s else f"loaded in {load_s:.1f} s, ")
            + f"PIFA {pifa_s:.1f} s, parent peak RSS {peak_rss_mb():.0f} MB"
        )
        notes.append(note)
        print(note, flush=True)
        del X, Y, Xn
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            z_path = tmp / "Z.npz"
            sp.save_npz(z_path, Z, compressed=False)
            res: dict[str, dict[str, Any]] = {}
            runs = [(which, 100) for which in indexers]
            while runs:
                which, leaf = runs.pop(0)
                python = PEERS_PYTHON if which == "pecos" else Path(sys.executable)
                cfg = {
                    "n_jobs": a.n_jobs,
                    "max_iter": a.max_iter,
                    "repeat": a.repeat,
                    "seeds": a.seeds,
                }
                fanouts = (
                    (pecos_fanouts(n_labels, 16, 100) or None) if which == "xmrrs-matched" else None
                )
                r = run_worker(
                    python, which, z_path, tmp, {**cfg, "max_leaf_size": leaf, "fanouts": fanouts}
                )
                r.update(
                    tree_stats(Z, r.pop("levels")), max_leaf_size=leaf, branching=fanouts or 16
                )
                coss = [r["mean_cos"]] + [
                    tree_stats(Z, lv)["mean_cos"] for lv in r.pop("seed_levels")
                ]
                r.update(
                    seed_cos=coss,
                    cos_mean=float(np.mean(coss)),
                    cos_min=min(coss),
                    cos_max=max(coss),
                    seed_time_mean_s=float(np.mean(r["seed_times_s"])),
                )
                if which == "pecos" and "xmrrs" in indexers and not a.no_match_leaves:
                    runs.append(("xmrrs-matched", leaf))  # xmrrs again on PECOS's tree shape
                res[which] = r
                print(
                    f"  {which:<13} {r['time_s']:8.2f} s  peak {r['peak_rss_mb']:7.0f} MB  "
                    f"delta {r['peak_rss_mb'] - r['rss_before_mb']:7.0f} MB  "
                    f"leaves {r['leaves']} [{r['leaf_min']}, {r['leaf_max']}] "
                    f"depth {r['depth']}  cos {r['mean_cos']:.4f}",
                    flush=True,
                )
        ref = res.get("pecos", {}).get("time_s", float("nan"))
        for which, r in res.items():
            rows.append(
                {
                    "data": name,
                    "L": n_labels,
                    "indexer": which
                    if which != "xmrrs-matched"
                    else "xmrrs, PECOS's shape ({})".format(",".join(map(str, r["branching"]))),
                    **r,
                    "rss_delta_mb": r["peak_rss_mb"] - r["rss_before_mb"],
                    "ratio": r["time_s"] / ref,
                }
            )

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = f"xmrrs {xmrrs.__version__}"
    if "pecos" in indexers:
        v = subprocess.run(
            [
                str(PEERS_PYTHON),
                "-c",
                "from importlib.metadata import version as v; print(v('libpecos'))",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        versions += f", libpecos {v}"
    lines = [
        f"Indexing benchmark, {stamp}, {versions}, n_jobs={a.n_jobs}. PIFA of row-normalised X "
        "(computed once by xmrrs), branching/nr_splits 16, max_leaf_size 100, spherical, "
        f"{a.max_iter} iterations, seed 0; each indexer in its own process, "
        f"best of {a.repeat} calls"
        + (
            f"; seeds 1-{a.seeds - 1} fitted once more each for the spread of mean cos."
            if a.seeds > 1
            else "."
        ),
        f"Machine: {info['cores']} cores, {info['cpu']}, load average {info['load1']}.",
        "",
        *(f"- {n}" for n in notes),
        "",
        "time s: wall time of the indexing call only (best run); CPU s: its CPU time, all "
        "threads (OpenMP spin-waits count). peak RSS: VmHWM of the worker process (Z loaded; "
        "ru_maxrss would include the parent's peak, inherited over fork/exec); "
        "RSS delta: peak minus RSS just before the call. mean cos: mean cosine of each label's "
        "row to its leaf centroid (same function for both trees). ratio: time / PECOS time. "
        "'xmrrs, PECOS's shape (a,b,c)': xmrrs again with branching=(a,b,c) from "
        "xmrrs.indexing.pecos_fanouts, the fan-outs of PECOS's tree, so both trees have the "
        "same shape and leaves (mean cos grows as leaves shrink: compare at equal leaves).",
        "",
        "| data set | L | indexer | time s | CPU s | peak RSS MB | RSS delta MB | leaves "
        "| leaf size "
        "| depth | mean cos to leaf centroid | time ratio xmrrs/PECOS |"
        + (f" mean cos, seeds 0-{a.seeds - 1}: mean (min-max) |" if a.seeds > 1 else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if a.seeds > 1 else ""),
        *(
            f"| {r['data']} | {r['L']} | {r['indexer']} | {r['time_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{r['peak_rss_mb']:.0f} | {r['rss_delta_mb']:.0f} | {r['leaves']} | "
            f"{r['leaf_min']}-{r['leaf_max']} | {r['depth']} | {r['mean_cos']:.4f} | "
            f"{fmt(r['ratio'], '.2f') if r['indexer'] != 'pecos' else '-'} |"
            + (
                f" {r['cos_mean']:.4f} ({r['cos_min']:.4f}-{r['cos_max']:.4f}) |"
                if a.seeds > 1
                else ""
            )
            for r in rows
        ),
    ]
    write_results(a.out, lines, [{"date": stamp, **info, "n_jobs": a.n_jobs, **r} for r in rows])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
