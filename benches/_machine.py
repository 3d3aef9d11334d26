"""Machine description and load check shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import platform
import warnings
from pathlib import Path
from typing import Any


def machine() -> dict[str, object]:
    """Cores, CPU model, load average and library versions, for the result tables."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    cores = os.cpu_count() or 1
    if load[0] > 0.5 * cores:
        warnings.warn(
            f"machine busy: load average {load[0]:.2f} on {cores} cores; timings are noisy",
            stacklevel=2,
        )
    return {
        "cores": cores,
        "cpu": cpu,
        "load1": round(load[0], 2),
        "python": platform.python_version(),
    }


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
