"""Put the latest comparison table of every data set into benches/README.md.

    .venv/bin/python benches/readme_tables.py

Reads ``benches/results/suite.jsonl`` (written by ``suite.py``), keeps the latest run of every
data set, and replaces the text between ``<!-- suite:begin -->`` and ``<!-- suite:end -->`` in
benches/README.md with one compact table per set (the full tables, with p99 latencies, memory of
prediction and every ratio, are in ``benches/results/suite_<set>.md``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
ORDER = [
    "bibtex",
    "delicious",
    "rcv1-subset1",
    "stackex-cs",
    "debian-tags",
    "debian-deps",
    "synthetic-10k",
    "synthetic-200k",
]


def _latest(path: Path) -> dict[str, list[dict[str, Any]]]:
    by_set: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            by_set.setdefault(r["data_slug"], {}).setdefault(r["run_id"], []).append(r)
    return {slug: runs[max(runs)] for slug, runs in by_set.items()}


def _table(recs: list[dict[str, Any]]) -> list[str]:
    r0 = recs[0]
    m = r0["data_meta"]
    busy = any(r.get("busy_train") or r.get("busy_predict") for r in recs)
    loads = [x for r in recs for x in (r.get("load_train"), r.get("load_predict")) if x]
    out = [
        f"**{r0['data']}** ({m['n_train']} train / {m['n_test']} test, {m['n_features']} "
        f"features, {m['n_labels']} labels); run {r0['date']}, {r0['n_jobs']} threads, load "
        f"{min(loads):.1f}-{max(loads):.1f}{' (busy machine: timings noisy)' if busy else ''}",
        "",
        "| library | train s | train MB | model MB | predict s | 1 query ms (1 thread) | P@1 | "
        "P@3 | P@5 | PSP@5 | train vs PECOS | predict vs PECOS | 1 query vs PECOS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pecos = next(
        (r for r in recs if r["library"] == "pecos-xrlinear" and r["status"] == "ok"), None
    )

    def ratio(r: dict[str, Any], sect: str, key: str) -> str:
        if pecos is None or r is pecos:
            return "-"
        return f"{r[sect][key] / pecos[sect][key]:.2f}"

    for r in recs:
        if r["status"] != "ok":
            out.append(f"| {r['library']} | {r['status']} |" + " |" * 11)
            continue
        t, p, q = r["train"], r["predict"], r["metrics"]
        out.append(
            f"| {r['library']} | {t['train_s']:.2f} | {t['train_peak_mb']:.0f} | "
            f"{t['model_mb']:.1f} | {p['pred_s']:.3f} | {p['q1_median_ms']:.3f} | "
            f"{q['P@1']:.4f} | {q['P@3']:.4f} | {q['P@5']:.4f} | {q['PSP@5']:.4f} | "
            f"{ratio(r, 'train', 'train_s')} | {ratio(r, 'predict', 'pred_s')} | "
            f"{ratio(r, 'predict', 'q1_median_ms')} |"
        )
    return [*out, ""]


def main() -> None:
    latest = _latest(HERE / "results" / "suite.jsonl")
    lines = [BEGIN, ""]
    for slug in sorted(latest, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER)):
        lines += _table(latest[slug])
    lines.append(END)
    text = README.read_text()
    a, b = text.index(BEGIN), text.index(END) + len(END)
    README.write_text(text[:a] + "\n".join(lines) + text[b:])
    print(f"updated {README} with {len(latest)} data sets")


if __name__ == "__main__":
    main()
