"""The hierarchical k-means tree with only the root's split on the client: the level-1
sub-trees, bundled into parts, are grown by tasks in rounds (as many levels a round as the
node indices are known: every level of a balanced tree, two of an unbalanced one)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmrrs import _xmrrs
from xmrrs._validation import csr_parts, to_scipy
from xmrrs.distributed._parts import _lpt
from xmrrs.distributed._representation import ZPieces, zrows_task
from xmrrs.distributed._run import _Run
from xmrrs.distributed._worker import _aligned, _delay, _worker_threads
from xmrrs.indexing import ClusterTree, HierarchicalKMeans

# levels split by _split_levels in this process: (first level, levels, nodes) per call
# (statistics, and the tests' check of where the k-means ran)
_SPLITS: list[tuple[int, int, int]] = []


def _split_levels(
    z: Any,
    n_labels: int,
    level: int,
    node_ptr: np.ndarray,
    labels: np.ndarray,
    first: list[np.ndarray],
    kw: dict[str, Any],
    n_jobs: int | None,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Grows the sub-trees under some nodes of ``level`` for ``len(first)`` levels (the
    core's ``kmeans_split_subtrees``; ids local to the rows of ``z``)."""
    _SPLITS.append((level, len(first), int(node_ptr.shape[0] - 1)))
    zc = csr_parts(_aligned(z), "Z") if sp.issparse(z) else _aligned(z)
    ptrs, ends, perm = _xmrrs.kmeans_split_subtrees(
        zc,
        n_labels,
        level,
        _aligned(node_ptr),
        _aligned(labels),
        [_aligned(f) for f in first],
        n_jobs=n_jobs,
        **kw,
    )
    return list(ptrs), ends, perm


def _kmeans_part(
    z: Any,
    n_labels: int,
    level: int,
    node_ptr: np.ndarray,
    labels: np.ndarray,
    first: list[np.ndarray],
    kw: dict[str, Any],
) -> tuple[tuple[list[np.ndarray], np.ndarray, np.ndarray], float]:
    """The task of one part and round of the sub-tree clustering."""
    _delay()
    t0 = time.perf_counter()
    n_jobs = _worker_threads(kw.pop("n_jobs", None))
    out = _split_levels(z, n_labels, level, node_ptr, labels, first, kw, n_jobs)
    return out, time.perf_counter() - t0


def _child_sizes(n: int, c: int) -> list[int]:
    """Sizes of the children of a balanced node of ``n`` labels at a level of fan-out ``c``
    (as the core splits it: ``min(c, n)`` children, the first ``n mod c`` one larger)."""
    c = min(c, n)
    return [n // c + (j < n % c) for j in range(c)]


def _ahead(sizes: Sequence[int], fanouts: Sequence[int], level: int, balanced: bool) -> list[Any]:
    """For the nodes of ``level`` (all of them, in order, of these sizes): the index of each
    node's first descendant at each level below, as far as the sizes tell. A node of ``n``
    labels has ``min(c, n)`` children, so the next level's indices are always known; in a
    balanced tree the children's sizes follow as well, hence every level's indices."""
    depth = len(fanouts)
    levels = depth - level if balanced else min(2, depth - level)
    first = [np.arange(len(sizes), dtype=np.int64)]
    desc: list[list[int]] = [[int(n)] for n in sizes]
    for j in range(1, levels):
        c = fanouts[level + j - 1]
        if balanced:
            desc = [[m for n in d for m in _child_sizes(n, c)] for d in desc]
            counts = [len(d) for d in desc]
        else:  # only the next level: counts from the sizes
            counts = [min(c, d[0]) for d in desc]
        first.append(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))
    return first


