"""Semantic label indexing: label representations and the hierarchical k-means label tree.

- :func:`label_representation`: one row per label, built from the training data
  (``"pifa"``, ``"pii"``, ``"pifa_concat"``, ``"spectral"``).
- :class:`HierarchicalKMeans`: recursive B-ary k-means of those rows (Rust core,
  multithreaded, reproducible for a given ``random_state`` whatever ``n_jobs``).
- :class:`ClusterTree`: the resulting tree in its inference layout; it can also be built from
  any clustering with :meth:`ClusterTree.from_assignments`.

**Tree shape.** With ``K = ceil(n_labels / max_leaf_size)`` leaves needed, the depth is the
least ``D`` with ``branching**D >= K`` (a single leaf when ``K <= 1``). Every node of level
``t`` splits into ``c_t <= branching`` children, fan-outs as even as possible (``c_t`` is the
least ``c`` with ``c**(D - t) >= R_t``, ``R_0 = K``, ``R_{t+1} = ceil(R_t / c_t)``), so the
number of leaves ``P = prod(c_t)`` is the smallest such that leaves fit. All leaves sit at
depth ``D``. For example 44,677 labels with ``branching=16, max_leaf_size=100`` give fan-outs
8, 8, 7 (448 leaves of 99-100 labels).

**Balancing.** With ``balanced=True`` a node of ``n`` labels gives each child ``floor(n/c)``
or ``ceil(n/c)`` labels, so siblings differ by at most one and every leaf holds
``floor(L/P)`` or ``ceil(L/P)`` labels. The assignment is *greedy by margin*: labels are taken
in decreasing order of (best score - second-best score) and each joins its best child that
still has room (for two children this is a median cut, as in PECOS). With
``balanced=False`` labels join their best child, subject only to the most labels a child's
subtree can hold (so leaves still hold at most ``max_leaf_size``); empty children are refilled.

**Labels without positives.** Their PIFA/PII/spectral rows would be zero. They get the
*mean direction* instead: the L2-normalised sum of the other labels' rows (for sparse
representations restricted to its ``ceil(mean row nnz)`` largest entries, so memory stays
that of an average row), so they are never NaN and cluster with the "generic" labels.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from xmrrs import _xmrrs
from xmrrs import sparse as xs
from xmrrs._files import read_regular
from xmrrs._validation import csr_parts, dense_finite, to_scipy
from xmrrs.hybrid import HybridMatrix

__all__ = ["ClusterTree", "HierarchicalKMeans", "label_representation", "pecos_fanouts"]

Method: TypeAlias = Literal["pifa", "pii", "pifa_concat", "spectral"]
Representation: TypeAlias = sp.csr_matrix | np.ndarray
IntArray: TypeAlias = npt.NDArray[np.int64]

_FORMAT = "xmrrs.ClusterTree"
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# label representations
# --------------------------------------------------------------------------------------------


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_branching(value: Any) -> int | tuple[int, ...]:
    """Validate a ``branching``: an integer >= 2, or a non-empty sequence of per-level
    fan-outs >= 2 (a one-leaf tree comes from ``max_leaf_size >= n_labels``)."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if len(value) == 0:
            raise ValueError(
                "branching must list at least one fan-out; for a tree of a single leaf use an "
                "integer branching with max_leaf_size >= the number of labels"
            )
        return tuple(_check_int(c, "every fan-out in branching", 2) for c in value)
    return _check_int(value, "branching (an integer or a sequence of fan-outs)", 2)


