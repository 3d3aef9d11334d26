"""Training and batch inference on a Dask cluster (the optional ``dask`` extra).

``pip install "xmrrs[dask]"`` installs ``dask[distributed]``; ``import xmrrs`` never imports
dask, only ``import xmrrs.distributed`` does.

The data stay partitioned: a list of row blocks, each an ``(X_i, Y_i)`` pair of matrices,
a :func:`dask.delayed` object (or a pair of them) computing to such a pair, the path of an
XC text file, or an ``(x.npz, y.npz)`` pair of paths, on storage the workers can read.

:func:`fit` trains an ordinary :class:`~xmrrs.estimator.XRLinearClassifier` (``models_``,
``tree_``, ``classes_``; it saves, maps and serves as any):

1. *blocks*: each block is loaded (and its rows L2-normalised, when the estimator
   normalises and any row of any block is not of unit norm, the same global decision as
   ``fit``) by a task; in-memory blocks travel inside the task graph, so a lost block is
   recomputed like any other task.
2. *label representation*: PIFA is ``normalize(Yn^T X)`` summed over the row blocks. With
   ``exact_representation=True`` (the default) the blocks are summed as a chain, each step
   continuing the running sum of the previous one in the order of the one-process product,
   so ``Z`` is bit-identical to :func:`~xmrrs.indexing.label_representation` (the steps
   run one after the other; the running sum, one row per label, moves between workers).
   With ``False`` the partial products are computed in parallel and added pairwise in float32:
   entries then agree to about 1e-6 (relative) with the one-process ``Z``, and the tree may
   differ. ``"pii"``/``"spectral"`` (and the PII view of the mixed ensemble) need only
   ``Y``, which is gathered on the client (one integer and one float per label entry).
3. *tree*: exactly the tree ``fit`` builds (same seeds, same shapes), or given as
   ``indexer=ClusterTree``. With hierarchical k-means (the default indexer) the client
   splits only the root; the level-1 sub-trees are bundled into parts (by the stored values
   of their rows of ``Z``) and grown by tasks, each from its own rows of ``Z``. A node's
   k-means stream is derived from its index within its level, which depends on the nodes
   of the other sub-trees: a node of ``n`` labels has ``min(c, n)`` children, so the
   indices of a level are known once the sizes of the level above are. Balanced trees
   (sizes follow from sizes) are grown to the leaves in one round; unbalanced ones two
   levels a round, the client gathering the sizes (and labels) in between. Other indexers
   run on the client.
4. *models*: the top layer (the root's children, trained on every row) is one task that
   gathers every row block on one worker: that is the only place where all of ``X`` meets.
   Every node of tree level 1 roots a sub-tree; the sub-trees are bundled into parts
   balanced by their cost (label entries of their rows, weighted by the rows' feature
   counts; largest first into the least loaded part), and each part is one task that
   receives only the rows with a label in its sub-trees (sliced from each block where the
   block lives). With ``tfn`` negatives the sub-problems are exactly those of one-process
   training (same rows in the same order, same seeds), so the assembled model is
   bit-identical to ``fit`` on the concatenated blocks.

Task keys name their part (``xmrrs-top-...``, ``xmrrs-subtrees-t0-n3_17-...``: tree 0, level-1
nodes 3..17; ``xmrrs-kmeans-t0-l1_4-n3_17-...``: the k-means of levels 1..4 under those), and
``progress=True`` shows ``distributed.progress`` bars. Every task is submitted with
``retries``; a worker that dies is replaced by its nanny and its tasks (and the blocks it
held) are recomputed by the scheduler, so the result does not change.

:func:`predict_topk` maps a saved model over row blocks: each worker process loads the model
once with ``mmap=True`` and caches it (keyed by path and file modification time).

Not supported (``ValueError``): ``negatives="man"`` or ``"tfn+man"`` (the beam of the
layers above on every training row would be another map over the blocks per layer),
``relevance``, label-list targets, and a callable ``representation``.
"""

from __future__ import annotations

import itertools
import operator
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from xmrrs import _xmrrs
from xmrrs import sparse as xs
from xmrrs._targets import as_indicator
from xmrrs._validation import csr_parts, to_scipy
from xmrrs.estimator import XRLinearClassifier
from xmrrs.indexing import (
    ClusterTree,
    HierarchicalKMeans,
    _as_csr,
    _fill_empty,
    label_representation,
)

