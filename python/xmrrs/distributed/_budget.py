"""The memory budget of the top-layer task: the share of the rows it may gather.

The top layer (the root's children) trains on every row, in one task that gathers the row
blocks. That task holds about :data:`TOP_COPIES` copies of what it gathers (the blocks and
the solver's renumbered copy). Measured with ``bench_distributed.py``'s 1M rows of 35.5M
non-zeros: gathering every row rather than 10% of them raised the worker's peak by 443 MiB,
1.8 times the 244 MiB of values and indices (float32, int32) of the extra 90%.

When the blocks would not fit the budget (by default half of the smallest worker
``memory_limit``: Dask pauses a worker at 80% and restarts it at 95%), the task trains on a
hashed sample of the rows instead, the share that fits: the model is then the one-process
``fit`` with ``top_max_samples`` set to that share.
"""

from __future__ import annotations

import numbers
from typing import Any

#: copies of the gathered rows that the top task holds at its peak
TOP_COPIES = 2

#: below this share the top layer would learn from too few rows: an error, not a sample
MIN_SHARE = 0.01


def check_top_memory(value: Any) -> int | str | None:
    """``top_memory`` checked: ``"auto"``, ``None`` or a number of bytes >= 1."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 1:
        return int(value)
    raise ValueError(f"top_memory must be 'auto', None or a number of bytes >= 1, got {value!r}")


def worker_budget(client: Any) -> int | None:
    """Half of the smallest worker ``memory_limit`` (``None`` when no worker has one)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    limits = [m for m in limits if m > 0]
    return min(limits) // 2 if limits else None


def top_share(nbytes: int, budget: int | None) -> float:
    """The share of the rows whose :data:`TOP_COPIES` copies fit ``budget`` bytes (1.0 when
    all of them do, or without a budget).

    Raises
    ------
    ValueError
        When even :data:`MIN_SHARE` of the rows would not fit.
    """
    need = TOP_COPIES * nbytes
    if budget is None or need <= budget:
        return 1.0
    share = budget / need
    if share < MIN_SHARE:
        raise ValueError(
            f"the top layer's task cannot hold {MIN_SHARE:.0%} of the rows in its budget of "
            f"{budget / 2**20:.0f} MiB (all rows: {TOP_COPIES} x {nbytes / 2**20:.0f} MiB); "
            "give the workers more memory, or set top_max_samples or top_memory"
        )
    # a float share round-trips through top_max_samples exactly
    return float(share)
