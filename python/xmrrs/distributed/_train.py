"""The models of one tree: the top layer on every row (or on the rows of its sample,
``top_max_samples``) in one task, the level-1 sub-trees
bundled into parts by cost, each part one task on the rows that reach it (sliced from each
block where it lives), and the parts assembled into the model."""

from __future__ import annotations

import operator
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmrrs import _xmrrs
from xmrrs._validation import csr_parts
from xmrrs.distributed._parts import _lpt
from xmrrs.distributed._run import _Run
from xmrrs.distributed._worker import _aligned, _delay, _worker_threads
from xmrrs.hybrid import HybridMatrix
from xmrrs.indexing import ClusterTree


def _costs(block: tuple[Any, ...], node_of_label: np.ndarray, n_nodes: int) -> np.ndarray:
    """Per level-1 node: label entries of the block's rows under it, each weighted by the
    row's feature count (the work of the sub-tree's label layer, roughly; a dense block
    counts its width)."""
    x, y = _aligned(block[0]), _aligned(block[1])
    if isinstance(x, HybridMatrix):
        nnz = np.diff(x.sparse.indptr).astype(np.float64) + x.n_dense
    else:
        nnz = np.diff(x.indptr).astype(np.float64)
    rows = np.repeat(np.arange(y.shape[0]), np.diff(y.indptr))
    return np.bincount(node_of_label[y.indices], weights=nnz[rows], minlength=n_nodes)


def _rows(block: tuple[Any, ...], r: np.ndarray) -> tuple[Any, ...]:
    """Rows ``r`` of every matrix of the block (``X``, ``Y`` and the relevance, if any)."""
    return tuple(_aligned(m)[r] for m in block)


def _split(
    block: tuple[Any, ...], node_of_label: np.ndarray, part_of_node: np.ndarray, n_parts: int
) -> list[tuple[Any, ...]]:
    """The block's rows that reach each part (rows with a label in its sub-trees), in order."""
    y = _aligned(block[1])
    rows = np.repeat(np.arange(y.shape[0]), np.diff(y.indptr))
    hit = np.zeros((n_parts, y.shape[0]), dtype=bool)
    hit[part_of_node[node_of_label[y.indices]], rows] = True
    return [_rows(block, np.flatnonzero(hit[j])) for j in range(n_parts)]


def _sample(block: tuple[Any, ...], seed: int, start: int, fraction: float) -> tuple[Any, ...]:
    """The block's rows in the top layer's sample (global rows from ``start``)."""
    n = _aligned(block[0]).shape[0]
    return _rows(block, _xmrrs.xr_top_sample_rows(seed, start, n, fraction))


def _top_sample(
    run: _Run, futs: list[Any], block_rows: list[int], seed: int, fraction: float, i: int
) -> list[Any]:
    """The blocks the top layer of tree ``i`` trains on: all of them, or (``fraction < 1``)
    each block's rows in the sample, chosen where the block lives."""
    if fraction >= 1.0:
        return futs
    starts = np.concatenate([[0], np.cumsum(block_rows)[:-1]]).tolist()
    return [
        run.submit(f"top-sample-t{i}-block{b}", _sample, f, seed, int(s), fraction)
        for b, (f, s) in enumerate(zip(futs, starts, strict=True))
    ]