try:
    import distributed as _distributed  # noqa: F401
except ImportError as e:  # pragma: no cover - the dev extra installs it
    raise ImportError("xmrrs.distributed needs dask.distributed: pip install 'xmrrs[dask]'") from e

__all__ = ["fit", "pifa", "predict_topk"]

# test hook: seconds each training or prediction task sleeps first (set on the workers with
# client.run(_set_task_delay, s); a restarted worker starts at 0)
_TASK_DELAY = 0.0
_MODELS: dict[tuple[str, int, int | None], XRLinearClassifier] = {}
_MODELS_LOCK = threading.Lock()


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


# ---------------------------------------------------------------------------- block tasks


def _aligned(m: Any) -> Any:
    """``m`` with aligned arrays: Dask may hand a task arrays deserialised at odd offsets,
    which numpy marks unaligned and the core's buffer views refuse; those are copied."""
    if not sp.issparse(m):
        return np.require(m, requirements=("C", "A")) if isinstance(m, np.ndarray) else m
    m = sp.csr_matrix(m)
    if all(a.flags.aligned for a in (m.indptr, m.indices, m.data)):
        return m
    return sp.csr_matrix(
        (np.array(m.data), np.array(m.indices), np.array(m.indptr)), shape=m.shape, copy=False
    )


def _load(src: Any) -> tuple[Any, Any]:
    if isinstance(src, str | os.PathLike):
        from xmrrs.datasets import load_xc

        return load_xc(src, n_jobs=1)
    x, y = src
    if isinstance(x, str | os.PathLike):
        from xmrrs.datasets import load_npz

        return load_npz(x, y)
    return x, y


def _load_block(src: Any) -> tuple[sp.csr_matrix, sp.csr_matrix, bool]:
    """``(X, Y as a canonical 0/1 indicator, whether every row of X has unit norm)``."""
    x, y = _load(src)
    x, y = _aligned(x), _aligned(y)
    if not sp.issparse(x):
        x = sp.csr_matrix(np.asarray(x, dtype=np.float32))
    parts = csr_parts(x, "X")
    if parts[4].dtype.kind == "f" and not np.isfinite(parts[4]).all():
        raise ValueError("Input X contains NaN or infinity.")
    if isinstance(y, list):
        raise ValueError("distributed training needs Y blocks as indicator matrices")
    ym, _ = as_indicator(y, parts[0])
    unit = bool(_xmrrs.csr_rows_are_unit(parts, 1))
    return to_scipy(parts), ym, unit


def _normalized(block: tuple[Any, Any, bool], normalize: bool) -> tuple[Any, Any]:
    """The block as ``fit`` sees it: rows normalised when the global decision says so."""
    x, y, _ = block
    x, y = _aligned(x), _aligned(y)
    if normalize:
        x = to_scipy(_xmrrs.csr_normalize_rows(csr_parts(x, "X"), 1))
    return x, y


def _meta(block: tuple[Any, Any]) -> tuple[int, int, int]:
    x, y = block
    return int(x.shape[0]), int(x.shape[1]), int(y.shape[1])


def _pifa_step(prev: sp.csr_matrix | None, block: tuple[Any, Any]) -> sp.csr_matrix:
    """``prev + Yn_b^T X_b``, summed entry by entry in the order of the one-process product
    (``prev`` enters each label's sum first, multiplied by an exact 1)."""
    x = _as_csr(_aligned(block[0]), "X")
    yt = xs.transpose(xs.normalize_rows(_as_csr(_aligned(block[1]), "Y"), n_jobs=1), n_jobs=1)
    if prev is None:
        return xs.matmul(yt, x, n_jobs=1)
    n_labels = yt.shape[0]
    a = sp.hstack([sp.identity(n_labels, dtype=np.float32, format="csr"), yt], format="csr")
    b = sp.vstack([_aligned(prev), x], format="csr")
    return xs.matmul(a, b, n_jobs=1)


def _pifa_partial(block: tuple[Any, Any]) -> sp.csr_matrix:
    return _pifa_step(None, block)


def _add(a: sp.csr_matrix, b: sp.csr_matrix) -> sp.csr_matrix:
    return sp.csr_matrix(_aligned(a) + _aligned(b), dtype=np.float32)


