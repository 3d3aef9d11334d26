"""Comparison benchmark: xmrrs against PECOS XR-Linear, omikuji (Parabel and Bonsai settings),
napkinXC PLT and LibMultiLabel (tree and one-vs-rest), on the same data, measured the same way.

    .venv/bin/python benches/suite.py --data ../shared/data/bibtex --data ../shared/data/stackex-cs
    .venv/bin/python benches/suite.py --synthetic 10000 --synthetic 200000
    .venv/bin/python benches/suite.py --plot-only          # re-render tables and plots

Run it with xmrrs's python; the peers run with the python of ``benches/.venv-peers`` (made by
``benches/setup_peers.sh``; ``--peers-python`` points elsewhere), and so, by default, do
xmrrs's workers, which import the xmrrs package of the running python through a
``PYTHONPATH`` that holds it alone: every library then runs on the same numpy, scipy and
scikit-learn, whose import footprint alone differs by 10+ MB between versions (peak memory
includes it). ``--xmrrs-python own`` runs xmrrs with this python instead. A library that
cannot be imported is skipped, and the output says so; so is a row whose runner declines the
data set in its train stage (LibMultiLabel's one-vs-rest when its dense weights would exceed
its bound).

Data: a folder with ``train.txt`` and ``test.txt`` (XC format), or ``--synthetic L`` for
``xmrrs.datasets.make_xmc(n_train + n_test, n_features, L, random_state=0)`` split into the
first ``n_train`` and the last ``n_test`` rows (10k labels: 20000 / 5000 x 50000 features;
200k labels: 50000 / 5000 x 100000; ``--synthetic L:N_TRAIN:N_TEST:N_FEATURES`` sets them).
Each set is written once into ``--cache-dir`` with its rows L2-normalised, as ``.npz``
(float32 CSR) and, for omikuji, as an XC text file, so every library reads the same numbers.

Per library, each in its own processes, at ``--n-jobs`` threads (2):

- a *train* process: loads the data, trains (``train_s``: the training call only, from the
  matrices in memory to the model in memory; no file parsing, no saving), saves the model
  (``model_MB``: its size on disk) and reports its peak RSS (``train_MB``: ``VmHWM``, data
  included; ``ru_maxrss`` is not used, Linux carries it over fork/exec);
- a *predict* process: loads the test matrix and the saved model, predicts the top 10 of the
  whole test set in one call (``pred_s``; a call under 0.5 s is repeated, up to 5 calls, and
  the fastest counts), then ``--n-single`` (1000) test rows one at a time
  (after ``--warmup`` untimed calls, garbage collector off): median and p99 latency at
  ``--n-jobs`` threads and at 1 thread; ``pred_MB`` is its peak RSS.

The metrics (P@1/3/5, nDCG@5, PSP@5, R@10, and P@1..10 for the plots) are computed here, by
``xmrrs.metrics``, from each library's top-10 ids, for every library alike (a test row with
no label scores 0; PSP with propensities of the training labels, A=0.55, B=1.5).

Results: JSON lines appended to ``RESULTS/suite.jsonl``, and per data set a Markdown table
``RESULTS/suite_<set>.md`` (ratios against PECOS in the last columns) and two plots
``suite_<set>_tradeoff.png`` (P@1 against training time and single-query latency) and
``suite_<set>_pk.png`` (P@k, k = 1..10). The 1-minute load average is recorded before every
stage; above 0.5 per core a warning is printed and the table marks the row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _machine import (  # noqa: E402
    BUSY_LOAD_PER_CORE,
    check_load,
    cpu_model,
    load_average,
    peak_rss_mb,
)
from runners import ENV_OF_RUNNER, PEERS, XMRRS_CONFIGS, Library  # noqa: E402

DEFAULT_PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
DEFAULT_CACHE = HERE / ".cache"
DEFAULT_RESULTS = HERE / "results"
TOPK = 10
SEED = 0
#: (n_train, n_test, n_features) of the synthetic sets of anchors-results.md
SYNTHETIC_SIZES = {10_000: (20_000, 5_000, 50_000), 200_000: (50_000, 5_000, 100_000)}
#: seed of the fixed rule that splits a training set into fit and validation rows
VALIDATION_SEED = 0


# --------------------------------------------------------------------------------------------
# data sets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSet:
    """A data set written into the cache: ``X_train.npz``, ``Y_train.npz``, ``X_test.npz``,
    ``Y_test.npz`` (rows of X L2-normalised, float32 CSR), ``train.txt`` (XC) and
    ``meta.json``."""

    name: str
    slug: str
    root: Path
    meta: dict[str, Any]


def synthetic_sizes(spec: str) -> tuple[int, int, int, int]:
    """``(n_labels, n_train, n_test, n_features)`` of ``L`` or ``L:N_TRAIN:N_TEST:N_FEATURES``.

    Without explicit sizes: the anchors' sizes for 10k and 200k labels; otherwise
    ``n_train = clip(2 L, 20000, 50000)``, ``n_test = 5000``,
    ``n_features = clip(5 L, 50000, 100000)`` (which gives the anchors' sizes too).
    """
    parts = [int(float(p)) for p in spec.split(":")]
    n_labels = parts[0]
    if len(parts) == 4:
        return n_labels, parts[1], parts[2], parts[3]
    if len(parts) != 1:
        raise ValueError(f"--synthetic takes L or L:N_TRAIN:N_TEST:N_FEATURES, got {spec!r}")
    if n_labels in SYNTHETIC_SIZES:
        return (n_labels, *SYNTHETIC_SIZES[n_labels])
    n_train = min(max(2 * n_labels, 20_000), 50_000)
    return n_labels, n_train, 5_000, min(max(5 * n_labels, 50_000), 100_000)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")


def _label_count(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n >= 1000 else str(n)


def _write_set(root: Path, parts: dict[str, Any], meta: dict[str, Any], n_jobs: int) -> None:
    """Normalises the rows of both X, writes every file under a temporary folder and renames
    it to ``root`` (so a half-written cache is never used)."""
    import numpy as np
    import scipy.sparse as sp

    from xmrrs import datasets as xd
    from xmrrs import sparse as xs

    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out: dict[str, Any] = {}
    for key, m in parts.items():
        m = sp.csr_matrix(m, dtype=np.float32)
        if key.startswith("X"):
            m = sp.csr_matrix(xs.normalize_rows(m, n_jobs=n_jobs), dtype=np.float32)
        else:
            m.data[:] = 1.0
        m.sort_indices()
        sp.save_npz(tmp / f"{key}.npz", m, compressed=False)
        out[key] = m
    xd.dump_xc(tmp / "train.txt", out["X_train"], out["Y_train"], n_jobs=n_jobs)
    X, Y = out["X_train"], out["Y_train"]
    meta = {
        **meta,
        "n_train": X.shape[0],
        "n_test": out["X_test"].shape[0],
        "n_features": X.shape[1],
        "n_labels": Y.shape[1],
        "nnz_X_train": int(X.nnz),
        "nnz_Y_train": int(Y.nnz),
        "nnz_X_test": int(out["X_test"].nnz),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)


def validation_rows(n: int, fraction: float) -> tuple[Any, Any]:
    """The fixed rule that splits ``n`` training rows into (fit rows, validation rows), both
    sorted: the first ``ceil(fraction * n)`` rows of ``numpy.random.default_rng(0)``'s
    permutation of ``range(n)`` are the validation rows."""
    import math

    import numpy as np

    if not 0.0 < fraction < 1.0:
        raise SystemExit(f"--validation takes a fraction in (0, 1), got {fraction}")
    perm = np.random.default_rng(VALIDATION_SEED).permutation(n)
    n_val = math.ceil(fraction * n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def prepare_data(spec: str, cache: Path, n_jobs: int, validation: float = 0.0) -> DataSet:
    """The cached copy of a data folder or of ``synthetic:SPEC``, made when missing or stale.

    With ``validation`` > 0 the set is the training rows alone, split by
    :func:`validation_rows` (its "test" rows are the validation rows; the test rows are not
    used), named ``<name> (validation)``."""
    import xmrrs

    if spec.startswith("synthetic:"):
        n_labels, n_train, n_test, n_features = synthetic_sizes(spec.split(":", 1)[1])
        name = f"synthetic {_label_count(n_labels)} labels"
        slug = f"synthetic-{_label_count(n_labels)}"
        if (n_labels, n_train, n_test, n_features) != synthetic_sizes(str(n_labels)):
            slug += f"-{n_train}-{n_test}-{n_features}"
        key = {
            "source": "make_xmc",
            "args": [n_train + n_test, n_features, n_labels],
            "random_state": SEED,
            "xmrrs": xmrrs.__version__,
        }
    else:
        folder = Path(spec).resolve()
        files = [folder / "train.txt", folder / "test.txt"]
        for f in files:
            if not f.exists():
                raise SystemExit(f"{f} is missing (a data folder needs train.txt and test.txt)")
        name = (
            folder.name if folder.parent.name == "data" else f"{folder.parent.name}/{folder.name}"
        )
        slug = _slug(name.replace("/", "-"))
        key = {
            "source": str(folder),
            "files": [[f.name, f.stat().st_size, int(f.stat().st_mtime)] for f in files],
        }
    if validation:
        name += " (validation)"
        slug += "-val"
        key["validation"] = {"fraction": validation, "seed": VALIDATION_SEED}
    root = cache / slug
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    meta_path = root / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("key_digest") == digest:
        meta = json.loads(meta_path.read_text())
        print(f"{name}: cached in {root}", flush=True)
        return DataSet(name, slug, root, meta)

    from xmrrs import datasets as xd

    t = time.perf_counter()
    if key["source"] == "make_xmc":
        X, Y = xd.make_xmc(n_train + n_test, n_features, n_labels, random_state=SEED)
        parts = {
            "X_train": X[:n_train],
            "Y_train": Y[:n_train],
            "X_test": X[n_train:],
            "Y_test": Y[n_train:],
        }
        how = f"make_xmc({n_train + n_test}, {n_features}, {n_labels}, random_state={SEED})"
    else:
        (Xtr, Ytr), (Xte, Yte) = xd.load_split(Path(spec), n_jobs=n_jobs)
        parts = {"X_train": Xtr, "Y_train": Ytr, "X_test": Xte, "Y_test": Yte}
        how = f"load_split({key['source']})"
    if validation:
        X, Y = parts["X_train"], parts["Y_train"]
        fit, val = validation_rows(X.shape[0], validation)
        parts = {"X_train": X[fit], "Y_train": Y[fit], "X_test": X[val], "Y_test": Y[val]}
        how += f", training rows split by validation_rows(n, {validation}) (seed {VALIDATION_SEED})"
    made_s = time.perf_counter() - t
    _write_set(
        root, parts, {"name": name, "key": key, "key_digest": digest, "made_by": how}, n_jobs
    )
    meta = json.loads(meta_path.read_text())
    print(f"{name}: {how} in {made_s:.1f} s, written to {root}", flush=True)
    return DataSet(name, slug, root, meta)


# --------------------------------------------------------------------------------------------
# worker processes
# --------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """What every worker of one suite run shares."""

    n_jobs: int
    n_single: int
    warmup: int
    timeout: float
    settle: float
    omp_wait_policy: str
    peers_python: Path
    tmp: Path
    xmrrs_python: str

    @classmethod
    def from_args(cls, a: argparse.Namespace, tmp: str | Path) -> Settings:
        """The settings of the command-line options shared by suite.py and scaling.py."""
        return cls(
            n_jobs=a.n_jobs,
            n_single=a.n_single,
            warmup=a.warmup,
            timeout=a.timeout,
            settle=a.settle,
            omp_wait_policy=a.omp_wait_policy,
            peers_python=Path(a.peers_python),
            tmp=Path(tmp),
            xmrrs_python=a.xmrrs_python,
        )


def _xmrrs_only_path(s: Settings) -> Path:
    """A folder holding only a link to the xmrrs package this process imports, for the
    peers' interpreter's ``PYTHONPATH`` (the rest of this venv stays out of its way)."""
    import xmrrs

    d = s.tmp / "xmrrs-only"
    link = d / "xmrrs"
    if not link.exists():
        d.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(xmrrs.__file__).resolve().parent, target_is_directory=True)
    return d


def worker_env(s: Settings, lib: Library | None = None) -> dict[str, str]:
    """Environment of the workers: thread counts pinned to ``n_jobs`` for every runtime;
    with ``xmrrs_python="peers"``, xmrrs's workers find this xmrrs package on the peers'
    interpreter."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(s.n_jobs)
    env.pop("OMP_WAIT_POLICY", None)
    if s.omp_wait_policy != "unset":
        env["OMP_WAIT_POLICY"] = s.omp_wait_policy
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)
    if lib is not None and lib.runner == "xmrrs" and s.xmrrs_python == "peers":
        env["PYTHONPATH"] = str(_xmrrs_only_path(s))
    return env


