"""Scaling benchmark: how xmrrs's costs grow with the number of labels (PECOS for reference).

    .venv/bin/python benches/scaling.py                       # 10k, 100k, 1M labels
    .venv/bin/python benches/scaling.py --labels 10000 --libraries pecos-xrlinear
    .venv/bin/python benches/scaling.py --plot-only

Data: ``xmrrs.datasets.make_xmc(n + n_test, n, L, random_state=0)`` with
``n = max(L / 5, 100000)`` training rows and features (the sizes of
``bench_indexing.py``: 100k x 100k up to 500k labels, 200k x 200k at 1M) and
``n_test = 1000`` test rows, cached like the suite's sets. Every library is measured exactly
as in ``suite.py`` (own train and predict processes, ``--n-jobs`` threads): training time,
peak RSS of training, model size on disk, single-query latency (median over the test rows,
at 1 thread and at ``--n-jobs``), and P@1 as a sanity check.

Growth exponents: for each library and cost, the least-squares slope of log(cost) against
log(L), and against log(nnz(X_train) x depth) (depth = layers of linear models: reported
by the library when it can, else the nominal ``1 + ceil(log16(L / 100))``). A slope of 1
is linear growth. With three points they are rough: read them with the table.

Writes ``RESULTS/scaling.md`` (table and exponents), ``RESULTS/scaling.png`` (log-log) and
appends ``RESULTS/scaling.jsonl``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import suite  # noqa: E402
from _machine import check_load, cpu_model, load_average  # noqa: E402

N_TEST = 1000
#: (column, record path, axis label) of the costs fitted against the label count
COSTS = (
    ("train_s", ("train", "train_s"), "training time (s)"),
    ("train_MB", ("train", "train_peak_mb"), "peak RSS of training (MB)"),
    ("model_MB", ("train", "model_mb"), "model size on disk (MB)"),
    ("1q_ms@1t", ("predict", "q1_median_ms"), "single-query latency, median at 1 thread (ms)"),
)


def spec_for(n_labels: int, min_rows: int = 100_000) -> str:
    """The ``--synthetic`` spec of ``L`` labels: ``n = max(L / 5, min_rows)`` training rows
    and features, ``N_TEST`` test rows."""
    n = max(n_labels // 5, min_rows)
    return f"synthetic:{n_labels}:{n}:{N_TEST}:{n}"


def fanouts_text(r: dict[str, Any]) -> str:
    nodes = r.get("train", {}).get("nodes_per_level")
    if not nodes:
        return "-"
    return ",".join(str(round(b / a)) for a, b in itertools.pairwise(nodes))


def fanout_sum(r: dict[str, Any]) -> float:
    """Sum over the levels of the fan-out (children per parent), from the reported tree."""
    nodes = r.get("train", {}).get("nodes_per_level")
    if not nodes:
        return 0.0
    return float(sum(b / a for a, b in itertools.pairwise(nodes)))


def nominal_depth(n_labels: int, branching: int = 16, leaf: int = 100) -> int:
    """Layers of a tree with ``branching`` children per node and leaves of at most ``leaf``
    labels: the cluster levels plus the label layer."""
    return 1 + max(1, math.ceil(math.log(max(n_labels / leaf, 1.0)) / math.log(branching)))


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x); NaN with fewer than two usable points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def render(records: list[dict[str, Any]]) -> list[str]:
    r0 = records[0]
    m = r0["machine"]
    lines = [
        f"### Scaling with the label count (run {r0['run_id']}, {r0['date']}, "
        f"threads={r0['n_jobs']})",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}, load at start {m['load_start']}. "
        "Data: make_xmc, n = n_features training rows (below), "
        f"{r0['data_meta']['n_test']} test rows, "
        "rows L2-normalised. Each library in its own train and predict processes, measured "
        "as in suite.py.",
        "",
        "| L | library | n_train | nnz(X) | depth | fan-outs | train_s | train_MB | model_MB | "
        "1q_med_ms@1t | 1q_med_ms | P@1 | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        d = r["data_meta"]
        if r["status"] != "ok":
            lines.append(
                f"| {d['n_labels']} | {r['library']} | {d['n_train']} | {d['nnz_X_train']} | "
                f"| | {r['status']}: {r.get('reason', '')} | | | | | | |"
            )
            continue
        t, p = r["train"], r["predict"]
        busy = "*" if r.get("busy_train") or r.get("busy_predict") else ""
        lines.append(
            f"| {d['n_labels']} | {r['library']} | {d['n_train']} | {d['nnz_X_train']} | "
            f"{r['depth']}{'' if r['depth_reported'] else ' (nominal)'} | "
            f"{fanouts_text(r)} | "
            f"{t['train_s']:.1f} | {t['train_peak_mb']:.0f} | {t['model_mb']:.1f} | "
            f"{p['q1_median_ms']:.3f} | {p['q_median_ms']:.3f} | {r['metrics']['P@1']:.4f} | "
            f"{r['load_train']:.1f}/{r['load_predict']:.1f}{busy} |"
        )
    lines += [
        "",
        "Growth exponents (least-squares slope of log cost against log L, against "
        "log(nnz(X) x depth), and, where the library reports its tree, against "
        "log(nnz(X) x sum of fan-outs): a level of c-way k-means scores every label against "
        "c centroids, and tfn trains each of a parent's c children on the parent's "
        "instances, so a level costs about nnz x c); 1 = linear:",
        "",
        "| library | against | " + " | ".join(c[0] for c in COSTS) + " | points |",
        "|---|---|" + "---|" * (len(COSTS) + 1),
    ]
    for lib in dict.fromkeys(r["library"] for r in records):
        ok = [r for r in records if r["library"] == lib and r["status"] == "ok"]
        fan = [fanout_sum(r) for r in ok]
        for against in ("L", "nnz(X) x depth", "nnz(X) x sum of fan-outs"):
            if against.endswith("fan-outs") and not all(fan):
                continue
            xs = [
                float(r["data_meta"]["n_labels"])
                if against == "L"
                else float(r["data_meta"]["nnz_X_train"] * r["depth"])
                if against == "nnz(X) x depth"
                else float(r["data_meta"]["nnz_X_train"] * f)
                for r, f in zip(ok, fan, strict=True)
            ]
            cells = [suite.fmt(slope(xs, [suite._get(r, c[1]) for r in ok]), ".2f") for c in COSTS]
            lines.append(f"| {lib} | {against} | " + " | ".join(cells) + f" | {len(ok)} |")
    if any(r.get("busy_train") or r.get("busy_predict") for r in records):
        lines += ["", "`*`: the 1-minute load exceeded 0.5 per core before a stage (noisy)."]
    return lines


def plot(records: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    for ax, (_, path, label) in zip(axes.ravel(), COSTS, strict=True):
        for lib in dict.fromkeys(r["library"] for r in records):
            ok = [r for r in records if r["library"] == lib and r["status"] == "ok"]
            xs = [r["data_meta"]["n_labels"] for r in ok]
            ys = [suite._get(r, path) for r in ok]
            b = slope([float(x) for x in xs], ys)
            ax.plot(xs, ys, marker="o", label=f"{lib} (slope {suite.fmt(b, '.2f')})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        suite.plain_log_ticks(ax, "x")
        suite.plain_log_ticks(ax, "y")
        ax.set_xlabel("labels L")
        ax.set_title(label, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    r0 = records[0]
    fig.suptitle(f"Scaling with L (make_xmc), run {r0['run_id']}, {r0['n_jobs']} threads")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def publish(records: list[dict[str, Any]], results: Path) -> None:
    lines = render(records)
    (results / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(records, results / "scaling.png")
    print(f"table: {results / 'scaling.md'}\nplot: {results / 'scaling.png'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--labels", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument(
        "--libraries",
        default="xmrrs-single,pecos-xrlinear",
        help="comma-separated names or groups, as in suite.py",
    )
    p.add_argument("--xmrrs-config", action="append", default=[], metavar="NAME=JSON")
    p.add_argument("--xmrrs-class", default="", metavar="MODULE:CLASS")
    p.add_argument(
        "--min-rows",
        type=int,
        default=100_000,
        help="n = n_features = max(L / 5, MIN_ROWS) (smaller for a quick check)",
    )
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--n-single", type=int, default=N_TEST)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--peers-python", default=str(suite.DEFAULT_PEERS_PYTHON))
    p.add_argument("--xmrrs-python", choices=("peers", "own"), default="peers")
    p.add_argument("--omp-wait-policy", choices=("unset", "passive", "active"), default="unset")
    p.add_argument("--settle", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=3 * 3600.0)
    p.add_argument("--cache-dir", default=str(suite.DEFAULT_CACHE))
    p.add_argument("--results-dir", default=str(suite.DEFAULT_RESULTS))
    p.add_argument("--plot-only", action="store_true", help="re-render the latest run")
    a = p.parse_args()

    results = Path(a.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    jsonl = results / "scaling.jsonl"
    if a.plot_only:
        runs: dict[str, list[dict[str, Any]]] = {}
        for line in jsonl.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                runs.setdefault(r["run_id"], []).append(r)
        publish(runs[max(runs)], results)
        return

    import numpy as np
    import scipy.sparse as sp

    import xmrrs
    from xmrrs import metrics as xm

    libs = suite.select_libraries(a)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mach = {
        "cores": os.cpu_count() or 1,
        "cpu": cpu_model(),
        "load_start": [round(v, 2) for v in load_average()],
    }
    check_load("the scaling benchmark")
    records: list[dict[str, Any]] = []
    cache = Path(a.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xmrrs-scaling-") as tmp:
        s = suite.Settings.from_args(a, tmp)
        for n_labels in sorted(a.labels):
            data = suite.prepare_data(spec_for(n_labels, a.min_rows), cache, a.n_jobs)
            meta = data.meta
            print(
                f"L={n_labels}: {meta['n_train']} x {meta['n_features']}, "
                f"nnz(X) {meta['nnz_X_train']}",
                flush=True,
            )
            y_test = sp.load_npz(data.root / "Y_test.npz").tocsr()
            for lib in libs:
                rec = suite.run_library(lib, data, s)
                if rec["status"] == "ok":
                    ids = np.load(rec.pop("ids_path"))
                    rec["metrics"] = {"P@1": xm.precision_at_k(y_test, ids, k=1)}
                    reported = rec["train"].get("depth")
                    rec["depth_reported"] = reported is not None
                    rec["depth"] = int(reported) if reported else nominal_depth(n_labels)
                    t, pr = rec["train"], rec["predict"]
                    print(
                        f"  {lib.name}: train {t['train_s']:.1f} s, {t['train_peak_mb']:.0f} MB, "
                        f"model {t['model_mb']:.1f} MB, 1q@1t {pr['q1_median_ms']:.3f} ms, "
                        f"P@1 {rec['metrics']['P@1']:.4f}",
                        flush=True,
                    )
                rec.update(
                    run_id=run_id,
                    date=date,
                    data=data.name,
                    data_slug=data.slug,
                    data_meta={k: v for k, v in meta.items() if k != "key"},
                    machine=mach,
                    n_jobs=a.n_jobs,
                    omp_wait_policy=a.omp_wait_policy,
                    xmrrs_version=xmrrs.__version__,
                )
                records.append(rec)
                with open(jsonl, "a") as f:
                    f.write(json.dumps(rec) + "\n")
    publish(records, results)


if __name__ == "__main__":
    main()