def _costs(block: tuple[Any, Any], node_of_label: np.ndarray, n_nodes: int) -> np.ndarray:
    """Per level-1 node: label entries of the block's rows under it, each weighted by the
    row's feature count (the work of the sub-tree's label layer, roughly)."""
    x, y = _aligned(block[0]), _aligned(block[1])
    nnz = np.diff(x.indptr).astype(np.float64)
    rows = np.repeat(np.arange(y.shape[0]), np.diff(y.indptr))
    return np.bincount(node_of_label[y.indices], weights=nnz[rows], minlength=n_nodes)


def _split(
    block: tuple[Any, Any], node_of_label: np.ndarray, part_of_node: np.ndarray, n_parts: int
) -> list[tuple[sp.csr_matrix, sp.csr_matrix]]:
    """The block's rows that reach each part (rows with a label in its sub-trees), in order."""
    x, y = _aligned(block[0]), _aligned(block[1])
    rows = np.repeat(np.arange(y.shape[0]), np.diff(y.indptr))
    hit = np.zeros((n_parts, y.shape[0]), dtype=bool)
    hit[part_of_node[node_of_label[y.indices]], rows] = True
    out = []
    for j in range(n_parts):
        r = np.flatnonzero(hit[j])
        out.append((x[r], y[r]))
    return out


