"""One process against a 2-worker Dask LocalCluster on ``make_xmc`` data (issue 20).

    .venv/bin/python benches/bench_distributed.py --n-samples 60000 --n-features 60000 \\
        --n-labels 15000 --blocks 4

1. Generates the data, keeps 20% for testing and writes the training rows as ``--blocks``
   ``.npz`` shard pairs (the layout of shared storage on a real cluster).
2. *One process* (a subprocess): stacks the shards, fits ``XRLinearClassifier`` with
   ``n_jobs=2``, predicts the test rows, saves the model. Peak RSS (``VmHWM``) of that
   process, and its RSS once the data are loaded.
3. *Dask* (a subprocess driving ``LocalCluster(n_workers=2, threads_per_worker=1,
   processes=True, memory_limit=...)``): :func:`xmrrs.distributed.fit` on the shard paths,
   :func:`xmrrs.distributed.predict_topk` over test blocks. Peak RSS of the client process
   (which also hosts the scheduler): over the fit and per stage of it (``VmHWM`` reset
   around each stage function, so peaks in code that holds the GIL count), and over the
   whole run, which includes this script's check (it loads the one-process model and
   compares the two models' bytes); and of each worker; whether a worker was restarted
   (its process changed); whether the model is byte-identical to the one-process model;
   P@1/3/5 of both.

``--memory-limit-mib`` defaults to 90% of the one-process training peak, so the Dask run
shows that workers whose limit is below what one process needed train the same model
(a worker over 95% of its limit would be killed by its nanny and show up as restarted), but
to at least ``MIN_LIMIT_MIB``: an idle worker (Python, numpy, scipy, dask, xmrrs) takes about
130 MiB, so on small data 90% would kill the workers before they load a block; the output
then says the limit was raised (``memory_limit_raised``) and proves nothing about memory.

The *cost model* spreads the measured task times over N machines: the serial client stages
(blocks; the PIFA stage less the span of its chain steps on the 2 workers; the tree stage
less the span of its k-means tasks), plus the PIFA chain steps' time divided by N (the
default has twice as many label ranges as workers), plus the longest-processing-time
schedule of the k-means tasks, plus that of the training jobs: the top-layer task and every
level-1 sub-tree (a part's measured time split over its sub-trees in proportion to their
cost estimate); transfers are not modelled. Task times come from ``timings_`` and, for the
PIFA steps, from Dask's task stream.

Writes JSON to ``--out`` (default ``benches/results/distributed.json``) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MIN_LIMIT_MIB = 512
sys.path.insert(0, str(HERE))
from _machine import peak_rss_mb, rss_mb  # noqa: E402


def _reset_peak() -> None:
    """Resets this process's ``VmHWM`` to its current RSS (Linux >= 4.0; else a no-op)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_mib() -> float:
    """Peak RSS of this process (``VmHWM``, see ``_machine.peak_rss_mb``: not ``ru_maxrss``,
    which a child started by the data-generating parent inherits). A function of this
    module so that ``client.run`` ships it to the workers by value."""
    return peak_rss_mb()


def _params(a: dict[str, Any]) -> dict[str, Any]:
    return {
        "n_estimators": a["n_estimators"],
        "top_max_samples": a.get("top_max_samples"),
        "random_state": 0,
    }


def _report(Yt: Any, ids: Any) -> dict[str, float]:
    from xmrrs.metrics import precision_at_k

    return {f"P@{k}": round(float(precision_at_k(Yt, ids, k=k)), 4) for k in (1, 3, 5)}


def one_process(a: dict[str, Any]) -> dict[str, Any]:
    import scipy.sparse as sp

    from xmrrs import XRLinearClassifier
    from xmrrs.datasets import load_npz

    d = Path(a["dir"])
    parts = [load_npz(d / f"x{i}.npz", d / f"y{i}.npz") for i in range(a["blocks"])]
    X = sp.vstack([p[0] for p in parts], format="csr")
    Y = sp.vstack([p[1] for p in parts], format="csr")
    del parts
    Xt, Yt = load_npz(d / "xt.npz", d / "yt.npz")
    loaded = rss_mb()
    t0 = time.perf_counter()
    clf = XRLinearClassifier(n_jobs=2, **_params(a)).fit(X, Y)
    train = time.perf_counter() - t0
    peak_train = _peak_mib()
    t0 = time.perf_counter()
    ids, _ = clf.predict_topk(Xt, k=5)
    predict = time.perf_counter() - t0
    clf.save(d / "model-one")
    return {
        "train_s": round(train, 2),
        "predict_s": round(predict, 2),
        "rss_loaded_mib": round(loaded),
        "peak_train_mib": round(peak_train),
        "peak_mib": round(_peak_mib()),
        **_report(Yt, ids),
    }