def pecos_fanouts(n_labels: int, nr_splits: int = 16, max_leaf_size: int = 100) -> list[int]:
    """The per-level fan-outs of the tree PECOS builds, for ``branching=`` (matched runs).

    PECOS splits in two to depth ``D = max(1, ceil(log2(n_labels / max_leaf_size)))`` (one
    leaf if ``max_leaf_size >= n_labels``), then groups ``nr_splits`` consecutive nodes per
    level while more than ``nr_splits`` remain: 44,677 labels with ``nr_splits=16,
    max_leaf_size=100`` give ``[2, 16, 16]`` (512 leaves). ``nr_splits`` must be a power of 2
    (as PECOS recommends), so every level's groups are whole. ``[]`` means one leaf, which
    ``branching`` does not take: pass an integer branching then (``max_leaf_size`` covers
    every label).
    """
    n = _check_int(n_labels, "n_labels", 1)
    b = _check_int(nr_splits, "nr_splits", 2)
    m = _check_int(max_leaf_size, "max_leaf_size", 1)
    if b & (b - 1):
        raise ValueError(f"nr_splits must be a power of 2, got {b}")
    if m >= n:
        return []
    depth = 1
    while (m << depth) < n:
        depth += 1
    if (1 << depth) > n:
        raise ValueError(f"{n} labels are too few for a binary tree of depth {depth}")
    fanouts: list[int] = []
    count = 1 << depth
    while count > b:
        fanouts.append(b)
        count //= b
    return [count, *fanouts] if count > 1 else fanouts


def _check_seed(random_state: Any) -> int:
    if random_state is None:
        return 0
    if (
        isinstance(random_state, bool)
        or not isinstance(random_state, int | np.integer)
        or not 0 <= random_state < 2**64
    ):
        raise ValueError(
            f"random_state must be None or an integer in [0, 2**64), got {random_state!r}"
        )
    return int(random_state)


def _as_csr(a: Any, name: str) -> sp.csr_matrix:
    """A canonical CSR float32 copy of ``a`` (validated by the core: finite values...)."""
    return to_scipy(_xmrrs.csr_canonicalize(csr_parts(a, name), 1))