def _stack(blocks: Sequence[tuple[Any, Any]]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    xb = [_aligned(b[0]) for b in blocks]
    yb = [_aligned(b[1]) for b in blocks]
    if len(xb) == 1:
        return xb[0], yb[0]
    return sp.vstack(xb, format="csr"), sp.vstack(yb, format="csr")


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
    x, y = _stack(blocks)
    del blocks
    tree_parts = (
        [_aligned(a) for a in tree_parts[0]],
        _aligned(tree_parts[1]),
        _aligned(tree_parts[2]),
    )
    roots = _aligned(roots)
    parts = _xmrrs.xr_train_subtrees(
        csr_parts(x, "X"),
        csr_parts(y, "Y"),
        tree_parts,
        level,
        roots,
        last_layer,
        n_jobs=_worker_threads(kw.pop("n_jobs", None)),
        **kw,
    )
    return parts, time.perf_counter() - t0


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


# ------------------------------------------------------------------------------- client


def _client(client: Any) -> Any:
    if client is not None:
        return client
    from distributed import get_client

    return get_client()


def _is_delayed(obj: Any) -> bool:
    from dask.base import is_dask_collection

    return bool(is_dask_collection(obj))


def _source(client: Any, b: Any) -> Any:
    """A block source for ``_load_block``: dask collections become futures."""
    if _is_delayed(b):
        return client.compute(b)
    if isinstance(b, tuple | list) and len(b) == 2:
        return tuple(client.compute(v) if _is_delayed(v) else v for v in b)
    if isinstance(b, str | os.PathLike):
        return b
    raise ValueError(
        "each block must be an (X, Y) pair, a dask delayed (pair), an XC file path or an "
        f"(x.npz, y.npz) pair of paths; got {type(b).__name__}"
    )


class _Run:
    """Submits tasks with unique keys, retries and priorities; keeps their futures."""

    def __init__(self, client: Any, retries: int) -> None:
        self.client = client
        self.retries = retries
        self.token = uuid.uuid4().hex[:8]

    def submit(self, name: str, fn: Any, *args: Any, priority: int = 0) -> Any:
        return self.client.submit(
            fn,
            *args,
            key=f"xmrrs-{name}-{self.token}",
            retries=self.retries,
            priority=priority,
            pure=False,
        )

    def gather(self, futures: Any, progress: bool) -> Any:
        if progress:
            from distributed import progress as bar

            bar(futures)  # type: ignore[no-untyped-call]
        return self.client.gather(futures)


def _prepare(run: _Run, blocks: Sequence[Any], normalize: bool) -> tuple[list[Any], int, int, int]:
    """Futures of the (normalised) blocks, and the total rows, features and labels."""
    if len(blocks) == 0:
        raise ValueError("no blocks")
    raw = [
        run.submit(f"load-block{i}", _load_block, _source(run.client, b), priority=1)
        for i, b in enumerate(blocks)
    ]
    unit = run.client.gather(
        [run.submit(f"unit{i}", operator.itemgetter(2), r) for i, r in enumerate(raw)]
    )
    scale = normalize and not all(unit)
    futs = [run.submit(f"block{i}", _normalized, r, scale, priority=1) for i, r in enumerate(raw)]
    meta = run.client.gather([run.submit(f"meta{i}", _meta, f) for i, f in enumerate(futs)])
    del raw
    n_features = {m[1] for m in meta}
    n_labels = {m[2] for m in meta}
    if len(n_features) != 1 or len(n_labels) != 1:
        raise ValueError(
            f"blocks disagree on the number of features {sorted(n_features)} or labels "
            f"{sorted(n_labels)}"
        )
    return futs, sum(m[0] for m in meta), n_features.pop(), n_labels.pop()


def pifa(
    blocks: Sequence[Any],
    *,
    client: Any = None,
    exact: bool = True,
    normalize: bool = True,
    retries: int = 2,
) -> sp.csr_matrix:
    """PIFA label representation of row blocks (see the module docs; ``exact``: chained,
    bit-identical to :func:`~xmrrs.indexing.label_representation` on the stacked blocks
    with rows normalised as ``XRLinearClassifier(normalize=...)`` does)."""
    run = _Run(_client(client), retries)
    futs, _, _, _ = _prepare(run, blocks, normalize)
    return _pifa_of(run, futs, exact, None)


def _pifa_of(run: _Run, futs: list[Any], exact: bool, n_jobs: int | None) -> sp.csr_matrix:
    if exact:
        acc = None
        for i, f in enumerate(futs):
            acc = run.submit(f"pifa-step{i}", _pifa_step, acc, f)
        total = acc
    else:
        level = [run.submit(f"pifa-partial{i}", _pifa_partial, f) for i, f in enumerate(futs)]
        r = 0
        while len(level) > 1:
            nxt = [
                run.submit(f"pifa-sum{r}-{i}", _add, level[i], level[i + 1])
                for i in range(0, len(level) - 1, 2)
            ]
            if len(level) % 2:
                nxt.append(level[-1])
            level, r = nxt, r + 1
        total = level[0]
    s = _aligned(run.client.gather(total))
    if s.count_nonzero() == 0:
        raise ValueError("Y has no positive entry: there is nothing to represent labels by")
    return sp.csr_matrix(_fill_empty(xs.normalize_rows(s, n_jobs=n_jobs), n_jobs))


def _lpt(costs: np.ndarray, n_parts: int) -> np.ndarray:
    """Part of each node: largest cost first into the least loaded part (ties: lower id)."""
    load = np.zeros(n_parts)
    part = np.zeros(costs.shape[0], dtype=np.int64)
    for v in np.argsort(-costs, kind="stable"):
        j = int(np.argmin(load))
        part[v] = j
        load[j] += costs[v]
    return part


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
) -> ClusterTree:
    """The tree ``indexer.fit(Z)`` builds, with only the root's split on the client: the
    level-1 sub-trees are grown by tasks (bundled into parts), from their rows of ``Z``,
    as many levels per round as the node indices are known (see ``_ahead``)."""
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
        zj = z[mine] if sp.issparse(z) else np.ascontiguousarray(z[mine])
        # in the graph (not scattered), so that a lost part is recomputed like a block
        zf.append(run.submit(f"zrows-t{i}-part{j}", _aligned, zj, priority=10**9))
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


def _build_tree(
    run: _Run,
    estimator: XRLinearClassifier,
    Z: Any,
    n_labels: int,
    p: dict[str, Any],
    i: int,
    first: Any,
    n_parts: int | None,
    timings: dict[str, Any],
) -> ClusterTree:
    """Tree ``i`` as ``estimator`` builds it; hierarchical k-means below the root's split
    runs in tasks (other indexers on the client)."""
    if Z is None:
        return cast(ClusterTree, estimator._tree(Z, n_labels, p, i, first))
    indexer = estimator._indexer(p, i, first)
    if type(indexer) is not HierarchicalKMeans:
        return cast(ClusterTree, estimator._tree(Z, n_labels, p, i, first))
    tree = _cluster_tree(run, Z, indexer, i, n_parts, estimator.n_jobs, timings)
    estimator._check_tree(tree, n_labels)
    return tree


