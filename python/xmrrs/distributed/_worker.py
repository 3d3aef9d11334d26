"""What every task of :mod:`xmrrs.distributed` does on its worker: the test hook that delays
the training and prediction tasks, the thread count of a task, and aligned copies of the
arrays Dask hands a task."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.sparse as sp

# test hook: seconds each training or prediction task sleeps first (set on the workers with
# client.run(_set_task_delay, s); a restarted worker starts at 0)
_TASK_DELAY = 0.0


def _set_task_delay(seconds: float) -> None:
    global _TASK_DELAY
    _TASK_DELAY = float(seconds)


def _delay() -> None:
    if _TASK_DELAY > 0:
        time.sleep(_TASK_DELAY)


def _worker_threads(n_jobs: int | None) -> int | None:
    """``n_jobs``, or the worker's thread count when None (no oversubscription)."""
    if n_jobs is not None:
        return n_jobs
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def _aligned(m: Any) -> Any:
    """``m`` with aligned arrays: Dask may hand a task arrays deserialised at odd offsets,
    which numpy marks unaligned and the core's buffer views refuse; those are copied (a
    tuple: each of its members)."""
    from xmrrs.hybrid import HybridMatrix

    if isinstance(m, tuple):
        return tuple(_aligned(v) for v in m)
    if isinstance(m, HybridMatrix):
        return HybridMatrix(_aligned(m.sparse), _aligned(m.dense))
    if not sp.issparse(m):
        return np.require(m, requirements=("C", "A")) if isinstance(m, np.ndarray) else m
    m = sp.csr_matrix(m)
    if all(a.flags.aligned for a in (m.indptr, m.indices, m.data)):
        return m
    return sp.csr_matrix(
        (np.array(m.data), np.array(m.indices), np.array(m.indptr)), shape=m.shape, copy=False
    )