def _normalize_dense(a: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return np.asarray(a * scale[:, None], dtype=np.float32)


#: the error of a representation asked of a ``Y`` without any positive entry
_NO_POSITIVE = "Y has no positive entry: there is nothing to represent labels by"

# (column ids, values) of the row that all-zero label rows are given
Fill: TypeAlias = tuple[np.ndarray, np.ndarray]


def _column_sums(zc: sp.csr_matrix, acc: np.ndarray | None = None) -> np.ndarray:
    """Column sums of the CSR ``zc`` in float32, added row after row in storage order (as
    scipy's ``sum(axis=0)`` adds them), continuing ``acc`` when given: the sums of stacked
    pieces equal those of the whole, bit for bit."""
    out = np.zeros(zc.shape[1], np.float32) if acc is None else acc
    step = 1 << 24  # np.add.at adds in order; chunks bound its temporaries
    for a in range(0, zc.nnz, step):
        np.add.at(out, zc.indices[a : a + step], zc.data[a : a + step])
    return out


def _fill_of(sums: np.ndarray, nnz: int, n_rows: int, n_empty: int) -> Fill | None:
    """The row :func:`_fill_empty` gives the all-zero rows (``n_empty`` of ``n_rows``, which
    hold ``nnz`` values and have column sums ``sums``): the largest mean entries, as many as
    a row holds on average, unit norm; ``None`` when there is nothing to fill."""
    if n_empty == 0 or n_empty == n_rows:
        return None
    mean = sums.astype(np.float64)
    nz = np.flatnonzero(mean)
    keep = max(1, math.ceil(nnz / (n_rows - n_empty)))
    if nz.size > keep:
        order = np.argsort(-mean[nz], kind="stable")[:keep]
        nz = np.sort(nz[order])
    vals = mean[nz]
    norm = float(np.sqrt(np.dot(vals, vals)))
    if norm == 0.0:
        return None
    return nz.astype(np.int64), (vals / norm).astype(np.float32)


def _n_empty(zc: sp.csr_matrix) -> int:
    """All-zero (no stored value) rows of the CSR ``zc``."""
    return int(np.count_nonzero(np.diff(zc.indptr) == 0))


def _empty_fill(zc: sp.csr_matrix) -> Fill | None:
    """What :func:`_fill_empty` gives the all-zero rows of the CSR ``zc`` (see ``_fill_of``)."""
    n_empty = _n_empty(zc)
    if n_empty == 0 or n_empty == zc.shape[0]:
        return None
    return _fill_of(_column_sums(zc), int(zc.nnz), zc.shape[0], n_empty)


def _apply_fill(zc: sp.csr_matrix, fill: Fill | None, n_jobs: int | None) -> sp.csr_matrix:
    """The CSR ``zc`` with its all-zero rows given ``fill`` (row by row: rows of a matrix
    filled are the same rows filled alone)."""
    if fill is None:
        return zc
    return to_scipy(_xmrrs.csr_fill_empty_rows(csr_parts(zc, "Z"), *fill, n_jobs))


def _fill_empty(z: Representation, n_jobs: int | None) -> Representation:
    """Give all-zero rows the mean direction of the other rows (see the module docs)."""
    if sp.issparse(z):
        zc = sp.csr_matrix(z)
        return _apply_fill(zc, _empty_fill(zc), n_jobs)
    norms = np.einsum("ij,ij->i", z, z)
    empty = norms == 0
    if not empty.any() or empty.all():
        return z
    mean = z[~empty].sum(axis=0, dtype=np.float64)
    norm = float(np.sqrt(np.dot(mean, mean)))
    if norm > 0:
        z = z.copy()
        z[empty] = (mean / norm).astype(np.float32)
    return z


def _pifa(x: Any, yn: sp.csr_matrix, n_jobs: int | None) -> Representation:
    """Rows of ``normalize(Yn^T X)`` (``Yn``: Y with unit-norm rows)."""
    yt = xs.transpose(yn, n_jobs=n_jobs)
    if isinstance(x, HybridMatrix):
        # both blocks aggregated, then each label row normalised over both (as the same
        # columns in one CSR matrix would give); the dense block's part is dense per label
        zs = xs.matmul(yt, x.sparse, n_jobs=n_jobs)
        zd = xs.matmul_dense(yt, x.dense, n_jobs=n_jobs)
        z = HybridMatrix(zs, zd).normalized()
        return z.tocsr()
    if sp.issparse(x):
        return xs.normalize_rows(xs.matmul(yt, x, n_jobs=n_jobs), n_jobs=n_jobs)
    return _normalize_dense(xs.matmul_dense(yt, x, n_jobs=n_jobs))


def _spectral(y: sp.csr_matrix, n_components: int, seed: int) -> np.ndarray:
    """Spectral label embedding of the instance-weighted co-occurrence graph (see docs)."""
    from scipy.sparse.linalg import svds

    yb = y.copy()
    yb.data[:] = 1.0
    n, n_labels = yb.shape
    r = np.asarray(yb.sum(axis=1)).ravel()
    c = np.asarray(yb.sum(axis=0)).ravel()
    dr = np.divide(1.0, np.sqrt(r), out=np.zeros_like(r), where=r > 0)
    dc = np.divide(1.0, np.sqrt(c), out=np.zeros_like(c), where=c > 0)
    b = sp.csr_matrix(sp.diags(dr) @ yb.astype(np.float64) @ sp.diags(dc))
    k = min(n_components + 1, min(n, n_labels))
    if k < 2:
        return np.ones((n_labels, 1), dtype=np.float32) / 1.0
    if min(n, n_labels) <= max(64, 2 * k + 1):
        _, s, vt = np.linalg.svd(b.toarray(), full_matrices=False)
        v = vt[:k].T
    else:
        v0 = np.random.RandomState(seed % 2**32).uniform(-1.0, 1.0, min(n, n_labels))
        _, s, vt = svds(b, k=k, v0=v0, solver="arpack", random_state=seed % 2**32)
        order = np.argsort(-s, kind="stable")
        v = vt[order].T
    v = v[:, 1:]  # drop the trivial leading pair (singular value 1)
    # deterministic signs: the entry of largest magnitude of each vector is positive
    flip = np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(v.shape[1])])
    v = v * np.where(flip == 0, 1.0, flip)
    emb = v * dc[:, None]
    out = _normalize_dense(emb.astype(np.float32))
    if out.shape[1] < n_components:
        out = np.hstack([out, np.zeros((n_labels, n_components - out.shape[1]), np.float32)])
    return out