def _train_tree(
    run: _Run,
    futs: list[Any],
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
    # the top layer (the whole model for a one-leaf tree) on every row
    jobs.append(
        run.submit(
            f"top-t{i}-layer0",
            _train_part,
            tree_parts,
            0,
            np.zeros(1, np.uint32),
            0,
            dict(kw),
            *futs,
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
        [(p[0], _aligned(p[1]), tuple(_aligned(a) for a in p[2]), _aligned(p[3])) for p in parts],
        n_features,
    )
    passes = np.zeros(depth + 1)
    for p in parts:
        passes[p[0]] += p[4]
    n_children = [*tree.n_nodes_per_level[1:], tree.n_labels]
    return model, (passes / np.maximum(1, n_children)).tolist()


def fit(
    estimator: XRLinearClassifier,
    blocks: Sequence[Any],
    *,
    client: Any = None,
    retries: int = 2,
    n_parts: int | None = None,
    exact_representation: bool = True,
    progress: bool = False,
) -> XRLinearClassifier:
    """Fit ``estimator`` on row blocks with a Dask client (see the module docs).

    Parameters
    ----------
    estimator : XRLinearClassifier
        Its parameters are used as ``fit`` uses them (``negatives`` must be ``"tfn"``); it is
        fitted in place and returned. ``n_jobs`` sets the threads of each task (None: the
        worker's thread count).
    blocks : sequence
        Row blocks, in order: ``(X_i, Y_i)`` pairs, dask delayed objects (or pairs of them),
        XC file paths, or ``(x.npz, y.npz)`` path pairs.
    client : distributed.Client, optional
        Default: the current client (``distributed.get_client()``).
    retries : int, default=2
        Retries of every task (a worker's death is handled by the scheduler as well).
    n_parts : int, optional
        Sub-tree tasks per tree and round, for training and for clustering (default: twice
        the number of workers).
    exact_representation : bool, default=True
        Chain the PIFA sums so that ``Z`` (hence the tree and the model) is bit-identical to
        one-process ``fit``; ``False`` sums partial products in parallel (tolerance 1e-6).
    progress : bool, default=False
        Show ``distributed.progress`` bars of the training tasks.

    Returns
    -------
    estimator
        With ``models_``, ``tree_``, ``classes_``, ``n_iter_``, ``n_features_in_`` and
        ``timings_`` (seconds of the stages; ``tasks``: ``(name, seconds)`` of each training
        task; ``kmeans``: the same for each sub-tree clustering task; ``subtrees``: per tree,
        the cost estimate of each level-1 sub-tree and its part).
    """
    if not isinstance(estimator, XRLinearClassifier):
        raise TypeError("estimator must be an XRLinearClassifier")
    p = estimator._check_params()
    if p["negatives"] != "tfn":
        raise ValueError(
            f"distributed training supports negatives='tfn' only, got {p['negatives']!r}"
        )
    rep = estimator.representation
    if callable(rep) and not isinstance(rep, str):
        raise ValueError("distributed training needs a named or precomputed representation")
    for attr in (
        "models_",
        "tree_",
        "classes_",
        "n_iter_",
        "n_features_in_",
        "target_type_",
        "timings_",
    ):
        estimator.__dict__.pop(attr, None)
    run = _Run(_client(client), retries)
    timings: dict[str, Any] = {}
    t0 = time.perf_counter()
    futs, _, n_features, n_labels = _prepare(run, blocks, bool(estimator.normalize))
    timings["blocks"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    y_all: sp.csr_matrix | None = None

    def gathered_y() -> sp.csr_matrix:
        nonlocal y_all
        if y_all is None:
            ys = run.client.gather(
                [run.submit(f"y{b}", operator.itemgetter(1), f) for b, f in enumerate(futs)]
            )
            y_all = sp.vstack([_aligned(y) for y in ys], format="csr")
        return y_all

    Z: Any
    if isinstance(estimator.indexer, ClusterTree):
        if estimator.indexer.n_labels != n_labels:
            raise ValueError(
                f"the indexer tree has {estimator.indexer.n_labels} labels but Y has {n_labels}"
            )
        Z = None
    elif isinstance(rep, str) and rep == "pifa":
        Z = _pifa_of(run, futs, exact_representation, estimator.n_jobs)
    elif isinstance(rep, str):
        Z = label_representation(
            None,
            gathered_y(),
            cast(Any, rep),
            n_jobs=estimator.n_jobs,
            random_state=p["seed"],
        )
    else:
        Z = rep
        if Z is None or Z.shape[0] != n_labels:
            raise ValueError(
                f"the label representation must have one row per label ({n_labels}), got "
                f"{None if Z is None else Z.shape}"
            )
    timings["representation"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    trees = [_build_tree(run, estimator, Z, n_labels, p, 0, None, n_parts, timings)]
    pii_view = p["n_estimators"] > 2 and estimator._pii_view(trees[0])
    Z_pii = (
        label_representation(None, gathered_y(), "pii", n_jobs=estimator.n_jobs)
        if pii_view
        else None
    )
    for i in range(1, p["n_estimators"]):
        Zi = Z_pii if pii_view and i % 2 == 0 else Z
        trees.append(_build_tree(run, estimator, Zi, n_labels, p, i, trees[0], n_parts, timings))
    del Z, Z_pii, y_all
    timings["trees"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    models, n_iter = [], []
    for i, tree in enumerate(trees):
        kw = {
            "loss": p["loss"],
            "cp": p["cp"],
            "cn": p["cn"],
            "max_iter": p["max_iter"],
            "tol": p["tol"],
            "bias": p["bias"],
            "threshold": p["threshold"],
            "negatives": "tfn",
            "seed": p["seed"] + i,
            "n_jobs": estimator.n_jobs,
        }
        model, passes = _train_tree(run, futs, tree, kw, i, n_features, n_parts, progress, timings)
        models.append(model)
        n_iter.append(passes)
    timings["models"] = time.perf_counter() - t3
    estimator.n_iter_ = np.asarray(n_iter)
    estimator.models_ = models
    estimator.tree_ = trees[0]
    estimator.classes_ = np.arange(n_labels)
    estimator.target_type_ = "multilabel"  # indicator Y blocks only
    estimator.n_features_in_ = n_features
    estimator.timings_ = timings
    return estimator


# ------------------------------------------------------------------------------ inference


def _model(path: str) -> XRLinearClassifier:
    """The model at ``path``, loaded once per process with ``mmap=True``."""
    manifest = os.path.join(path, "xmrrs-model.json")
    st = os.stat(manifest)
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_ino)
    with _MODELS_LOCK:
        m = _MODELS.get(key)
        if m is None:
            for old in [k for k in _MODELS if k[0] == key[0]]:
                del _MODELS[old]
            m = XRLinearClassifier.load(path, mmap=True)
            _MODELS[key] = m
    return m


def _predict_block(
    path: str, src: Any, k: int | None, beam_size: int | None, n_jobs: int | None
) -> tuple[np.ndarray, np.ndarray]:
    _delay()
    x = _aligned(_load(src)[0] if isinstance(src, str | os.PathLike | tuple) else src)
    m = _model(path)
    m.n_jobs = _worker_threads(n_jobs)
    return m.predict_topk(x, k, beam_size=beam_size)


def predict_topk(
    path: str | os.PathLike[str],
    blocks: Sequence[Any],
    k: int | None = None,
    *,
    beam_size: int | None = None,
    client: Any = None,
    retries: int = 2,
    n_jobs: int | None = None,
    progress: bool = False,
    gather: bool = True,
) -> Any:
    """Top-``k`` labels of every row of the row blocks, with the model saved at ``path``.

    ``blocks`` are feature matrices, dask delayed objects computing to one, XC file paths
    or ``(x.npz, y.npz)`` path pairs (labels ignored). Returns ``(ids, scores)`` stacked in
    block order, as :meth:`XRLinearClassifier.predict_topk` on the stacked blocks would, or
    with ``gather=False`` one future per block (each resolving to ``(ids, scores)``).
    """
    run = _Run(_client(client), retries)
    path = os.fspath(path)
    _model(path)  # fail early on a bad path (and check the model on the client once)
    futs = []
    for i, b in enumerate(blocks):
        src = run.client.compute(b) if _is_delayed(b) else b
        futs.append(
            run.submit(f"predict-block{i}", _predict_block, path, src, k, beam_size, n_jobs)
        )
    if not gather:
        return futs
    out = run.gather(futs, progress)
    return np.vstack([o[0] for o in out]), np.vstack([o[1] for o in out])
