"""On-demand fuzzing with large budgets.

Examples::

    python -m tests.fuzz --parsers 1000000 --tamper 20000 --badinput 2000 --seed 0
    python -m tests.fuzz --tamper 500 --start 1200 --out fuzz-failures

Prints progress to stderr and a summary (inputs run, crashes, hangs, invalid answers, clean
rejections, accepted) to stdout; writes every failing input under ``--out``. Exits with 1
if anything failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._driver import Campaign, Summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n")[0])
    ap.add_argument("--parsers", type=int, default=0, help="parser inputs to run")
    ap.add_argument("--tamper", type=int, default=0, help="tampered models to try")
    ap.add_argument("--badinput", type=int, default=0, help="hypothesis examples per property")
    ap.add_argument("--seed", type=int, default=0, help="campaign seed (base of every stream)")
    ap.add_argument("--start", type=int, default=0, help="first trial seed")
    ap.add_argument("--jobs", type=int, default=2, help="parallel worker processes")
    ap.add_argument("--out", type=Path, default=Path("fuzz-failures"), help="failing inputs")
    ap.add_argument("--mem-gib", type=float, default=4.0, help="address-space cap per worker")
    args = ap.parse_args(argv)
    if not (args.parsers or args.tamper or args.badinput):
        ap.error("give at least one of --parsers, --tamper, --badinput")
    summaries: list[Summary] = []
    common = {"base": args.seed, "mem_gib": args.mem_gib}
    t0 = time.perf_counter()
    if args.parsers:
        c = Campaign(
            "parsers",
            {**common, "checkpoint_every": 500},
            outdir=args.out,
            chunk=25_000,
            seed_cost=0.01,
            per_seed_timeout=20.0,
            jobs=args.jobs,
            progress=True,
        )
        summaries.append(c.run(args.start, args.parsers))
    if args.tamper:
        c = Campaign(
            "tamper",
            {**common, "checkpoint_every": 1},
            outdir=args.out,
            chunk=500,
            seed_cost=1.0,
            per_seed_timeout=60.0,
            jobs=args.jobs,
            progress=True,
        )
        summaries.append(c.run(args.start, args.tamper))
    if args.badinput:
        from .badinput import run_properties

        summaries.append(
            run_properties(args.badinput, seed=args.seed, outdir=args.out, progress=True)
        )
    print(f"\n=== fuzz summary ({time.perf_counter() - t0:.0f} s, seed {args.seed}) ===")
    failed = 0
    for s in summaries:
        print(s.describe())
        failed += len(s.failures)
    if failed:
        print(f"{failed} failure(s); inputs under {args.out}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