def _stack(blocks: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The blocks' ``X``, ``Y`` (and relevance) stacked."""
    out: list[Any] = []
    for m in zip(*blocks, strict=True):
        mats = [_aligned(a) for a in m]
        if len(mats) == 1:
            out.append(mats[0])
        elif isinstance(mats[0], HybridMatrix):
            out.append(
                HybridMatrix(
                    sp.vstack([h.sparse for h in mats], format="csr"),
                    np.vstack([h.dense for h in mats]),
                )
            )
        else:
            out.append(sp.vstack(mats, format="csr"))
    return tuple(out)


def _train_part(
    tree_parts: Any,
    level: int,
    roots: np.ndarray,
    last_layer: int,
    kw: dict[str, Any],
    *blocks: tuple[Any, Any],
) -> tuple[list[Any], float]:
    """Trains the layers ``level..last_layer`` under ``roots`` on the rows given."""
    _delay()
    t0 = time.perf_counter()
    x, y, *r = _stack(blocks)
    del blocks
    tree_parts = (
        [_aligned(a) for a in tree_parts[0]],
        _aligned(tree_parts[1]),
        _aligned(tree_parts[2]),
    )
    roots = _aligned(roots)
    xd = None
    if isinstance(x, HybridMatrix):
        x, xd = x.sparse, x.dense
    parts = _xmrrs.xr_train_subtrees(
        csr_parts(x, "X"),
        csr_parts(y, "Y"),
        tree_parts,
        level,
        roots,
        last_layer,
        n_jobs=_worker_threads(kw.pop("n_jobs", None)),
        relevance=csr_parts(r[0], "relevance") if r else None,
        x_dense=xd,
        **kw,
    )
    return parts, time.perf_counter() - t0


def _train_tree(
    run: _Run,
    futs: list[Any],
    top: list[Any],
    tree: ClusterTree,
    kw: dict[str, Any],
    i: int,
    n_features: int,
    n_parts: int | None,
    progress: bool,
    timings: dict[str, Any],
) -> tuple[Any, list[float]]:
    tree_parts = (tree.child_ptrs, tree.leaf_ptr, tree.labels)
    depth = tree.depth
    jobs = []
    # the top layer (the whole model for a one-leaf tree) on every row, or on the sample
    jobs.append(
        run.submit(
            f"top-t{i}-layer0",
            _train_part,
            tree_parts,
            0,
            np.zeros(1, np.uint32),
            0,
            dict(kw),
            *top,
            priority=10**9,
        )
    )
    names = [f"t{i}-top"]
    if depth > 0:
        n_nodes = tree.n_nodes_per_level[1]
        # the level-1 ancestor of every leaf, then of every label
        anc = np.arange(tree.n_leaves, dtype=np.int64)
        for t in range(depth - 1, 0, -1):
            parent = np.repeat(
                np.arange(tree.n_nodes_per_level[t], dtype=np.int64),
                np.diff(tree.child_ptrs[t].astype(np.int64)).astype(np.int64),
            )
            anc = parent[anc]
        node_of_label = anc[tree.leaf_of_label]
        costs = run.client.gather(
            [
                run.submit(f"costs-t{i}-block{b}", _costs, f, node_of_label, n_nodes)
                for b, f in enumerate(futs)
            ]
        )
        cost = np.sum(costs, axis=0)
        workers = max(1, len(run.client.scheduler_info(n_workers=-1)["workers"]))
        k = min(n_nodes, n_parts if n_parts is not None else 2 * workers)
        part_of_node = _lpt(cost, k)
        timings.setdefault("subtrees", []).append(
            {"cost": cost.tolist(), "part": part_of_node.tolist()}
        )
        splits = [
            run.submit(f"split-t{i}-block{b}", _split, f, node_of_label, part_of_node, k)
            for b, f in enumerate(futs)
        ]
        order = np.argsort(-np.bincount(part_of_node, weights=cost, minlength=k), kind="stable")
        for rank, j in enumerate(order):
            roots = np.flatnonzero(part_of_node == j).astype(np.uint32)
            label = f"subtrees-t{i}-n{roots[0]}_{roots[-1]}-part{j}"
            pieces = [
                run.submit(f"piece-t{i}-part{j}-block{b}", operator.getitem, s, int(j))
                for b, s in enumerate(splits)
            ]
            jobs.append(
                run.submit(
                    label,
                    _train_part,
                    tree_parts,
                    1,
                    roots,
                    depth,
                    dict(kw),
                    *pieces,
                    priority=k - rank,
                )
            )
            names.append(f"t{i}-part{j}-nodes{roots.tolist()}")
    done = run.gather(jobs, progress)
    parts = []
    for name, (p, secs) in zip(names, done, strict=True):
        timings.setdefault("tasks", []).append((name, secs))
        parts.extend(p)
    model = _xmrrs.xr_assemble(
        tree_parts,
        [
            (p[0], _aligned(p[1]), tuple(_aligned(a) for a in p[2]), _aligned(p[3]), _aligned(p[6]))
            for p in parts
        ],
        n_features,
    )
    passes = np.zeros(depth + 1)
    for p in parts:
        passes[p[0]] += p[4]
    n_children = [*tree.n_nodes_per_level[1:], tree.n_labels]
    return model, (passes / np.maximum(1, n_children)).tolist()
