"""The worker side of the comparison benchmark: one stage of one library in this process.

``benches/suite.py --worker CFG.json`` lands here (:func:`worker_main`). ``CFG.json`` names
the stage (``probe``, ``train`` or ``predict``), the runner module, its parameters, the data
folder (made by the suite: ``X_train.npz``, ``Y_train.npz``, ``X_test.npz``, rows
L2-normalised, plus ``train.txt`` in XC format) and where to write the result JSON.

Only numpy and scipy are imported here (plus the runner's own library), so this works in
both virtual environments.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from _machine import peak_rss_mb, rss_mb


class Unavailable(RuntimeError):
    """The runner's library cannot be used here (not installed, or too old)."""


class DataFiles:
    """The cached data set of one benchmark: normalised CSR matrices as ``.npz``, and the
    training set as an XC text file for libraries that only read files.

    ``load_train`` records how long loading took and the RSS right after it, so the worker
    can report memory before and after the training call.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.load_s = float("nan")
        self.rss_after_load_mb = float("nan")

    @property
    def train_txt(self) -> Path:
        """The training set in the XC text format (rows already L2-normalised)."""
        return self.root / "train.txt"

    def load_train(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """``(X, Y)`` of the training set: float32 CSR, sorted indices."""
        t = time.perf_counter()
        X = sp.load_npz(self.root / "X_train.npz").tocsr()
        Y = sp.load_npz(self.root / "Y_train.npz").tocsr()
        self.load_s = time.perf_counter() - t
        self.rss_after_load_mb = rss_mb()
        return X, Y

    def load_test_x(self) -> sp.csr_matrix:
        """``X`` of the test set: float32 CSR, sorted indices."""
        return sp.load_npz(self.root / "X_test.npz").tocsr()


def dir_size_mb(path: str | Path) -> float:
    """Apparent size of every file under ``path`` (MB)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total / 2**20


def csr_topk_ids(scores: Any, k: int) -> np.ndarray:
    """Label ids of each row of a sparse score matrix, best first (score descending, equal
    scores by lower id), ``(n, k)`` int64 padded with ``-1``."""
    s = sp.csr_matrix(scores)
    n = s.shape[0]
    rows = np.repeat(np.arange(n), np.diff(s.indptr))
    order = np.lexsort((s.indices, -s.data.astype(np.float64), rows))
    rows, cols = rows[order], s.indices[order].astype(np.int64)
    rank = np.arange(rows.size) - s.indptr[rows]
    keep = rank < k
    out = np.full((n, k), -1, dtype=np.int64)
    out[rows[keep], rank[keep]] = cols[keep]
    return out