def on_dask(a: dict[str, Any]) -> dict[str, Any]:
    import distributed

    import xmrrs.distributed as dxm
    from xmrrs import XRLinearClassifier
    from xmrrs.datasets import load_npz

    d = Path(a["dir"])
    limit = f"{int(a['memory_limit_mib'])}MiB"
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        memory_limit=limit,
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    pids0 = client.run(os.getpid)
    shards = [(str(d / f"x{i}.npz"), str(d / f"y{i}.npz")) for i in range(a["blocks"])]
    import xmrrs.distributed._fit as stages

    # the client's peak per stage: VmHWM reset before each stage function and read after it
    # (a sampling thread would miss peaks in code that holds the GIL)
    by_stage: dict[str, float] = {}
    wrapped = {
        "_prepare": "blocks",
        "_pifa_of": "representation",
        "_build_tree": "trees",
        "_train_tree": "models",
    }
    originals = {name: getattr(stages, name) for name in wrapped}

    def probe(name: str) -> Any:
        fn = originals[name]

        def run(*args: Any, **kw: Any) -> Any:
            _reset_peak()
            try:
                return fn(*args, **kw)
            finally:
                stage = wrapped[name]
                by_stage[stage] = max(by_stage.get(stage, 0.0), round(_peak_mib()))
                _reset_peak()

        return run

    for name in wrapped:
        setattr(stages, name, probe(name))
    t0 = time.perf_counter()
    try:
        with distributed.get_task_stream(client=client) as stream:
            clf = dxm.fit(
                XRLinearClassifier(**_params(a)), shards, client=client, n_parts=a.get("n_parts")
            )
    finally:
        for name, fn in originals.items():
            setattr(stages, name, fn)
    train = time.perf_counter() - t0
    worker_peak_train = client.run(_peak_mib)
    clf.save(d / "model-dask")
    _, Yt = load_npz(d / "xt.npz", d / "yt.npz")
    test_blocks = [(str(d / f"xt{i}.npz"), str(d / f"yt{i}.npz")) for i in range(2)]
    t0 = time.perf_counter()
    ids, _ = dxm.predict_topk(d / "model-dask", test_blocks, k=5, client=client)
    predict = time.perf_counter() - t0
    pids1 = client.run(os.getpid)
    one = XRLinearClassifier.load(d / "model-one")
    same = all(
        m1.to_bytes() == m2.to_bytes() for m1, m2 in zip(one.models_, clf.models_, strict=True)
    )
    out = {
        "memory_limit_mib": int(a["memory_limit_mib"]),
        "train_s": round(train, 2),
        "predict_s": round(predict, 2),
        "stages_s": {
            k: round(v, 2)
            for k, v in clf.timings_.items()
            if isinstance(v, float) and k != "top_share"
        },
        # the share of the rows the top layer trained on (below 1: the rows did not fit the
        # top task's budget, half the workers' memory_limit, so the bytes differ by design)
        "top_share": round(clf.timings_["top_share"], 4),
        # the fit's stages, and the whole run (VmHWM since the last stage's reset: prediction,
        # and this script's own check, which loads the one-process model and compares bytes)
        "client_peak_fit_mib": round(max(by_stage.values())),
        "client_peak_mib": round(max([_peak_mib(), *by_stage.values()])),
        "client_peak_by_stage_mib": by_stage,
        "worker_peak_train_mib": sorted(round(v) for v in worker_peak_train.values()),
        "worker_peak_mib": sorted(round(v) for v in client.run(_peak_mib).values()),
        "workers_restarted": sorted(pids0.values()) != sorted(pids1.values()),
        "same_model_bytes": same,
        "cost_model": cost_model(clf.timings_, _pifa_steps(stream.data)),
        **_report(Yt, ids),
    }
    client.close()
    cluster.close()
    return out


def _lpt(jobs: list[float], n: int) -> float:
    load = [0.0] * n
    for j in sorted(jobs, reverse=True):
        i = load.index(min(load))
        load[i] += j
    return max(load)


def _pifa_steps(stream: list[dict[str, Any]]) -> list[float]:
    """Compute seconds of each PIFA chain step in the task stream."""
    out = []
    for rec in stream:
        if str(rec.get("key", "")).startswith("xmrrs-pifa-labels"):
            out.extend(
                s["stop"] - s["start"]
                for s in rec.get("startstops", [])
                if s.get("action") == "compute"
            )
    return out


