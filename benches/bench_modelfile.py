"""Model files: load time with and without memory mapping, and time to the first answer.

    .venv/bin/python benches/bench_modelfile.py --labels 200000 --n-jobs 2

Trains ``XRLinearClassifier()`` (defaults) on ``make_xmc`` data (``n_samples = n_features =
max(L / 2, 50000)`` with ``--labels L``; 90% train), saves it, then in fresh processes (so the
page cache is the only thing shared, as for a service that restarts) measures, best of
``--repeat``:

- ``load``: ``XRLinearClassifier.load(path, mmap=...)``;
- ``load + 1 query``: load then ``predict_topk`` of one test row (the time a new process needs
  before it can answer);
- peak RSS of the process (VmHWM).

Both modes must give bit-identical answers (checked). Writes ``benches/results/modelfile.md``
and appends to ``modelfile.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

WORKER = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, scipy.sparse as sp
from xmrrs import XRLinearClassifier
t_import = time.perf_counter() - t0
path, mmap, qpath = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
q = sp.load_npz(qpath).tocsr()
t0 = time.perf_counter()
clf = XRLinearClassifier.load(path, mmap=mmap)
t_load = time.perf_counter() - t0
clf.set_params(n_jobs=1)
ids, scores = clf.predict_topk(q[:1], k=10)
t_first = time.perf_counter() - t0
hwm = 0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1]) // 1024
print(json.dumps({"load_s": t_load, "first_s": t_first, "peak_mb": hwm,
                  "ids": ids.tolist(), "scores": scores.tolist()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--labels", type=int, default=200000)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "modelfile.md"))
    args = ap.parse_args()

    sys.path.insert(0, str(HERE))
    import scipy.sparse as sp

    from _machine import machine, write_results
    from xmrrs import XRLinearClassifier
    from xmrrs.datasets import make_xmc

    n = max(args.labels // 2, 50000)
    X, Y = make_xmc(n, n, args.labels, random_state=0)
    n_tr = int(0.9 * n)
    t0 = time.perf_counter()
    clf = XRLinearClassifier(n_jobs=args.n_jobs).fit(X[:n_tr], Y[:n_tr])
    t_fit = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        clf.save(path)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        qpath = Path(tmp) / "q.npz"
        sp.save_npz(qpath, X[n_tr:].tocsr())
        rows = {}
        for mmap in (False, True):
            best: dict[str, float] = {}
            answer = None
            for _ in range(args.repeat):
                out = subprocess.run(
                    [sys.executable, "-c", WORKER, str(path), "1" if mmap else "0", str(qpath)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(out.stdout)
                answer = answer or (r["ids"], r["scores"])
                assert (r["ids"], r["scores"]) == answer, "answers differ between runs"
                for k in ("load_s", "first_s", "peak_mb"):
                    best[k] = min(best.get(k, float("inf")), r[k])
            rows[mmap] = (best, answer)
    assert rows[True][1] == rows[False][1], "mmap and in-memory loads answer differently"
    import datetime as dt

    import xmrrs

    m = machine()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Model file load, {date}, xmrrs {xmrrs.__version__}, {m['cpu']} ({m['cores']} cores), "
        f"load average {m['load1']:.2f}.",
        "",
        f"Model: `XRLinearClassifier(n_jobs={args.n_jobs})` on `make_xmc({n}, {n}, "
        f"{args.labels})` ({n_tr} training rows), trained in {t_fit:.1f} s; "
        f"{size / 2**20:.1f} MB on disk. Fresh process per load, best of {args.repeat}; "
        "page cache warm (the file was just written or read).",
        "",
        "| load | load s | load + first query s | peak RSS MB |",
        "|---|---|---|---|",
    ]
    for mmap in (False, True):
        b = rows[mmap][0]
        lines.append(
            f"| {'mmap=True' if mmap else 'mmap=False'} | {b['load_s']:.4f} | "
            f"{b['first_s']:.4f} | {b['peak_mb']:.0f} |"
        )
    ratio = rows[False][0]["load_s"] / rows[True][0]["load_s"]
    lines += ["", f"mmap load is {ratio:.1f}x faster; both answer bit-identically."]
    write_results(
        args.out,
        lines,
        [
            {
                "labels": args.labels,
                "size_mb": size / 2**20,
                "fit_s": t_fit,
                "mmap": rows[True][0],
                "in_memory": rows[False][0],
                "ratio": ratio,
                "date": date,
                **m,
            }
        ],
    )


if __name__ == "__main__":
    main()