def python_for(lib: Library, s: Settings) -> Path:
    if ENV_OF_RUNNER[lib.runner] == "peers" or s.xmrrs_python == "peers":
        return s.peers_python
    return Path(sys.executable)


def run_stage(
    lib: Library, stage: str, s: Settings, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Runs one stage of one library in a fresh process; returns its JSON result (with
    ``error`` and the log's tail if it failed)."""
    python = python_for(lib, s)
    tag = f"{_slug(lib.name)}.{stage}"
    out = s.tmp / f"{tag}.json"
    cfg = {
        "stage": stage,
        "runner": lib.runner,
        "params": lib.params,
        "n_jobs": s.n_jobs,
        "k": TOPK,
        "n_single": s.n_single,
        "warmup": s.warmup,
        "out": str(out),
        **(extra or {}),
    }
    cfg_path = s.tmp / f"{tag}.cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    out.unlink(missing_ok=True)
    if not python.exists():
        return {"available": False, "reason": f"{python} does not exist"}
    log = s.tmp / f"{tag}.log"
    t = time.perf_counter()
    try:
        with open(log, "w") as f:
            proc = subprocess.run(
                [str(python), str(Path(__file__).resolve()), "--worker", str(cfg_path)],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=worker_env(s, lib),
                timeout=s.timeout,
                check=False,
            )
        status = proc.returncode
    except subprocess.TimeoutExpired:
        status = -1
    wall = time.perf_counter() - t
    res: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    if status != 0 or not res:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        why = "timed out" if status == -1 else f"exit status {status}"
        res.setdefault("error", f"{stage} process failed ({why})")
        res["log_tail"] = tail
    res["process_s"] = wall
    return res


def settle(s: Settings) -> None:
    if s.settle > 0:
        time.sleep(s.settle)


def run_library(lib: Library, data: DataSet, s: Settings) -> dict[str, Any]:
    """Probe, train, predict one library; returns its record (without metrics)."""
    rec: dict[str, Any] = {"library": lib.name, "runner": lib.runner}
    probe = run_stage(lib, "probe", s)
    if not probe.get("available"):
        reason = probe.get("reason") or probe.get("error", "unknown")
        print(f"  {lib.name}: SKIPPED ({reason})", flush=True)
        return {**rec, "status": "skipped", "reason": reason}
    rec.update(versions=probe["versions"], params=probe["params"], note=lib.note)
    print(f"  {lib.name}: parameters {json.dumps(probe['params'], sort_keys=True)}", flush=True)
    model_dir = s.tmp / f"model-{_slug(lib.name)}"
    shutil.rmtree(model_dir, ignore_errors=True)
    common = {"data": str(data.root), "model_dir": str(model_dir)}

    settle(s)
    rec["load_train"], rec["busy_train"] = check_load(f"training {lib.name}")
    tr = run_stage(lib, "train", s, common)
    if tr.get("available") is False and "error" not in tr:
        # the runner declined this data set (e.g. a model that would not fit in memory)
        print(f"  {lib.name}: SKIPPED ({tr['reason']})", flush=True)
        shutil.rmtree(model_dir, ignore_errors=True)
        return {**rec, "status": "skipped", "reason": tr["reason"], "train": tr}
    if "error" in tr:
        print(f"  {lib.name}: training FAILED: {tr['error']}\n{tr.get('log_tail', '')}")
        return {**rec, "status": "failed", "reason": tr["error"], "train": tr}
    rec["train"] = tr

    settle(s)
    rec["load_predict"], rec["busy_predict"] = check_load(f"predicting with {lib.name}")
    pr = run_stage(lib, "predict", s, common)
    shutil.rmtree(model_dir, ignore_errors=True)
    if "error" in pr:
        print(f"  {lib.name}: prediction FAILED: {pr['error']}\n{pr.get('log_tail', '')}")
        return {**rec, "status": "failed", "reason": pr["error"], "predict": pr}
    rec["predict"] = pr
    rec["ids_path"] = str(s.tmp / f"{_slug(lib.name)}.predict.ids.npy")
    return {**rec, "status": "ok"}


# --------------------------------------------------------------------------------------------
# metrics, tables, plots
# --------------------------------------------------------------------------------------------


def score(ids: Any, y_test: Any, prop: Any) -> dict[str, Any]:
    """The table's metrics and P@1..10 from top-10 ids, by ``xmrrs.metrics``."""
    from xmrrs import metrics as xm

    rep = xm.ranking_report(y_test, ids, ks=(1, 3, 5, 10), propensity=prop)
    out = {m: rep[m] for m in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5", "R@10")}
    out["P@k"] = [xm.precision_at_k(y_test, ids, k=k) for k in range(1, TOPK + 1)]
    return out


def fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


COLUMNS = (
    "library",
    "train_s",
    "train_MB",
    "train_MB_lib",
    "model_MB",
    "pred_s",
    "pred_MB",
    "1q_med_ms",
    "1q_p99_ms",
    "1q_med_ms@1t",
    "1q_p99_ms@1t",
    "P@1",
    "P@3",
    "P@5",
    "nDCG@5",
    "PSP@5",
    "R@10",
    "load",
    "x train_s",
    "x train_MB",
    "x train_MB_lib",
    "x model_MB",
    "x pred_s",
    "x 1q_med",
    "x 1q_med@1t",
)

#: (column, record path) of the figures divided by PECOS's in the ratio columns
RATIOS = (
    ("train_s", ("train", "train_s")),
    ("train_MB", ("train", "train_peak_mb")),
    ("train_MB_lib", ("train", "train_lib_mb")),
    ("model_MB", ("train", "model_mb")),
    ("pred_s", ("predict", "pred_s")),
    ("1q_med", ("predict", "q_median_ms")),
    ("1q_med@1t", ("predict", "q1_median_ms")),
)


def _get(r: dict[str, Any], path: tuple[str, str]) -> float:
    if path == ("train", "train_lib_mb"):
        t = r.get("train", {})
        if t.get("rss_import_mb") is None or t.get("train_peak_mb") is None:
            return float("nan")
        return float(t["train_peak_mb"]) - float(t["rss_import_mb"])
    v = r.get(path[0], {}).get(path[1])
    return float("nan") if v is None else float(v)


def table_row(r: dict[str, Any], ref: dict[str, Any] | None) -> str:
    if r["status"] != "ok":
        cells = [r["library"], f"{r['status']}: {r.get('reason', '')}".replace("|", "/")]
        return "| " + " | ".join(cells + [""] * (len(COLUMNS) - 2)) + " |"
    t, p = r["train"], r["predict"]
    busy = r.get("busy_train") or r.get("busy_predict")
    load = f"{r['load_train']:.1f}/{r['load_predict']:.1f}" + ("*" if busy else "")
    cells = [
        r["library"],
        fmt(t["train_s"], ".2f"),
        fmt(t["train_peak_mb"], ".0f"),
        fmt(_get(r, ("train", "train_lib_mb")), ".0f"),
        fmt(t["model_mb"], ".1f"),
        fmt(p["pred_s"], ".3f"),
        fmt(p["pred_peak_mb"], ".0f"),
        fmt(p["q_median_ms"], ".3f"),
        fmt(p["q_p99_ms"], ".3f"),
        fmt(p["q1_median_ms"], ".3f"),
        fmt(p["q1_p99_ms"], ".3f"),
        *(fmt(r["metrics"][m], ".4f") for m in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5", "R@10")),
        load,
    ]
    for _, path in RATIOS:
        if ref is None or ref is r:
            cells.append("-")
        else:
            cells.append(fmt(_get(r, path) / _get(ref, path), ".2f"))
    return "| " + " | ".join(cells) + " |"


def render_table(records: list[dict[str, Any]]) -> list[str]:
    """The Markdown of one data set's run (records of one ``run_id``)."""
    r0 = records[0]
    d, m = r0["data_meta"], r0["machine"]
    ok = [r for r in records if r["status"] == "ok"]
    ref = next((r for r in ok if r["runner"] == "pecos"), None)
    versions: dict[str, str] = {"xmrrs": r0["xmrrs_version"]}
    for r in ok:
        versions.update(r.get("versions", {}))
    versions.pop("numpy", None)
    numpys = sorted({r["versions"]["numpy"] for r in ok if "numpy" in r.get("versions", {})})
    any_busy = any(r.get("busy_train") or r.get("busy_predict") for r in ok)
    lines = [
        f"### {d['name']} ({d['n_train']} train / {d['n_test']} test, {d['n_features']} "
        f"features, {d['n_labels']} labels, threads={r0['n_jobs']})",
        "",
        f"Run {r0['run_id']} ({r0['date']}); {', '.join(f'{k} {v}' for k, v in versions.items())}"
        + (f" (numpy {', '.join(numpys)})" if numpys else "")
        + f"; machine: {m['cores']} cores, {m['cpu']}, {m['mem_gb']} GB; "
        f"OMP_WAIT_POLICY {r0['omp_wait_policy']}; data: {d['made_by']}, rows of X L2-normalised.",
        "",
    ]
    if any_busy:
        lines += [
            f"**Warning: the machine was busy** (1-minute load above {BUSY_LOAD_PER_CORE} per "
            "core before a stage, rows marked `*`): timings are noisy.",
            "",
        ]
    lines += [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *(table_row(r, ref) for r in records),
        "",
        "train_s: training call only (data in memory, no parsing, no saving); train_MB / "
        "pred_MB: peak RSS (VmHWM) of the train / predict process, data included; "
        "train_MB_lib: train_MB less the RSS once the library is imported (before the data "
        "is loaded; the interpreter with numpy, scipy and the library's imports take 100-115 "
        "MB); model_MB: "
        "on disk; pred_s: top-10 of the whole test set in one call (calls under 0.5 s are "
        "repeated, up to 5 calls, and the fastest counts); 1q: "
        f"{r0['n_single']} test rows one at a time (median, p99) at {r0['n_jobs']} threads and "
        "at 1 thread (@1t); metrics by xmrrs.metrics from the top-10 ids (PSP: A=0.55, B=1.5, "
        "propensities of the training labels); load: 1-minute load average before training / "
        "before prediction; x ...: ratio to pecos-xrlinear (below 1: less than PECOS).",
        "",
        *(f"- {r['library']}: {r.get('note', '')} `{json.dumps(r['params'])}`" for r in ok),
    ]
    return lines


def _latest_runs(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The records of the latest run of every data set in a JSON-lines file."""
    by_set: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                by_set.setdefault(r["data_slug"], {}).setdefault(r["run_id"], []).append(r)
    return {slug: runs[max(runs)] for slug, runs in by_set.items()}


def plain_log_ticks(ax: Any, axis: str = "x") -> None:
    """Log-scale tick labels as plain numbers (0.2, 1, 30) instead of powers of ten; the
    minor ticks are labelled only when the axis spans less than two decades. Call it after
    plotting."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    f = FuncFormatter(lambda v, _: f"{v:g}")
    target = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    target.set_major_formatter(f)
    target.set_minor_formatter(f if lo > 0 and hi / lo < 100 else NullFormatter())
    ax.tick_params(axis=axis, which="minor", labelsize=7)


def plot_set(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """P@1 against training time and against single-query latency (log x), and P@k for
    k = 1..10; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        return []
    r0 = records[0]
    d = r0["data_meta"]
    slug = r0["data_slug"]
    title = f"{d['name']}: {d['n_train']} train / {d['n_test']} test, {d['n_labels']} labels"
    busy = any(r.get("busy_train") or r.get("busy_predict") for r in ok)
    sub = f"run {r0['run_id']}, {r0['n_jobs']} threads" + (" (machine busy)" if busy else "")
    colors = plt.get_cmap("tab10")
    color = {r["library"]: colors(i % 10) for i, r in enumerate(ok)}
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    panels = (
        (axes[0], ("train", "train_s"), "training time (s)"),
        (axes[1], ("predict", "q1_median_ms"), "single-query latency, median at 1 thread (ms)"),
    )
    for ax, path, label in panels:
        for r in ok:
            ax.scatter(
                [_get(r, path)],
                [r["metrics"]["P@1"]],
                s=70,
                color=color[r["library"]],
                marker="o" if r["runner"] == "xmrrs" else "s",
                label=r["library"],
                zorder=3,
            )
        ax.set_xscale("log")
        plain_log_ticks(ax)
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("P@1")
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(f"{title}\n{sub}", fontsize=10)
    fig.tight_layout()
    p = out_dir / f"suite_{slug}_tradeoff.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    ref = next((r for r in ok if r["runner"] == "pecos"), None)
    fig, axes = plt.subplots(1, 2 if ref else 1, figsize=(12 if ref else 6.5, 4.8), squeeze=False)
    ks = list(range(1, TOPK + 1))
    for r in ok:
        mine = r["runner"] == "xmrrs"
        style = {
            "marker": "o" if mine else None,
            "linestyle": "-" if mine else "--",
            "linewidth": 2 if mine else 1,
            "color": color[r["library"]],
            "label": r["library"],
        }
        axes[0, 0].plot(ks, r["metrics"]["P@k"], **style)
        if ref is not None:
            ours, theirs = r["metrics"]["P@k"], ref["metrics"]["P@k"]
            diff = [100 * (a - b) for a, b in zip(ours, theirs, strict=True)]
            axes[0, 1].plot(ks, diff, **style)
    axes[0, 0].set_ylabel("P@k")
    axes[0, 0].set_title("P@k (xmrrs solid, peers dashed)", fontsize=9)
    if ref is not None:
        axes[0, 1].set_ylabel("P@k minus pecos-xrlinear's (points)")
        axes[0, 1].set_title("difference to PECOS", fontsize=9)
        axes[0, 1].axhline(0, color="black", linewidth=0.6)
    for ax in axes[0]:
        ax.set_xlabel("k")
        ax.set_xticks(ks)
        ax.grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{title}\n{sub}", fontsize=10)
    fig.tight_layout()
    p = out_dir / f"suite_{slug}_pk.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def publish(records: list[dict[str, Any]], results: Path, plots: bool) -> None:
    """Writes (overwrites) the Markdown table and the plots of one data set's run."""
    lines = render_table(records)
    md = results / f"suite_{records[0]['data_slug']}.md"
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    print(f"table: {md}")
    if plots:
        for p in plot_set(records, results):
            print(f"plot: {p}")


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def parse_xmrrs_configs(
    items: Sequence[str], option: str = "--xmrrs-config"
) -> tuple[Library, ...]:
    """The xmrrs rows of ``NAME=JSON`` items (an empty JSON: ``{}``); ``option`` names the
    command-line option in the errors."""
    out = []
    for item in items:
        name, sep, js = item.partition("=")
        if not sep:
            raise SystemExit(f"{option} takes NAME=JSON, got {item!r}")
        params = json.loads(js) if js.strip() else {}
        if not isinstance(params, dict):
            raise SystemExit(f"{option} {name}: the JSON must be an object")
        out.append(Library(name, "xmrrs", params, f"xmrrs XRLinearClassifier, {js.strip()}"))
    return tuple(out)


def select_libraries(a: argparse.Namespace) -> list[Library]:
    xm = parse_xmrrs_configs(a.xmrrs_config) if a.xmrrs_config else XMRRS_CONFIGS
    if a.xmrrs_class:
        xm = tuple(
            Library(
                lib.name,
                lib.runner,
                {"__class__": a.xmrrs_class, **lib.params},
                lib.note.replace("XRLinearClassifier", a.xmrrs_class),
            )
            for lib in xm
        )
    every = {lib.name: lib for lib in (*xm, *PEERS)}
    chosen: list[Library] = []
    for item in a.libraries.split(","):
        item = item.strip()
        group = {"all": list(every.values()), "peers": list(PEERS), "xmrrs": list(xm)}.get(item)
        if group is None:
            if item not in every:
                raise SystemExit(f"unknown library {item!r}; choose from {', '.join(every)}")
            group = [every[item]]
        chosen += [lib for lib in group if lib not in chosen]
    return chosen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", action="append", default=[], help="folder with train.txt, test.txt")
    p.add_argument(
        "--synthetic",
        action="append",
        default=[],
        metavar="L[:N_TRAIN:N_TEST:N_FEATURES]",
        help="a make_xmc data set with L labels (repeat)",
    )
    p.add_argument(
        "--libraries",
        default="all",
        help="comma-separated names, or the groups all, xmrrs, peers (default all): "
        + ", ".join(lib.name for lib in (*XMRRS_CONFIGS, *PEERS)),
    )
    p.add_argument(
        "--xmrrs-config",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="an xmrrs configuration, e.g. 'xmrrs-beam20={\"beam_size\": 20}' (repeat; "
        "replaces the built-in xmrrs-pecos-matched and xmrrs-defaults)",
    )
    p.add_argument(
        "--xmrrs-class",
        default="",
        metavar="MODULE:CLASS",
        help="estimator class of the xmrrs rows (default xmrrs:XRLinearClassifier); "
        "runners._standin:CentroidStandIn tests the harness",
    )
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--n-single", type=int, default=1000, help="test rows queried one at a time")
    p.add_argument("--warmup", type=int, default=20, help="untimed single queries first")
    p.add_argument("--peers-python", default=str(DEFAULT_PEERS_PYTHON))
    p.add_argument(
        "--xmrrs-python",
        choices=("peers", "own"),
        default="peers",
        help="interpreter of xmrrs's workers: the peers' (default; this xmrrs package on the "
        "peers' numpy, scipy and scikit-learn, so that every library pays the same import "
        "footprint) or this one",
    )
    p.add_argument(
        "--omp-wait-policy",
        choices=("unset", "passive", "active"),
        default="unset",
        help="OMP_WAIT_POLICY of the workers (PECOS's 2-thread latency depends on it)",
    )
    p.add_argument("--settle", type=float, default=0.0, help="seconds to wait before a stage")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per worker process")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument(
        "--results-dir",
        default=None,
        help=f"default {DEFAULT_RESULTS}, or {DEFAULT_RESULTS / 'validation'} with --validation",
    )
    p.add_argument(
        "--validation",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="tune on validation data: replace each set by its training rows, split by a fixed "
        "rule into fit rows and FRACTION of validation rows (the test rows are not used)",
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--plot-only",
        action="store_true",
        help="re-render the tables and plots of the latest run of every data set in "
        "RESULTS/suite.jsonl",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        from runners.common import worker_main

        raise SystemExit(worker_main(a.worker))

    if a.results_dir is None:
        a.results_dir = str(DEFAULT_RESULTS / "validation" if a.validation else DEFAULT_RESULTS)
    results = Path(a.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    jsonl = results / "suite.jsonl"
    if a.plot_only:
        if not jsonl.exists():
            raise SystemExit(f"{jsonl} does not exist: run the suite first")
        for recs in _latest_runs(jsonl).values():
            publish(recs, results, plots=True)
        return

    import numpy as np
    import scipy.sparse as sp

    import xmrrs
    from xmrrs import metrics as xm

    specs = list(a.data) + [f"synthetic:{s}" for s in a.synthetic]
    if not specs:
        p.error("give at least one --data folder or --synthetic spec (or --plot-only)")
    libs = select_libraries(a)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    mach = {
        "cores": os.cpu_count() or 1,
        "cpu": cpu_model(),
        "mem_gb": mem_gb,
        "host": platform.node(),
        "python": platform.python_version(),
        "load_start": [round(v, 2) for v in load_average()],
    }
    print(
        f"suite run {run_id}: {mach['cores']} cores, {mach['cpu']}, {mem_gb} GB, "
        f"load {mach['load_start']}; n_jobs={a.n_jobs}; libraries: "
        + ", ".join(lib.name for lib in libs),
        flush=True,
    )
    cache = Path(a.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xmrrs-suite-") as tmp:
        s = Settings.from_args(a, tmp)
        for spec in specs:
            data = prepare_data(spec, cache, a.n_jobs, a.validation)
            meta = data.meta
            print(
                f"{data.name}: {meta['n_train']} train / {meta['n_test']} test, "
                f"{meta['n_features']} features, {meta['n_labels']} labels, "
                f"nnz(X_train) {meta['nnz_X_train']}",
                flush=True,
            )
            y_train = sp.load_npz(data.root / "Y_train.npz").tocsr()
            y_test = sp.load_npz(data.root / "Y_test.npz").tocsr()
            prop = xm.propensity(y_train, A=0.55, B=1.5)
            records = []
            for lib in libs:
                rec = run_library(lib, data, s)
                if rec["status"] == "ok":
                    ids = np.load(rec.pop("ids_path"))
                    rec["metrics"] = score(ids, y_test, prop)
                    t, pr, mt = rec["train"], rec["predict"], rec["metrics"]
                    print(
                        f"  {lib.name}: train {t['train_s']:.2f} s "
                        f"(stage CPU {t['train_stage_cpu_s']:.1f} s), {t['train_peak_mb']:.0f} MB, "
                        f"model {t['model_mb']:.1f} MB; predict {pr['pred_s']:.2f} s, "
                        f"{pr['pred_peak_mb']:.0f} MB; 1q {pr['q_median_ms']:.3f} ms "
                        f"(1t {pr['q1_median_ms']:.3f} ms); P@1 {mt['P@1']:.4f} "
                        f"P@5 {mt['P@5']:.4f} PSP@5 {mt['PSP@5']:.4f}",
                        flush=True,
                    )
                rec.update(
                    run_id=run_id,
                    date=date,
                    data=data.name,
                    data_slug=data.slug,
                    data_meta={k: v for k, v in meta.items() if k not in ("key",)},
                    machine=mach,
                    n_jobs=a.n_jobs,
                    n_single=a.n_single,
                    warmup=a.warmup,
                    omp_wait_policy=a.omp_wait_policy,
                    xmrrs_version=xmrrs.__version__,
                )
                records.append(rec)
            with open(jsonl, "a") as f:
                for r in records:
                    f.write(json.dumps(r) + "\n")
            publish(records, results, plots=not a.no_plots)
    print(f"results appended to {jsonl}; parent peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