def label_representation(
    X: Any,
    Y: Any,
    method: Method = "pifa",
    *,
    embeddings: Any = None,
    embedding_weight: float = 1.0,
    n_components: int = 32,
    n_jobs: int | None = None,
    random_state: int | None = 0,
) -> Representation:
    """One row per label, to be clustered by :class:`HierarchicalKMeans`.

    Parameters
    ----------
    X : sparse matrix, ndarray or HybridMatrix of shape (n_samples, n_features)
        Instance features (used by ``"pifa"`` and ``"pifa_concat"``). A ``HybridMatrix`` is
        aggregated block by block and each label row normalised over both blocks.
    Y : sparse matrix or ndarray of shape (n_samples, n_labels)
        Label matrix; its values are weights (a 0/1 indicator gives PECOS's PIFA).
    method : {"pifa", "pii", "pifa_concat", "spectral"}, default="pifa"
        - ``"pifa"``: rows of ``Y`` L2-normalised (each instance weighs ``1/sqrt(#labels)``),
          then ``Z = Y^T X`` with rows L2-normalised (PECOS's PIFA).
        - ``"pii"``: rows of ``Y^T`` L2-normalised (positive-instance indicators).
        - ``"pifa_concat"``: ``[PIFA, embedding_weight * normalize(E)]`` with rows
          L2-normalised again, where ``E`` is ``embeddings``: label embeddings
          (``n_labels`` rows, taken as such when ``n_labels == n_samples``) or instance
          embeddings (``n_samples`` rows), aggregated like PIFA.
        - ``"spectral"``: spectral embedding of the label co-occurrence graph
          ``A = Y^T D_r^-1 Y`` (each instance spreads weight 1 over its label pairs, ``D_r``
          its label counts), whose degrees are the label counts ``D_c``. The top
          ``n_components + 1`` right singular vectors of ``D_r^-1/2 Y D_c^-1/2`` are the top
          eigenvectors of the normalised adjacency ``D_c^-1/2 A D_c^-1/2``; the trivial first
          one is dropped, the rest are scaled by ``D_c^-1/2`` (Dhillon's co-clustering) and
          rows L2-normalised. ARPACK starts from a vector drawn from ``random_state`` and
          signs are fixed (largest entry positive), so the result is deterministic.
    embeddings : array-like of shape (n_labels, e) or (n_samples, e), optional
        Dense embeddings for ``"pifa_concat"`` (required there, rejected elsewhere).
    embedding_weight : float, default=1.0
        Weight (>= 0) of the embedding block relative to the unit-norm PIFA block.
    n_components : int, default=32
        Dimension of ``"spectral"`` (padded with zero columns if the graph is smaller).
    n_jobs : int, optional
        Threads of the sparse kernels (None: all cores). Results do not depend on it.
    random_state : int, optional
        Seed of ``"spectral"`` (None means 0).

    Returns
    -------
    Z : csr_matrix of float32, or ndarray of float32, shape (n_labels, dim)
        CSR for ``"pifa"``/``"pii"`` and for ``"pifa_concat"`` with sparse ``X``; a dense
        array for ``"spectral"`` and whenever ``X`` is dense. Labels without positives get
        the mean direction of the other rows (see the module docs), never NaN.

    Raises
    ------
    ValueError
        Mismatched shapes, NaN or infinite values, ``Y`` without labels or without any
        positive entry, an unknown method or bad parameters.
    """
    if method not in ("pifa", "pii", "pifa_concat", "spectral"):
        raise ValueError(
            f"method must be 'pifa', 'pii', 'pifa_concat' or 'spectral', got {method!r}"
        )
    y = _as_csr(Y, "Y")
    n, n_labels = y.shape
    if n_labels == 0:
        raise ValueError("Y has no labels (0 columns)")
    if y.count_nonzero() == 0:
        raise ValueError(_NO_POSITIVE)
    if embeddings is not None and method != "pifa_concat":
        raise ValueError(f"embeddings are only used by method='pifa_concat', not {method!r}")
    seed = _check_seed(random_state)
    x: Any = None
    if method in ("pifa", "pifa_concat"):
        if isinstance(X, HybridMatrix):
            x = X
        else:
            x = _as_csr(X, "X") if sp.issparse(X) else dense_finite(X, "X")
        if x.shape[0] != n:
            raise ValueError(f"shape mismatch: X has {x.shape[0]} rows but Y has {n}")
    elif X is not None:
        nx = X.shape[0] if sp.issparse(X) or isinstance(X, HybridMatrix) else np.asarray(X).shape[0]
        if nx != n:
            raise ValueError(f"shape mismatch: X has {nx} rows but Y has {n}")

    if method == "pii":
        return _fill_empty(xs.normalize_rows(xs.transpose(y, n_jobs=n_jobs), n_jobs=n_jobs), n_jobs)
    if method == "spectral":
        k = _check_int(n_components, "n_components", 1)
        return _fill_empty(_spectral(y, k, seed), n_jobs)

    yn = xs.normalize_rows(y, n_jobs=n_jobs)
    z = _fill_empty(_pifa(x, yn, n_jobs), n_jobs)
    if method == "pifa":
        return z
    # pifa_concat
    if embeddings is None:
        raise ValueError("method='pifa_concat' needs embeddings (n_labels or n_samples rows)")
    w = float(embedding_weight)
    if not math.isfinite(w) or w < 0:
        raise ValueError(f"embedding_weight must be a finite number >= 0, got {embedding_weight!r}")
    e = dense_finite(embeddings, "embeddings")
    if e.shape[0] == n_labels:
        e_lab = _normalize_dense(e)
    elif e.shape[0] == n:
        e_lab = _normalize_dense(xs.matmul_dense(xs.transpose(yn, n_jobs=n_jobs), e, n_jobs=n_jobs))
    else:
        raise ValueError(
            f"shape mismatch: embeddings has {e.shape[0]} rows, expected n_labels = {n_labels} "
            f"(label embeddings) or n_samples = {n} (instance embeddings)"
        )
    e_lab = _fill_empty(e_lab, n_jobs) * np.float32(w)
    if sp.issparse(z):
        both = sp.hstack([z, sp.csr_matrix(e_lab)], format="csr", dtype=np.float32)
        return xs.normalize_rows(both, n_jobs=n_jobs)
    return _normalize_dense(np.hstack([z, e_lab]))


