"""Worker process of the fuzz driver: ``python -m tests.fuzz._worker KIND START COUNT CFG``.

Runs the seeds ``START .. START+COUNT-1`` of ``tests.fuzz.KIND`` and prints checkpoints,
failures and a summary on stdout (see ``_driver``).
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
import traceback
from collections import Counter


def limit_memory(gib: float) -> None:
    """Caps the address space, so that a runaway allocation fails instead of eating the
    machine (numpy raises MemoryError; Rust aborts, which the driver reports as a crash)."""
    if gib <= 0:
        return
    lim = int(gib * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        lim = min(lim, hard)
    resource.setrlimit(resource.RLIMIT_AS, (lim, hard))


def main(argv: list[str]) -> int:
    kind, start, count, cfg = argv[0], int(argv[1]), int(argv[2]), json.loads(argv[3])
    mod = importlib.import_module(f"tests.fuzz.{kind}")
    runner = mod.Runner(cfg)  # set-up (imports, base files) before the memory cap
    limit_memory(float(cfg.get("mem_gib", 4.0)))
    counts: Counter[str] = Counter()
    out = sys.stdout
    every = int(cfg.get("checkpoint_every", 1))
    last = time.perf_counter()
    out.write(f"C {start} {{}}\n")
    out.flush()
    for seed in range(start, start + count):
        try:
            outcome, detail = runner.run(seed)
        except Exception as e:
            outcome, detail = "harness-error", "".join(traceback.format_exception(e))[-1500:]
        counts[outcome] += 1
        if detail is not None and outcome not in ("accepted", "rejected"):
            rec = {"kind": kind, "seed": seed, "category": outcome, "detail": detail}
            out.write(f"F {json.dumps(rec)}\n")
            out.flush()
        now = time.perf_counter()
        if (seed - start + 1) % every == 0 or now - last > 1.0:
            out.write(f"C {seed + 1} {json.dumps(counts)}\n")
            out.flush()
            last = now
    out.write(f"S {json.dumps(counts)}\n")
    out.flush()
    runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