def _cluster_tree(
    run: _Run,
    Z: Any,
    indexer: HierarchicalKMeans,
    i: int,
    n_parts: int | None,
    n_jobs: int | None,
    timings: dict[str, Any],
    source: ZPieces | None = None,
    release: bool = False,
) -> ClusterTree:
    """The tree ``indexer.fit(Z)`` builds, with only the root's split on the client: the
    level-1 sub-trees are grown by tasks (bundled into parts), from their rows of ``Z``,
    as many levels per round as the node indices are known (see ``_ahead``). With
    ``source`` (``Z``'s pieces on the workers) a part's rows are taken from the pieces
    there, else sent from the client; ``release``: the last tree to read the pieces."""
    kw = indexer._core_params()
    # the rows as HierarchicalKMeans.fit hands them to the core (which canonicalises rows)
    z = to_scipy(csr_parts(Z, "Z")) if sp.issparse(Z) else HierarchicalKMeans._core_z(Z)
    n = int(z.shape[0])
    if n == 0:
        raise ValueError("Z has no rows (no labels to cluster)")
    fanouts = kw["fanouts"]
    if fanouts is None:
        fanouts = _xmrrs.kmeans_fanouts(n, kw["branching"], kw["max_leaf_size"])
    depth = len(fanouts)
    if depth <= 1:  # nothing below the root's split
        return indexer.fit(Z).tree_
    balanced = bool(kw["balanced"])
    # the root's split, on the client
    ptrs, ends, perm = _split_levels(
        z,
        n,
        0,
        np.array([0, n], np.int64),
        np.arange(n, dtype=np.int64),
        [np.zeros(1, np.int64)],
        kw,
        n_jobs,
    )
    child_ptrs: list[np.ndarray] = [np.asarray(ptrs[0], np.int64)]
    ends = np.asarray(ends, np.int64)
    perm = np.asarray(perm, np.int64)
    # the nodes of the current level, in tree order: their labels (global ids, sorted)
    nodes = [perm[a:b] for a, b in itertools.pairwise(ends)]
    n_roots = len(nodes)
    root_of = np.arange(n_roots)
    # parts: level-1 sub-trees bundled by the stored values of their rows of Z
    row_nnz = np.diff(z.indptr) if sp.issparse(z) else np.full(n, z.shape[1])
    cost = np.array([float(row_nnz[ls].sum()) + len(ls) for ls in nodes])
    workers = max(1, len(run.client.scheduler_info(n_workers=-1)["workers"]))
    k = min(n_roots, n_parts if n_parts is not None else 2 * workers)
    part_of_root = _lpt(cost, k)
    ids, zf = [], []
    for j in range(k):
        mine = np.sort(np.concatenate([nodes[r] for r in np.flatnonzero(part_of_root == j)]))
        ids.append(mine)
        name = f"zrows-t{i}-part{j}"
        if source is not None:
            zf.append(zrows_task(run, name, source, mine, priority=10**9))
            continue
        zj = z[mine] if sp.issparse(z) else np.ascontiguousarray(z[mine])
        # in the graph (not scattered), so that a lost part is recomputed like a block
        zf.append(run.submit(name, _aligned, zj, priority=10**9))
    if source is not None and release:
        source.release()
    level = 1
    while level < depth:
        first = _ahead([len(v) for v in nodes], fanouts, level, balanced)
        levels = len(first)
        futs, members = [], []
        for j in range(k):
            mine = np.flatnonzero(part_of_root[root_of] == j)
            if mine.size == 0:
                continue
            roots = np.flatnonzero(part_of_root == j)
            local = [np.searchsorted(ids[j], nodes[v]) for v in mine]
            node_ptr = np.concatenate([[0], np.cumsum([len(a) for a in local])]).astype(np.int64)
            futs.append(
                run.submit(
                    f"kmeans-t{i}-l{level}_{level + levels - 1}-n{roots[0]}_{roots[-1]}-part{j}",
                    _kmeans_part,
                    zf[j],
                    n,
                    level,
                    node_ptr,
                    np.concatenate(local).astype(np.int64),
                    [f[mine] for f in first],
                    dict(kw, n_jobs=n_jobs),
                    priority=10**9,
                )
            )
            members.append((j, mine))
        done = run.client.gather(futs)
        # every node reached, keyed by its path from its node of `level` (tree order)
        counts: list[dict[tuple[int, ...], int]] = [{} for _ in range(levels)]
        leaves: dict[tuple[int, ...], tuple[np.ndarray, int]] = {}
        for (j, mine), ((cps, fin, lab), secs) in zip(members, done, strict=True):
            name = f"t{i}-l{level}_{level + levels - 1}-part{j}"
            timings.setdefault("kmeans", []).append((name, secs))
            paths: list[tuple[int, ...]] = [(int(v),) for v in mine]
            for t, cp in enumerate(cps):
                cp = np.asarray(cp, np.int64)
                nxt: list[tuple[int, ...]] = []
                for q, path in enumerate(paths):
                    c = int(cp[q + 1] - cp[q])
                    counts[t][path] = c
                    nxt.extend((*path, r) for r in range(c))
                paths = nxt
            lab = ids[j][np.asarray(lab, np.int64)]
            for q, path in enumerate(paths):
                leaves[path] = (lab[fin[q] : fin[q + 1]], int(root_of[path[0]]))
        for t in range(levels):
            order = sorted(counts[t])
            if len(order) != (len(nodes) if t == 0 else int(child_ptrs[-1][-1])):
                raise RuntimeError("internal: the sub-tree parts do not cover a level")
            if t > 0:  # the indices the parts used are those of the assembled level
                at = {p[0]: q for q, p in reversed(list(enumerate(order)))}
                if any(at[v] != first[t][v] for v in at):
                    raise RuntimeError("internal: sub-tree node indices disagree")
            sizes = np.array([counts[t][p] for p in order], np.int64)
            child_ptrs.append(np.concatenate([[0], np.cumsum(sizes)]))
        order = sorted(leaves)
        nodes = [leaves[p][0] for p in order]
        root_of = np.array([leaves[p][1] for p in order], np.int64)
        level += levels
    leaf_ptr = np.concatenate([[0], np.cumsum([len(v) for v in nodes])]).astype(np.int64)
    return ClusterTree(child_ptrs, leaf_ptr, np.concatenate(nodes))
