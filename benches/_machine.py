"""Machine description, load check and process memory, shared by the benchmark scripts.

Only the standard library is imported, so the worker processes of the benchmarks can use
this module from either virtual environment (xmrrs's or the peers').
"""

from __future__ import annotations

import json
import os
import platform
import resource
import warnings
from pathlib import Path
from typing import Any

#: A run is marked "busy" when the 1-minute load average exceeds this many processes per core.
BUSY_LOAD_PER_CORE = 0.5


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or what :mod:`platform` knows)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15-minute load averages (zeros where the platform has none)."""
    return os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)


def check_load(what: str = "") -> tuple[float, bool]:
    """The 1-minute load average now and whether it exceeds ``BUSY_LOAD_PER_CORE`` per core;
    prints a warning when it does."""
    load1 = load_average()[0]
    cores = os.cpu_count() or 1
    busy = load1 > BUSY_LOAD_PER_CORE * cores
    if busy:
        where = f" before {what}" if what else ""
        print(
            f"WARNING: machine busy{where}: 1-minute load {load1:.2f} on {cores} cores "
            f"(> {BUSY_LOAD_PER_CORE} per core); timings are noisy",
            flush=True,
        )
    return round(load1, 2), busy


def machine() -> dict[str, object]:
    """Cores, CPU model, load average and Python version, for the result tables."""
    load = load_average()
    cores = os.cpu_count() or 1
    if load[0] > BUSY_LOAD_PER_CORE * cores:
        warnings.warn(
            f"machine busy: load average {load[0]:.2f} on {cores} cores; timings are noisy",
            stacklevel=2,
        )
    return {
        "cores": cores,
        "cpu": cpu_model(),
        "load1": round(load[0], 2),
        "python": platform.python_version(),
    }


def _status_mb(key: str) -> float:
    """A ``/proc/self/status`` memory field of this process (MB), NaN where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident set size of this process's own address space so far (MB): ``VmHWM``.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used for this: Linux carries it over
    ``fork``/``execve`` (the child starts with the parent's high-water mark), so in a worker
    started by a big parent it reports the parent's peak, not the worker's.
    """
    return _status_mb("VmHWM")


def ru_maxrss_mb() -> float:
    """``ru_maxrss`` in MB (KiB on Linux); see :func:`peak_rss_mb` for why it can mislead."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_results(out: str | Path, lines: list[str], records: list[dict[str, Any]]) -> None:
    """Write the Markdown table to ``out``, append the records as JSON lines beside it, and
    print the table."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    with open(path.with_suffix(".jsonl"), "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    print("\n".join(lines))