# --------------------------------------------------------------------------------------------
# the tree
# --------------------------------------------------------------------------------------------


def _int64(a: Any, name: str) -> IntArray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} has values out of range")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _sizes(ptr: np.ndarray) -> IntArray:
    """Block sizes of a pointer array."""
    return np.asarray(np.diff(ptr.astype(np.int64)), dtype=np.int64)


class ClusterTree:
    """A label tree in its inference layout: the children of every node are contiguous.

    Levels run from the root (level 0, one node) to the leaves (level ``depth``).
    ``child_ptrs[t]`` (``n_nodes(t) + 1`` entries) gives the children of node ``i`` of level
    ``t`` as nodes ``child_ptrs[t][i]:child_ptrs[t][i+1]`` of level ``t + 1``; ``leaf_ptr``
    does the same from the leaves into ``labels``, a permutation of ``range(n_labels)``.
    A tree of depth 0 is a single leaf holding every label.

    Parameters
    ----------
    child_ptrs : sequence of 1-D integer arrays
        One pointer per internal level, root first (empty for a single leaf).
    leaf_ptr : 1-D integer array
    labels : 1-D integer array

    Raises
    ------
    ValueError
        When the arrays do not form a tree (pointers not starting at 0, not strictly
        increasing, not ending at the size of the level below; labels not a permutation).
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, child_ptrs: Sequence[Any], leaf_ptr: Any, labels: Any) -> None:
        if isinstance(child_ptrs, np.ndarray) or not isinstance(child_ptrs, Sequence):
            raise ValueError("child_ptrs must be a list of 1-D arrays (one per internal level)")
        parts = _xmrrs.cluster_tree_from_parts(
            [_int64(p, f"child_ptrs[{t}]") for t, p in enumerate(child_ptrs)],
            _int64(leaf_ptr, "leaf_ptr"),
            _int64(labels, "labels"),
        )
        self._set(parts)

    def _set(self, parts: _xmrrs.TreeParts) -> None:
        ptrs, leaf_ptr, labels = parts
        self._child_ptrs = [np.asarray(p) for p in ptrs]
        self._leaf_ptr = np.asarray(leaf_ptr)
        self._labels = np.asarray(labels)
        for a in (*self._child_ptrs, self._leaf_ptr, self._labels):
            a.flags.writeable = False

    @classmethod
    def _from_core(cls, parts: _xmrrs.TreeParts) -> ClusterTree:
        tree = cls.__new__(cls)
        tree._set(parts)
        return tree

    @classmethod
    def from_assignments(cls, assignments: Sequence[Any]) -> ClusterTree:
        """Build the tree from per-level parent assignments, top level first.

        ``assignments[k][i]`` is the parent (in the level above) of node ``i`` of level
        ``k``; the last array has one entry per label (its leaf). The number of nodes of a
        level is the length of its array; every parent id must be used. If the top array
        names a single node (all zeros) that node is the root, otherwise a root is added
        above the top nodes. So ``[leaf_of_label]`` alone gives a two-level tree (root, leaves)
        for any flat clustering. Children keep the order of their ids, and the labels of a
        leaf are sorted. :meth:`level_assignments` is the inverse.

        Raises
        ------
        ValueError
            Empty list or level, negative or out-of-range ids, a parent without children.
        """
        if isinstance(assignments, np.ndarray) and assignments.ndim == 1:
            assignments = [assignments]
        if not isinstance(assignments, Sequence | np.ndarray) or len(assignments) == 0:
            raise ValueError("assignments must be a non-empty list of 1-D integer arrays")
        levels = [_int64(a, f"assignments[{k}]") for k, a in enumerate(assignments)]
        return cls._from_core(_xmrrs.cluster_tree_from_assignments(levels))

    # ---- shape -----------------------------------------------------------------------------

    @property
    def n_labels(self) -> int:
        """Number of labels."""
        return int(self._labels.shape[0])

    @property
    def depth(self) -> int:
        """Number of levels below the root (leaves are at level ``depth``; 0: one leaf)."""
        return len(self._child_ptrs)

    @property
    def n_nodes_per_level(self) -> list[int]:
        """Nodes at each level, root (1) first, leaves last."""
        return [p.shape[0] - 1 for p in self._child_ptrs] + [self.n_leaves]

    @property
    def n_leaves(self) -> int:
        """Number of leaves."""
        return int(self._leaf_ptr.shape[0] - 1)

    @property
    def child_ptrs(self) -> list[np.ndarray]:
        """Read-only uint32 child pointers, root level first."""
        return list(self._child_ptrs)

    @property
    def leaf_ptr(self) -> np.ndarray:
        """Read-only uint32 pointer of the leaves into :attr:`labels`."""
        return self._leaf_ptr

    @property
    def labels(self) -> np.ndarray:
        """Read-only uint32 labels in leaf order (a permutation of ``range(n_labels)``)."""
        return self._labels

    @property
    def leaf_of_label(self) -> IntArray:
        """The leaf of each label (int64, length ``n_labels``)."""
        out = np.empty(self.n_labels, dtype=np.int64)
        out[self._labels] = np.repeat(
            np.arange(self.n_leaves, dtype=np.int64), _sizes(self._leaf_ptr)
        )
        return out

    def labels_of_leaf(self, i: int) -> IntArray:
        """The labels of leaf ``i`` (sorted when built by this library)."""
        i = self._check_node(i, self.n_leaves, "leaf")
        return self._labels[self._leaf_ptr[i] : self._leaf_ptr[i + 1]].astype(np.int64)

    def children(self, level: int, node: int) -> range:
        """The children of node ``node`` of ``level`` as a range of level ``level + 1``."""
        level = self._check_node(level, self.depth, "internal level")
        ptr = self._child_ptrs[level]
        node = self._check_node(node, ptr.shape[0] - 1, f"node of level {level}")
        return range(int(ptr[node]), int(ptr[node + 1]))

    def level_assignments(self) -> list[IntArray]:
        """Per-level parent ids, top first: parents of levels ``1..depth``, then the leaf of
        each label (the input of :meth:`from_assignments`)."""
        out = [
            np.repeat(np.arange(p.shape[0] - 1, dtype=np.int64), _sizes(p))
            for p in self._child_ptrs
        ]
        out.append(self.leaf_of_label)
        return out

    @staticmethod
    def _check_node(i: Any, n: int, what: str) -> int:
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise TypeError(f"{what} index must be an integer, got {i!r}")
        if not 0 <= i < n:
            raise IndexError(f"{what} index {i} out of range [0, {n})")
        return int(i)

    # ---- persistence -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tree into directory ``path`` (created if needed): ``tree.json`` (format,
        version, shape) and ``tree.npz`` (the arrays; no pickle)."""
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {f"child_ptr_{t}": p for t, p in enumerate(self._child_ptrs)}
        arrays["leaf_ptr"] = self._leaf_ptr
        arrays["labels"] = self._labels
        np.savez(d / "tree.npz", **arrays)
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "n_labels": self.n_labels,
            "depth": self.depth,
            "n_nodes_per_level": self.n_nodes_per_level,
        }
        (d / "tree.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClusterTree:
        """Read a tree written by :meth:`save`; the arrays are validated again.

        Raises
        ------
        FileNotFoundError
            No such directory or file.
        ValueError
            The files are corrupt or inconsistent.
        """
        d = Path(path)
        try:
            meta = json.loads(read_regular(d / "tree.json", "tree manifest", 1 << 20))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{d / 'tree.json'}: not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ValueError(f"{d / 'tree.json'}: not an xmrrs cluster tree")
        if meta.get("version") != _FORMAT_VERSION:
            raise ValueError(f"{d / 'tree.json'}: unsupported version {meta.get('version')!r}")
        depth = meta.get("depth")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"{d / 'tree.json'}: bad depth {depth!r}")
        try:
            raw = io.BytesIO(read_regular(d / "tree.npz", "tree array file"))
            with np.load(raw, allow_pickle=False) as f:
                ptrs = [np.array(f[f"child_ptr_{t}"]) for t in range(depth)]
                leaf_ptr, labels = np.array(f["leaf_ptr"]), np.array(f["labels"])
        except (FileNotFoundError, MemoryError):
            raise
        except Exception as e:  # zipfile and numpy raise many types for a corrupt archive
            # (BadZipFile, NotImplementedError, RuntimeError "encrypted", SyntaxError, ...)
            raise ValueError(
                f"{d / 'tree.npz'}: corrupt or incomplete ({type(e).__name__}: {e})"
            ) from None
        tree = cls(ptrs, leaf_ptr, labels)
        if meta.get("n_labels") != tree.n_labels or meta.get("n_nodes_per_level") != (
            tree.n_nodes_per_level
        ):
            raise ValueError(f"{d}: tree.json does not match the arrays in tree.npz")
        return tree

    # ---- dunder ----------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClusterTree):
            return NotImplemented
        return (
            self.depth == other.depth
            and all(
                np.array_equal(a, b)
                for a, b in zip(self._child_ptrs, other._child_ptrs, strict=True)
            )
            and np.array_equal(self._leaf_ptr, other._leaf_ptr)
            and np.array_equal(self._labels, other._labels)
        )

    def __repr__(self) -> str:
        sizes = _sizes(self._leaf_ptr)
        return (
            f"ClusterTree(n_labels={self.n_labels}, depth={self.depth}, "
            f"n_nodes_per_level={self.n_nodes_per_level}, "
            f"leaf_size=[{int(sizes.min())}, {int(sizes.max())}])"
        )