def cost_model(t: dict[str, Any], pifa: list[float] | None = None) -> dict[str, Any]:
    """Elapsed time over N machines from the measured task times (see the module docs)."""
    kmeans = [secs for _, secs in t.get("kmeans", [])]
    # the client's own share of the tree stage: its wall time less the k-means tasks' span
    # on the 2 workers that ran them
    client_trees = max(0.0, t["trees"] - _lpt(kmeans, 2)) if kmeans else t["trees"]
    # the PIFA stage: its chain steps (twice as many label ranges as machines, so their work
    # divides over N) and the client's share (the stage less the steps' span on 2 workers)
    pifa = pifa or []
    client_rep = max(0.0, t["representation"] - sum(pifa) / 2) if pifa else t["representation"]
    serial = t["blocks"] + client_rep + client_trees
    jobs: list[float] = []
    parts: dict[tuple[int, int], float] = {}
    for name, secs in t["tasks"]:
        tree = int(name[1 : name.index("-")])
        if name.endswith("-top"):  # the top-layer task
            jobs.append(secs)
        else:
            parts[(tree, int(name.split("-part")[1].split("-")[0]))] = secs
    for tree, st in enumerate(t.get("subtrees", [])):
        cost, part = np.asarray(st["cost"]), np.asarray(st["part"])
        for j in np.unique(part):
            share = cost[part == j] / max(cost[part == j].sum(), 1e-12)
            jobs.extend((parts[(tree, int(j))] * share).tolist())
    total = sum(pifa) + sum(kmeans) + sum(jobs)
    rows = {}
    for n in (1, 2, 4, 8, 16, 32):
        span = sum(pifa) / n + _lpt(kmeans, n) + _lpt(jobs, n)
        rows[str(n)] = {
            "elapsed_s": round(serial + span, 2),
            "speedup": round((serial + total) / (serial + span), 2),
        }
    return {
        "serial_client_s": round(serial, 2),
        "pifa_step_s_total": round(sum(pifa), 2),
        "kmeans_task_s_total": round(sum(kmeans), 2),
        "task_s_total": round(sum(jobs), 2),
        "largest_task_s": round(max(jobs), 2),
        "n_tasks": len(jobs) + len(kmeans),
        "machines": rows,
    }


def _child(mode: str, a: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--_child", mode, "--_args", json.dumps(a)],
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-5000:])
        raise SystemExit(f"the {mode} run failed")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n-samples", type=int, default=60000)
    ap.add_argument("--n-features", type=int, default=60000)
    ap.add_argument("--n-labels", type=int, default=15000)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--n-estimators", type=int, default=1)
    ap.add_argument("--memory-limit-mib", type=float, default=None)
    ap.add_argument(
        "--top-max-samples",
        type=lambda v: int(v) if v.isdigit() else float(v),
        default=None,
        help="the estimator's top_max_samples (both runs): the top layer on a sample",
    )
    ap.add_argument("--n-parts", type=int, default=None, help="n_parts of distributed.fit")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "distributed.json")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_args", default=None, help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns._child:
        a = json.loads(ns._args)
        res = one_process(a) if ns._child == "one" else on_dask(a)
        print(json.dumps(res))
        return

    from xmrrs.datasets import make_xmc, save_npz

    with tempfile.TemporaryDirectory(prefix="xmrrs-bench-dist-") as tmp:
        t0 = time.perf_counter()
        X, Y = make_xmc(ns.n_samples, ns.n_features, ns.n_labels, random_state=0)
        n_train = int(0.8 * X.shape[0])
        edges = np.linspace(0, n_train, ns.blocks + 1).astype(int)
        for i in range(ns.blocks):
            save_npz(
                f"{tmp}/x{i}.npz",
                f"{tmp}/y{i}.npz",
                X[edges[i] : edges[i + 1]],
                Y[edges[i] : edges[i + 1]],
            )
        save_npz(f"{tmp}/xt.npz", f"{tmp}/yt.npz", X[n_train:], Y[n_train:])
        mid = n_train + (X.shape[0] - n_train) // 2
        for i, (a_, b_) in enumerate(((n_train, mid), (mid, X.shape[0]))):
            save_npz(f"{tmp}/xt{i}.npz", f"{tmp}/yt{i}.npz", X[a_:b_], Y[a_:b_])
        data = {
            "n_samples": ns.n_samples,
            "n_features": ns.n_features,
            "n_labels": ns.n_labels,
            "n_train": n_train,
            "nnz_train": int(X[:n_train].nnz),
            "blocks": ns.blocks,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        del X, Y
        a = {
            "dir": tmp,
            "blocks": ns.blocks,
            "n_estimators": ns.n_estimators,
            "top_max_samples": ns.top_max_samples,
            "n_parts": ns.n_parts,
        }
        one = _child("one", a)
        limit = ns.memory_limit_mib or 0.9 * one["peak_train_mib"]
        raised = limit < MIN_LIMIT_MIB
        dask = _child("dask", {**a, "memory_limit_mib": max(limit, MIN_LIMIT_MIB)})
        dask["memory_limit_raised"] = raised
    res = {
        "data": data,
        "n_estimators": ns.n_estimators,
        "top_max_samples": ns.top_max_samples,
        "n_parts": ns.n_parts,
        "one_process": one,
        "dask_2_workers": dask,
    }
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