def pairs_topk_ids(rows: list[list[tuple[int, float]]], k: int) -> np.ndarray:
    """Label ids from per-row ``(label, score)`` lists, best first (score descending, equal
    scores by lower id), ``(n, k)`` int64 padded with ``-1``."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        ids = [int(label) for label, _ in sorted(r, key=lambda p: (-p[1], p[0]))[:k]]
        out[i, : len(ids)] = ids
    return out


#: a whole-test-set prediction faster than this is timed again, up to BATCH_REPEAT_MAX calls
BATCH_REPEAT_BELOW_S = 0.5
BATCH_REPEAT_MAX = 5


def _latencies(pred: Any, singles: list[Any], k: int, warmup: int) -> tuple[np.ndarray, Any]:
    """Seconds per single-row ``predict`` call, in order, after ``warmup`` untimed calls."""
    for q in singles[-warmup:] if warmup else []:
        pred.predict(q, k)
    out = []
    times = np.empty(len(singles))
    gc.collect()
    gc.disable()
    try:
        for j, q in enumerate(singles):
            t = time.perf_counter()
            r = pred.predict(q, k)
            times[j] = time.perf_counter() - t
            out.append(r)
    finally:
        gc.enable()
    return times, out


def _stats_ms(times: np.ndarray) -> dict[str, float]:
    ms = times * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def stage_probe(runner: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = runner.probe(cfg["params"])
    return {"available": True, **info}


def stage_train(runner: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    data = DataFiles(cfg["data"])
    model_dir = Path(cfg["model_dir"])
    model_dir.mkdir(parents=True, exist_ok=True)
    rss0 = rss_mb()
    runner.probe(cfg["params"])  # imports the library before the data is loaded
    rss_import = rss_mb()
    t, c = time.perf_counter(), time.process_time()
    info = runner.train(data, cfg["params"], model_dir, cfg["n_jobs"])
    process_s, cpu_s = time.perf_counter() - t, time.process_time() - c
    return {
        **info,
        "train_stage_s": process_s,
        "train_stage_cpu_s": cpu_s,
        "data_load_s": data.load_s,
        "rss_start_mb": rss0,
        "rss_import_mb": rss_import,
        "rss_data_mb": data.rss_after_load_mb,
        "train_peak_mb": peak_rss_mb(),
        "rss_end_mb": rss_mb(),
        "model_mb": dir_size_mb(model_dir),
    }


def stage_predict(runner: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    data = DataFiles(cfg["data"])
    k, n_jobs = int(cfg["k"]), int(cfg["n_jobs"])
    X = data.load_test_x()
    n = X.shape[0]
    runner.probe(cfg["params"])  # imports the library, so load_s times loading alone
    rss_data = rss_mb()
    t = time.perf_counter()
    pred = runner.load(Path(cfg["model_dir"]), cfg["params"], n_jobs)
    load_s = time.perf_counter() - t
    rss_model = rss_mb()

    batch = pred.prepare(X)
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    out = pred.predict(batch, k)
    batch_s, batch_cpu_s = time.perf_counter() - t, time.process_time() - c
    ids = pred.to_ids(out, n, k)
    del out
    # a call of a few ms is at the mercy of one scheduler tick: short calls are repeated
    # (every library alike) and the fastest counts, as timeit does
    batch_calls = 1
    while batch_s < BATCH_REPEAT_BELOW_S and batch_calls < BATCH_REPEAT_MAX:
        t, c = time.perf_counter(), time.process_time()
        pred.predict(batch, k)
        s, cpu = time.perf_counter() - t, time.process_time() - c
        batch_calls += 1
        if s < batch_s:
            batch_s, batch_cpu_s = s, cpu
        if batch_calls * batch_s > BATCH_REPEAT_BELOW_S:
            break
    del batch
    peak_batch = peak_rss_mb()

    n_single = min(int(cfg["n_single"]), n)
    singles = [pred.prepare_one(X, i) for i in range(n_single)]
    warmup = min(int(cfg["warmup"]), n_single)
    lat = {}
    agree = {}
    for threads in dict.fromkeys((n_jobs, 1)):
        pred.set_threads(threads)
        times, outs = _latencies(pred, singles, k, warmup)
        lat[threads] = _stats_ms(times)
        top = np.array([pred.to_ids(o, 1, k)[0, 0] for o in outs])
        agree[threads] = float(np.mean(top == ids[:n_single, 0])) if n_single else float("nan")
    np.save(Path(cfg["out"]).with_suffix(".ids.npy"), ids)
    return {
        "n_test": n,
        "load_s": load_s,
        "pred_s": batch_s,
        "pred_calls": batch_calls,
        "pred_cpu_s": batch_cpu_s,
        "rss_data_mb": rss_data,
        "rss_model_mb": rss_model,
        "pred_peak_batch_mb": peak_batch,
        "pred_peak_mb": peak_rss_mb(),
        "n_single": n_single,
        "warmup": warmup,
        "q_median_ms": lat[n_jobs]["median_ms"],
        "q_p99_ms": lat[n_jobs]["p99_ms"],
        "q_mean_ms": lat[n_jobs]["mean_ms"],
        "q1_median_ms": lat[1]["median_ms"],
        "q1_p99_ms": lat[1]["p99_ms"],
        "q1_mean_ms": lat[1]["mean_ms"],
        "single_top1_agrees": agree[n_jobs],
        "single_top1_agrees_1t": agree[1],
    }


STAGES = {"probe": stage_probe, "train": stage_train, "predict": stage_predict}


def worker_main(cfg_path: str) -> int:
    """Runs the stage described by ``cfg_path`` and writes its JSON result to ``cfg["out"]``.

    Returns the exit status: 0 on success or when the library is unavailable (the result
    says so), 1 when the stage failed (the result holds the traceback).
    """
    cfg = json.loads(Path(cfg_path).read_text())
    out = Path(cfg["out"])
    try:
        runner = importlib.import_module(f"runners.{cfg['runner']}")
        res = STAGES[cfg["stage"]](runner, cfg)
        status = 0
    except Unavailable as e:
        res, status = {"available": False, "reason": str(e)}, 0
    except Exception as e:
        res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        status = 1
    out.write_text(json.dumps(res) + "\n")
    return status