# --------------------------------------------------------------------------------------------
# hierarchical k-means
# --------------------------------------------------------------------------------------------


class HierarchicalKMeans:
    """Recursive B-ary k-means of label representations into a :class:`ClusterTree`.

    Parameters
    ----------
    branching : int or sequence of int, default=16
        Largest number of children of a node (>= 2). Fan-outs are chosen as even as
        possible under it (see the module docs), so they may be smaller. A sequence gives
        every level's fan-out explicitly (each >= 2; one level per entry, ``max_leaf_size``
        then does not set the shape): for example :func:`pecos_fanouts` for PECOS's shape.
    max_leaf_size : int, default=100
        Largest number of labels in a leaf (>= 1).
    spherical : bool, default=True
        Cosine similarity and L2-normalised centroids (else Euclidean k-means).
    balanced : bool, default=True
        Sibling sizes differ by at most one (greedy-by-margin assignment).
    max_iter : int, default=20
        Largest number of Lloyd iterations per node (>= 0).
    tol : float, default=0.01
        A node stops iterating once a round moves at most this fraction of its members
        (``0 <= tol < 1``; 0 waits until nothing moves; labels with identical rows trading
        places do not count). From the fifth round on, a node also stops when the round
        improves its objective by less than 1e-4 (relative).
    n_init : int or "auto", default="auto"
        k-means runs per node (>= 1), each from its own k-means++ seeding; the run with the
        best objective (sum of the members' similarities to their centroids) is kept.
        ``"auto"``: 3 runs at nodes of at most 8 children when ``Z`` has at most 10,000 rows,
        1 elsewhere. In a small tree a few seeds decide the split of a large share of the
        labels, and an unlucky draw can leave it in a poor local optimum, while a run costs
        milliseconds. (In large trees, more runs raised the objective but not precision@k
        consistently in our benchmarks, and cost time.)
    random_state : int, optional
        Seed (None means 0). Seeds are k-means++ draws from a stream per node derived from
        (seed, level, node), so the tree does not depend on ``n_jobs``.
    n_jobs : int, optional
        Threads (None: all cores).

    Attributes
    ----------
    tree_ : ClusterTree
        The fitted tree.
    """

    _PARAMS = ("branching", "max_leaf_size", "spherical", "balanced", "max_iter", "tol", "n_init")

    def __init__(
        self,
        branching: int | Sequence[int] = 16,
        max_leaf_size: int = 100,
        spherical: bool = True,
        balanced: bool = True,
        max_iter: int = 20,
        random_state: int | None = 0,
        n_jobs: int | None = None,
        tol: float = 0.01,
        n_init: int | Literal["auto"] = "auto",
    ) -> None:
        self.branching = branching
        self.max_leaf_size = max_leaf_size
        self.spherical = spherical
        self.balanced = balanced
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.random_state = random_state
        self.n_jobs = n_jobs

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters (scikit-learn convention)."""
        return {k: getattr(self, k) for k in (*self._PARAMS, "random_state", "n_jobs")}

    def set_params(self, **params: Any) -> HierarchicalKMeans:
        """Set constructor parameters (scikit-learn convention)."""
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"invalid parameter {k!r} for HierarchicalKMeans")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"HierarchicalKMeans({args})"

    def _core_params(self) -> dict[str, Any]:
        """The checked parameters as the core's k-means functions take them."""
        branching = check_branching(self.branching)
        max_leaf_size = _check_int(self.max_leaf_size, "max_leaf_size", 1)
        max_iter = _check_int(self.max_iter, "max_iter", 0)
        if isinstance(self.tol, bool) or not isinstance(self.tol, int | float | np.number):
            raise ValueError(f"tol must be a number in [0, 1), got {self.tol!r}")
        if not 0.0 <= float(self.tol) < 1.0:
            raise ValueError(f"tol must be in [0, 1), got {self.tol!r}")
        for name in ("spherical", "balanced"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        auto = isinstance(self.n_init, str) and self.n_init == "auto"
        n_init = None if auto else _check_int(self.n_init, 'n_init (other than "auto")', 1)
        if isinstance(branching, tuple):
            b, fanouts = max(branching, default=2), list(branching)
        else:
            b, fanouts = branching, None
        return {
            "branching": b,
            "max_leaf_size": max_leaf_size,
            "spherical": bool(self.spherical),
            "balanced": bool(self.balanced),
            "max_iter": max_iter,
            "tol": float(self.tol),
            "seed": _check_seed(self.random_state),
            "fanouts": fanouts,
            "n_init": n_init,
        }

    @staticmethod
    def _core_z(Z: Any) -> Any:
        """``Z`` as the core takes it: CSR parts, or a C-contiguous float32 array."""
        if sp.issparse(Z):
            z: Any = csr_parts(Z, "Z")
        else:
            z = dense_finite(Z, "Z")
        if (z[0] if isinstance(z, tuple) else z.shape[0]) == 0:
            raise ValueError("Z has no rows (no labels to cluster)")
        return z

    def fit(self, Z: Any, y: Any = None) -> HierarchicalKMeans:
        """Cluster the rows of ``Z`` (one per label: sparse, or a dense 2-D array).

        Raises
        ------
        ValueError
            Bad parameters, ``Z`` without rows, NaN or infinite values.
        """
        kw = self._core_params()
        z = self._core_z(Z)
        parts = _xmrrs.hierarchical_kmeans(z, n_jobs=self.n_jobs, **kw)
        self.tree_ = ClusterTree._from_core(parts)
        return self
