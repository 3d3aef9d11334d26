"""Bundling the level-1 sub-trees into parts (the tasks of the sub-tree k-means and of the
sub-tree training) balanced by their cost."""

from __future__ import annotations

import numpy as np


def _lpt(costs: np.ndarray, n_parts: int) -> np.ndarray:
    """Part of each node: largest cost first into the least loaded part (ties: lower id)."""
    load = np.zeros(n_parts)
    part = np.zeros(costs.shape[0], dtype=np.int64)
    for v in np.argsort(-costs, kind="stable"):
        j = int(np.argmin(load))
        part[v] = j
        load[j] += costs[v]
    return part
