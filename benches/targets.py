"""Which of issue 18's targets each xmrrs configuration meets, from recorded suite runs.

    .venv/bin/python benches/targets.py                      # benches/results/suite.jsonl
    .venv/bin/python benches/targets.py --results-dir benches/results/validation \
        --seeds benches/results/validation/seeds_defaults.jsonl

Per data set and xmrrs row of the set's latest run with xmrrs rows (peers: the latest record
of each on the set, from any run, in ``RESULTS/suite.jsonl``):

- accuracy: P@1, P@3 and P@5 minus the best peer's (the best of every peer's latest record,
  metric by metric; target: >= 0), from the suite's one seed or, with ``--seeds FILE``, from
  the means over seeds that ``bench_seeds.py`` wrote there;
- cost: training time, whole-test-set prediction time and single-query latency (median, at
  the run's threads and at 1 thread) divided by PECOS's **of the same run** (target: <= 0.5),
  and the model file divided by PECOS's (target: <= 1.5).

Writes ``RESULTS/targets.md`` (cells that miss a target are bold) and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: (column, record path, target ratio) of the cost targets, relative to PECOS
COST = (
    ("x train_s", ("train", "train_s"), 0.5),
    ("x pred_s", ("predict", "pred_s"), 0.5),
    ("x 1q", ("predict", "q_median_ms"), 0.5),
    ("x 1q@1t", ("predict", "q1_median_ms"), 0.5),
    ("x model", ("train", "model_mb"), 1.5),
)
METRICS = ("P@1", "P@3", "P@5")


def latest(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{set: {library: record}}``: the latest ok record of each library on each set; each
    record's ``_run`` holds the records of its own run (where PECOS's reference is)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    runs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if r.get("status") != "ok":
            continue
        runs.setdefault((r["data_slug"], r["run_id"]), {})[r["library"]] = r
        cur = out.setdefault(r["data_slug"], {}).get(r["library"])
        if cur is None or r["run_id"] >= cur["run_id"]:
            out[r["data_slug"]][r["library"]] = r
    for by_lib in out.values():
        for r in by_lib.values():
            r["_run"] = runs[(r["data_slug"], r["run_id"])]
    return out


def seed_means(path: Path | None) -> dict[tuple[str, str], list[float]]:
    """``{(data set name, row): [P@1, P@3, P@5]}``: the latest means over seeds of each row in
    a ``bench_seeds.py`` JSON-lines file (``{}`` without one)."""
    out: dict[tuple[str, str], list[float]] = {}
    for line in path.read_text().splitlines() if path else []:
        if line.strip():
            r = json.loads(line)
            out[(r["data"], r["library"])] = r["mean"]
    return out


def best_peer(by_lib: dict[str, dict[str, Any]]) -> dict[str, tuple[float, str]]:
    """``{metric: (value, library)}``: the best peer's value of each of :data:`METRICS`
    among one set's records (``{}`` without a peer)."""
    peers = {k: r for k, r in by_lib.items() if r["runner"] != "xmrrs"}
    if not peers:
        return {}
    return {m: max((r["metrics"][m], k) for k, r in peers.items()) for m in METRICS}


def rows_of_set(
    by_lib: dict[str, dict[str, Any]], means: dict[tuple[str, str], list[float]]
) -> list[str]:
    best = best_peer(by_lib)
    lines = []
    ours_runs = [r["run_id"] for r in by_lib.values() if r["runner"] == "xmrrs"]
    for name, r in sorted((k, r) for k, r in by_lib.items() if r["runner"] == "xmrrs"):
        if r["run_id"] != max(ours_runs):
            continue  # an xmrrs row of an older run (another configuration, older defaults)
        ref = next((p for p in r["_run"].values() if p["runner"] == "pecos"), None)
        cells, met = [], 0
        ours = means.get((r["data_meta"]["name"], name))
        for i, m in enumerate(METRICS):
            d = (ours[i] if ours else r["metrics"][m]) - best[m][0]
            ok = d >= 0
            met += ok
            cells.append(f"{d:+.4f}" if ok else f"**{d:+.4f}**")
        for _, (stage, key), target in COST:
            if ref is None or r[stage].get(key) is None:
                cells.append("-")
                continue
            x = float(r[stage][key]) / float(ref[stage][key])
            ok = x <= target
            met += ok
            cells.append(f"{x:.2f}" if ok else f"**{x:.2f}**")
        d0 = r["data_meta"]["name"]
        tag = f"{name} (seed mean)" if ours else name
        lines.append(f"| {d0} | {tag} | " + " | ".join(cells) + f" | {met}/8 |")
    best_line = ", ".join(f"{m} {best[m][1]} {best[m][0]:.4f}" for m in METRICS)
    return [
        *lines,
        f"| {by_lib[next(iter(by_lib))]['data_meta']['name']} | best peer: "
        f"{best_line} |" + " |" * 9,
    ]


def _shown(path: Path) -> str:
    return str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--results-dir", default=str(HERE / "results"))
    p.add_argument("--sets", default="", help="comma-separated set slugs (default: every set)")
    p.add_argument(
        "--seeds",
        default=None,
        metavar="JSONL",
        help="a bench_seeds.py results file: the xmrrs rows' P@k are its means over seeds "
        "(rows marked 'seed mean'), instead of the suite's one seed",
    )
    a = p.parse_args()
    results = Path(a.results_dir).resolve()
    data = latest(results / "suite.jsonl")
    means = seed_means(Path(a.seeds) if a.seeds else None)
    head = ["data set", "xmrrs row", *(f"d {m}" for m in METRICS), *(c for c, _, _ in COST)]
    lines = [
        "Targets of issue 18 from the latest suite record of each library per set in "
        f"{_shown(results / 'suite.jsonl')}. d P@k: minus the best peer's (one seed, or the "
        "mean over seeds where the row says so; target >= 0); x: ratio to PECOS's of the same "
        "run (target <= 0.5, model <= 1.5); misses in bold; met: cells met of 8.",
        "",
        "| " + " | ".join([*head, "met"]) + " |",
        "|" + "---|" * (len(head) + 1),
    ]
    wanted = [v.strip() for v in a.sets.split(",") if v.strip()]
    for slug in sorted(data):
        if wanted and slug not in wanted:
            continue
        runners = {r["runner"] for r in data[slug].values()}
        if "xmrrs" in runners and len(runners) > 1:
            lines += rows_of_set(data[slug], means)
        elif "xmrrs" in runners:
            print(f"{slug}: xmrrs rows but no peer record; left out", file=sys.stderr)
    text = "\n".join(lines) + "\n"
    (results / "targets.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
