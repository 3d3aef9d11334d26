"""Ranking metrics for extreme multi-label classification (XMC).

All metrics follow the definitions used by the Extreme Classification Repository
(Jain, Prabhu and Varma, KDD 2016) and are fully vectorised with numpy: there is no
Python loop over rows, so a million test rows against a million labels is evaluated in
seconds, the cost being dominated by a per-row partial sort of the stored predictions.

Inputs
------
``y_true``
    Ground truth of shape ``(n, L)``: any scipy sparse matrix or array (CSR is cheapest)
    or a dense array. Every *nonzero* entry is a relevant label; explicit zeros stored in
    a sparse structure are ignored, and duplicate sparse entries are summed first.
``y_pred``
    Either **scores** or **label ids**:

    * a scipy sparse matrix/array of shape ``(n, L)`` is a score matrix. Only its stored
      nonzero entries are predictions (explicit zeros are ignored, duplicates are summed).
      A row with two such entries predicts two labels; the remaining top-``k`` slots are
      misses.
    * a dense array of shape ``(n, L)`` with a floating (or bool) dtype is a score
      matrix in which every label is ranked.
    * a dense array of shape ``(n, k')`` with an integer dtype holds label ids, best
      first, padded with ``-1`` where a row has fewer than ``k'`` predictions. Only the
      first ``min(k, k')`` columns are used; a ``-1`` is an empty slot (a miss) wherever
      it appears. A label may appear at most once per row.

    Scores rank labels in descending order; equal scores are broken by the lower label
    id. NaN scores are rejected.

Rows with no relevant label
---------------------------
Every metric takes ``empty_rows``:

* ``"zero"`` (default): such rows stay in the mean and score 0 for every metric.
* ``"skip"``: such rows are left out of the mean. If every row is left out (or there are
  no rows at all) the metric is 0.0.

Propensity-scored metrics
-------------------------
``PSP@k`` and ``PSnDCG@k`` weight a correctly predicted label ``l`` by ``1 / p_l`` where
``p_l`` is the propensity of :func:`propensity`. Following the XC-repository
convention, the reported value is a *ratio of means*: the mean over rows of the weighted
score of the prediction divided by the mean over rows of the best achievable weighted
score (the relevant labels of each row sorted by ``1 / p_l``, largest first). Rows
without relevant labels add 0 to both means, so for these two metrics ``"zero"`` and
``"skip"`` give the same value. Other implementations that normalise row by row before
averaging can report slightly different numbers.

Examples
--------
>>> import numpy as np
>>> import scipy.sparse as sp
>>> from xmrrs.metrics import precision_at_k, ranking_report
>>> y_true = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]]))
>>> ids = np.array([[2, 1, 0], [0, 1, -1]])
>>> precision_at_k(y_true, ids, k=1)
0.5
>>> ranking_report(y_true, ids, ks=(1,))
{'P@1': 0.5, 'R@1': 0.25, 'nDCG@1': 0.5}
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

__all__ = [
    "RankingScorer",
    "make_ranking_scorer",
    "ndcg_at_5_scorer",
    "ndcg_at_k",
    "precision_at_1_scorer",
    "precision_at_3_scorer",
    "precision_at_5_scorer",
    "precision_at_k",
    "propensity",
    "psndcg_at_k",
    "psprecision_at_k",
    "ranking_report",
    "recall_at_k",
]

EmptyRows: TypeAlias = Literal["zero", "skip"]
#: A label matrix: a scipy sparse matrix/array or anything :func:`numpy.asarray` accepts.
MatrixLike: TypeAlias = "npt.ArrayLike | sp.spmatrix | sp.sparray"
PredKind: TypeAlias = Literal["auto", "scores", "ids"]

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
_Bool = npt.NDArray[np.bool_]

# Upper bound on the number of cells of the temporary (rows x width) blocks used when
# selecting the top-k entries of each row; bounds peak memory to a few hundred MiB.
_BLOCK_CELLS = 1 << 22


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------


def _check_k(k: object, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    return int(k)


def _check_empty_rows(empty_rows: object) -> EmptyRows:
    if empty_rows == "zero":
        return "zero"
    if empty_rows == "skip":
        return "skip"
    raise ValueError(f"empty_rows must be 'zero' or 'skip', got {empty_rows!r}")


# --------------------------------------------------------------------------------------
# ground truth
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Truth:
    """Relevant labels in CSR form: sorted column ids per row, no zeros, no duplicates."""

    n_rows: int
    n_labels: int
    indptr: _I64
    indices: _I64

    @property
    def counts(self) -> _I64:
        return np.diff(self.indptr)

    def keys(self) -> _I64:
        """Sorted ``row * L + label`` key of every relevant (row, label) pair."""
        rows = np.repeat(np.arange(self.n_rows, dtype=np.int64), self.counts)
        keys: _I64 = rows * np.int64(self.n_labels) + self.indices
        return keys


def _canonical_csr(matrix: Any) -> Any:
    """CSR view of a sparse matrix with sorted indices, summed duplicates, no zeros.

    The input is never modified: a copy is made only if it is not already canonical.
    """
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D sparse matrix, got ndim={matrix.ndim}")
    csr = matrix.tocsr()
    if not csr.has_canonical_format or bool(np.any(csr.data == 0)):
        if csr is matrix:
            csr = csr.copy()
        csr.sum_duplicates()
        csr.eliminate_zeros()
    return csr


def _as_truth(y_true: MatrixLike) -> _Truth:
    if np.iscomplexobj(y_true):  # sparse matrices answer by their dtype too
        raise ValueError("y_true must hold real 0/1 relevance, got complex values")
    if sp.issparse(y_true):
        csr = _canonical_csr(y_true)
        n, n_labels = (int(s) for s in csr.shape)
        indptr = np.asarray(csr.indptr, dtype=np.int64)
        indices = np.asarray(csr.indices, dtype=np.int64)
    else:
        dense = np.asarray(y_true)
        if dense.ndim != 2:
            raise ValueError(f"y_true must be 2-D (n, L), got shape {dense.shape}")
        n, n_labels = (int(s) for s in dense.shape)
        rows, cols = np.nonzero(dense)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        indices = cols.astype(np.int64, copy=False)
    return _Truth(n, n_labels, indptr, indices)


# --------------------------------------------------------------------------------------
# top-k selection
# --------------------------------------------------------------------------------------


def _topk_positions(keys: npt.NDArray[np.floating[Any]], k: int) -> _I64:
    """Positions of the ``min(k, w)`` smallest keys of each row of a ``(m, w)`` block.

    The result is ordered by key ascending, equal keys by position ascending; it is
    exact under ties (no arbitrary choice at the k-th place).
    """
    m, w = keys.shape
    if k >= w:
        return np.argsort(keys, axis=1, kind="stable").astype(np.int64, copy=False)
    kth = np.partition(keys, k - 1, axis=1)[:, k - 1 : k]
    less = keys < kth
    equal = keys == kth
    need = k - np.count_nonzero(less, axis=1, keepdims=True)
    # Among keys equal to the k-th smallest, keep the leftmost `need` ones.
    chosen = less | (equal & (np.cumsum(equal, axis=1) <= need))
    pos = np.nonzero(chosen)[1].reshape(m, k).astype(np.int64, copy=False)
    order = np.argsort(np.take_along_axis(keys, pos, axis=1), axis=1, kind="stable")
    return np.take_along_axis(pos, order, axis=1)


def _topk_csr(indptr: _I64, indices: _I64, data: npt.NDArray[Any], k: int) -> _I64:
    """Top-k column ids of each CSR row by value descending, ties by lower column id.

    ``indices`` must be sorted within each row. Rows with fewer than ``k`` entries are
    padded with ``-1``. Rows are processed in groups of similar length so that the
    temporary dense blocks waste at most a factor two, and groups are split into blocks
    of at most ``_BLOCK_CELLS`` cells.
    """
    n = indptr.shape[0] - 1
    out = np.full((n, k), -1, dtype=np.int64)
    lengths = np.diff(indptr)
    if n == 0 or not bool(np.any(lengths)):
        return out
    # Length class: ceil(log2(length)); all rows of a class are padded to its max length.
    nonempty = np.flatnonzero(lengths)
    classes = np.ceil(np.log2(lengths[nonempty])).astype(np.int64)
    order = np.argsort(classes, kind="stable")
    boundaries = np.flatnonzero(np.diff(classes[order])) + 1
    for group in np.split(nonempty[order], boundaries):
        width = int(lengths[group].max())
        step = max(1, _BLOCK_CELLS // width)
        offsets = np.arange(width, dtype=np.int64)
        for start in range(0, group.shape[0], step):
            rows = group[start : start + step]
            valid = offsets[None, :] < lengths[rows][:, None]
            idx = np.where(valid, indptr[rows][:, None] + offsets[None, :], 0)
            # Padding gets key +inf and sits after the real entries of its row, so the
            # position tie-break ranks it after any real entry (even a score of -inf).
            keys = np.where(valid, -data[idx].astype(np.float64), np.inf)
            pos = _topk_positions(keys, k)
            ids = indices[np.take_along_axis(idx, pos, axis=1)]
            ids[~np.take_along_axis(valid, pos, axis=1)] = -1
            out[rows, : ids.shape[1]] = ids
    return out


def _topk_dense(scores: npt.NDArray[Any], k: int) -> _I64:
    """Top-k column ids of each row of a dense score matrix (all labels ranked)."""
    n, n_labels = scores.shape
    kk = min(k, n_labels)
    out = np.full((n, k), -1, dtype=np.int64)
    if n == 0 or kk == 0:
        return out
    step = max(1, _BLOCK_CELLS // n_labels)
    for start in range(0, n, step):
        block = scores[start : start + step]
        out[start : start + step, :kk] = _topk_positions(-block, kk)
    return out


def _topk_from_scores(y_pred: Any, k: int, n: int, n_labels: int) -> _I64:
    if sp.issparse(y_pred):
        if y_pred.ndim != 2 or tuple(y_pred.shape) != (n, n_labels):
            raise ValueError(
                f"sparse score matrix y_pred has shape {tuple(y_pred.shape)}, "
                f"expected the shape of y_true {(n, n_labels)}"
            )
        csr = _canonical_csr(y_pred)
        data = np.asarray(csr.data)
        if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_):
            raise ValueError(f"y_pred scores must be numeric, got dtype {data.dtype}")
        if np.iscomplexobj(data):
            raise ValueError("y_pred scores must be real, got a complex dtype")
        if np.issubdtype(data.dtype, np.floating) and bool(np.isnan(data).any()):
            raise ValueError("y_pred contains NaN scores")
        return _topk_csr(
            np.asarray(csr.indptr, dtype=np.int64),
            np.asarray(csr.indices, dtype=np.int64),
            data,
            k,
        )
    scores = np.asarray(y_pred)
    if scores.ndim != 2 or scores.shape != (n, n_labels):
        raise ValueError(
            f"dense score matrix y_pred has shape {scores.shape}, expected the shape of "
            f"y_true {(n, n_labels)}; label-id predictions must have an integer dtype"
        )
    if scores.dtype == np.bool_ or np.issubdtype(scores.dtype, np.integer):
        scores = scores.astype(np.float64)
    elif not np.issubdtype(scores.dtype, np.floating):
        raise ValueError(f"y_pred scores must be real numbers, got dtype {scores.dtype}")
    if bool(np.isnan(scores).any()):
        raise ValueError("y_pred contains NaN scores")
    return _topk_dense(scores, k)


def _ids_from_array(ids: npt.NDArray[Any], k: int, n: int, n_labels: int) -> _I64:
    if ids.ndim != 2:
        raise ValueError(f"label-id predictions must be 2-D (n, k'), got shape {ids.shape}")
    if ids.shape[0] != n:
        raise ValueError(f"y_pred has {ids.shape[0]} rows but y_true has {n} rows")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < -1:
            raise ValueError(f"label ids must be >= -1 (-1 marks padding), found {lo}")
        if hi >= n_labels:
            raise ValueError(
                f"label id {hi} out of range: y_true has {n_labels} labels (ids 0..{n_labels - 1})"
            )
    out = ids.astype(np.int64, copy=False)
    if out.shape[1] > 1:
        srt = np.sort(out, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
        if bool(dup.any()):
            row = int(np.flatnonzero(dup.any(axis=1))[0])
            label = int(srt[row, 1:][dup[row]][0])
            raise ValueError(f"duplicate label id {label} in row {row} of y_pred")
    return out[:, :k]


def _predicted_ids(y_pred: Any, k: int, n: int, n_labels: int, kind: PredKind) -> _I64:
    """Ranked predicted label ids, shape ``(n, k'')`` with ``k'' <= k``, ``-1`` padded."""
    scores: Any
    if sp.issparse(y_pred):
        if kind == "ids":
            raise ValueError("label ids must be a dense integer array, got a sparse matrix")
        scores = y_pred
    else:
        arr = np.asarray(y_pred)
        if kind == "ids" or (kind == "auto" and np.issubdtype(arr.dtype, np.integer)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"label ids must have an integer dtype, got {arr.dtype}")
            return _ids_from_array(arr, k, n, n_labels)
        scores = arr
    if scores.ndim == 2 and scores.shape[0] != n:
        raise ValueError(f"y_pred has {scores.shape[0]} rows but y_true has {n} rows")
    return _topk_from_scores(scores, k, n, n_labels)


# --------------------------------------------------------------------------------------
# evaluation core
# --------------------------------------------------------------------------------------


def _discounts(k: int) -> _F64:
    """``1 / log2(r + 1)`` for ranks ``r = 1..k``."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _resolve_propensity(prop: MatrixLike | None, n_labels: int, a: float, b: float) -> _F64 | None:
    if prop is None:
        return None
    if sp.issparse(prop) or np.ndim(prop) == 2:
        # A training label matrix: compute the propensities from it.
        n_cols = int(np.shape(prop)[1])
        if n_cols != n_labels:
            raise ValueError(f"training label matrix has {n_cols} labels, y_true has {n_labels}")
        return propensity(prop, A=a, B=b)
    p = np.asarray(prop, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] != n_labels:
        raise ValueError(
            f"propensity must be a 1-D array of length L={n_labels} (or a training label "
            f"matrix of shape (N, L)), got shape {p.shape}"
        )
    if not bool(np.all(np.isfinite(p))) or bool(np.any(p <= 0)):
        raise ValueError("propensity values must be finite and > 0")
    return p


class _Evaluation:
    """Ranked predictions matched against the truth; computes any metric at any k."""

    def __init__(
        self,
        y_true: MatrixLike,
        y_pred: Any,
        kmax: int,
        *,
        kind: PredKind = "auto",
        empty_rows: EmptyRows = "zero",
    ) -> None:
        truth = _as_truth(y_true)
        self.truth = truth
        self.empty_rows = empty_rows
        self.ids = _predicted_ids(y_pred, kmax, truth.n_rows, truth.n_labels, kind)
        self.counts = truth.counts
        self.nonempty: _Bool = self.counts > 0
        self.hits = self._match(self.ids)
        self._ideal_cache: tuple[_F64, _I64] | None = None

    def _match(self, ids: _I64) -> _Bool:
        """Boolean ``(n, k'')`` array: is ``ids[i, j]`` a relevant label of row ``i``."""
        keys = self.truth.keys()
        hits: _Bool = np.zeros(ids.shape, dtype=np.bool_)
        if keys.size == 0 or ids.size == 0:
            return hits
        rows = np.arange(ids.shape[0], dtype=np.int64)[:, None]
        query = rows * np.int64(self.truth.n_labels) + np.maximum(ids, 0)
        where = np.minimum(np.searchsorted(keys, query), keys.size - 1)
        hits = (keys[where] == query) & (ids >= 0)
        return hits

    def _mean(self, per_row: _F64) -> float:
        if self.empty_rows == "skip":
            per_row = per_row[self.nonempty]
        if per_row.size == 0:
            return 0.0
        return float(per_row.mean())

    def n_hits(self, k: int) -> _F64:
        counts: _F64 = np.count_nonzero(self.hits[:, :k], axis=1).astype(np.float64)
        return counts

    def precision(self, k: int) -> float:
        return self._mean(self.n_hits(k) / k)

    def recall(self, k: int) -> float:
        per_row = np.zeros(self.truth.n_rows, dtype=np.float64)
        ne = self.nonempty
        per_row[ne] = self.n_hits(k)[ne] / self.counts[ne]
        return self._mean(per_row)

    def ndcg(self, k: int) -> float:
        hits = self.hits[:, :k]
        disc = _discounts(k)
        dcg = hits.astype(np.float64) @ disc[: hits.shape[1]]
        ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(self.counts, k)]
        per_row = np.zeros(self.truth.n_rows, dtype=np.float64)
        ne = self.nonempty
        per_row[ne] = dcg[ne] / ideal[ne]
        return self._mean(per_row)

    def _ideal(self, inv_p: _F64, k: int) -> _I64:
        """Relevant labels of each row ordered by ``1 / p_l`` descending (top ``k``)."""
        cache = self._ideal_cache
        if cache is None or cache[0] is not inv_p or cache[1].shape[1] < k:
            t = self.truth
            cache = (inv_p, _topk_csr(t.indptr, t.indices, inv_p[t.indices], k))
            self._ideal_cache = cache
        return cache[1][:, :k]

    def _ps_ratio(self, inv_p: _F64, k: int, discounted: bool) -> float:
        hits = self.hits[:, :k]
        ids = self.ids[:, :k]
        gains = np.where(hits, inv_p[np.maximum(ids, 0)], 0.0)
        ideal_ids = self._ideal(inv_p, k)
        ideal = np.where(ideal_ids >= 0, inv_p[np.maximum(ideal_ids, 0)], 0.0)
        if discounted:
            disc = _discounts(k)
            num = gains @ disc[: gains.shape[1]]
            den = ideal @ disc
        else:
            num = gains.sum(axis=1) / k
            den = ideal.sum(axis=1) / k
        # Rows without relevant labels contribute 0 to both sums, so "zero" and "skip"
        # give the same ratio of means.
        total = float(den.sum())
        return float(num.sum()) / total if total > 0 else 0.0

    def psprecision(self, inv_p: _F64, k: int) -> float:
        """Normalised PSP@k given the label weights ``inv_p = 1 / propensity``."""
        return self._ps_ratio(inv_p, k, discounted=False)

    def psndcg(self, inv_p: _F64, k: int) -> float:
        """Normalised PSnDCG@k given the label weights ``inv_p = 1 / propensity``."""
        return self._ps_ratio(inv_p, k, discounted=True)


def _require_propensity(prop: _F64 | None, name: str) -> _F64:
    if prop is None:
        raise ValueError(
            f"{name} needs label propensities: pass "
            "propensity=xmrrs.metrics.propensity(Y_train) (or the training label matrix "
            "Y_train itself)"
        )
    return prop


def _evaluate(
    metric: str,
    y_true: MatrixLike,
    y_pred: Any,
    k: object,
    *,
    propensity: MatrixLike | None = None,
    A: float = 0.55,
    B: float = 1.5,
    empty_rows: object = "zero",
    kind: PredKind = "auto",
) -> float:
    kk = _check_k(k)
    mode = _check_empty_rows(empty_rows)
    ps = metric in ("psprecision", "psndcg")
    if ps and propensity is None:
        _require_propensity(None, f"{metric}_at_k")
    ev = _Evaluation(y_true, y_pred, kk, kind=kind, empty_rows=mode)
    if metric == "precision":
        return ev.precision(kk)
    if metric == "recall":
        return ev.recall(kk)
    if metric == "ndcg":
        return ev.ndcg(kk)
    prop = _require_propensity(
        _resolve_propensity(propensity, ev.truth.n_labels, A, B), f"{metric}_at_k"
    )
    if metric == "psprecision":
        return ev.psprecision(1.0 / prop, kk)
    return ev.psndcg(1.0 / prop, kk)


# --------------------------------------------------------------------------------------
# public metrics
# --------------------------------------------------------------------------------------


def precision_at_k(
    y_true: MatrixLike, y_pred: Any, k: int = 5, *, empty_rows: EmptyRows = "zero"
) -> float:
    """Precision at ``k``: ``|top-k ∩ truth| / k``, averaged over rows.

    Parameters
    ----------
    y_true : sparse matrix or array-like of shape (n, L)
        Ground truth; every nonzero entry is a relevant label (explicit sparse zeros
        are ignored).
    y_pred : sparse matrix, float array of shape (n, L), or int array of shape (n, k')
        Scores (higher is better, ties broken by lower label id; for sparse input only
        stored nonzero entries are predictions) or ranked label ids padded with ``-1``.
    k : int, default 5
        Cut-off rank; a positive integer. The denominator is always ``k``, also when a
        row has fewer predictions.
    empty_rows : {"zero", "skip"}, default "zero"
        ``"zero"``: rows without relevant labels count as 0 in the mean; ``"skip"``:
        they are left out (0.0 if no row remains).

    Returns
    -------
    float
        Mean precision@k over the rows.

    Raises
    ------
    ValueError
        On mismatched shapes, label ids outside ``[-1, L)``, duplicate ids within a row,
        NaN scores, a non-positive ``k`` or an unknown ``empty_rows``.
    """
    return _evaluate("precision", y_true, y_pred, k, empty_rows=empty_rows)


def recall_at_k(
    y_true: MatrixLike, y_pred: Any, k: int = 5, *, empty_rows: EmptyRows = "zero"
) -> float:
    """Recall at ``k``: ``|top-k ∩ truth| / |truth|``, averaged over rows.

    Parameters
    ----------
    y_true : sparse matrix or array-like of shape (n, L)
        Ground truth; every nonzero entry is a relevant label.
    y_pred : sparse matrix, float array of shape (n, L), or int array of shape (n, k')
        Scores or ranked label ids; see :func:`precision_at_k`.
    k : int, default 5
        Cut-off rank; a positive integer.
    empty_rows : {"zero", "skip"}, default "zero"
        Rows without relevant labels score 0 (``"zero"``) or are left out (``"skip"``).

    Returns
    -------
    float
        Mean recall@k over the rows.

    Raises
    ------
    ValueError
        On invalid input; see :func:`precision_at_k`.
    """
    return _evaluate("recall", y_true, y_pred, k, empty_rows=empty_rows)


def ndcg_at_k(
    y_true: MatrixLike, y_pred: Any, k: int = 5, *, empty_rows: EmptyRows = "zero"
) -> float:
    """Normalised discounted cumulative gain at ``k``, averaged over rows.

    ``DCG@k = sum_{r=1..k} rel_r / log2(r + 1)`` with binary relevance ``rel_r`` of the
    label at rank ``r`` (an empty slot is not relevant), and
    ``nDCG@k = DCG@k / IDCG@k`` with ``IDCG@k = sum_{r=1..min(k, |truth|)} 1 / log2(r + 1)``.

    Parameters
    ----------
    y_true : sparse matrix or array-like of shape (n, L)
        Ground truth; every nonzero entry is a relevant label.
    y_pred : sparse matrix, float array of shape (n, L), or int array of shape (n, k')
        Scores or ranked label ids; see :func:`precision_at_k`.
    k : int, default 5
        Cut-off rank; a positive integer.
    empty_rows : {"zero", "skip"}, default "zero"
        Rows without relevant labels score 0 (``"zero"``) or are left out (``"skip"``).

    Returns
    -------
    float
        Mean nDCG@k over the rows.

    Raises
    ------
    ValueError
        On invalid input; see :func:`precision_at_k`.
    """
    return _evaluate("ndcg", y_true, y_pred, k, empty_rows=empty_rows)


def psprecision_at_k(
    y_true: MatrixLike,
    y_pred: Any,
    k: int = 5,
    *,
    propensity: MatrixLike | None = None,
    A: float = 0.55,
    B: float = 1.5,
    empty_rows: EmptyRows = "zero",
) -> float:
    """Propensity-scored precision at ``k`` (normalised, XC-repository convention).

    For each row, ``PSP@k = (sum over relevant labels l in the top k of 1 / p_l) / k``.
    The value returned is ``mean_rows(PSP@k of y_pred) / mean_rows(best PSP@k)``, where
    the best PSP@k of a row takes its relevant labels with the largest ``1 / p_l``. It is
    1.0 for a perfect ranking. If no row has a relevant label the result is 0.0.

    Parameters
    ----------
    y_true : sparse matrix or array-like of shape (n, L)
        Ground truth; every nonzero entry is a relevant label.
    y_pred : sparse matrix, float array of shape (n, L), or int array of shape (n, k')
        Scores or ranked label ids; see :func:`precision_at_k`.
    k : int, default 5
        Cut-off rank; a positive integer.
    propensity : array of shape (L,), or training label matrix of shape (N, L)
        Label propensities ``p_l`` in ``(0, 1]``, usually
        ``xmrrs.metrics.propensity(Y_train)``. A 2-D (sparse or dense) matrix is taken
        as ``Y_train`` and converted with :func:`propensity` using ``A`` and ``B``.
        Required.
    A, B : float, default 0.55 and 1.5
        Propensity model parameters, used only when ``propensity`` is a label matrix.
    empty_rows : {"zero", "skip"}, default "zero"
        Accepted for uniformity; rows without relevant labels add 0 to both means of the
        ratio, so both modes give the same value.

    Returns
    -------
    float
        Normalised PSP@k.

    Raises
    ------
    ValueError
        If ``propensity`` is missing or malformed, or on invalid input (see
        :func:`precision_at_k`).
    """
    return _evaluate(
        "psprecision",
        y_true,
        y_pred,
        k,
        propensity=propensity,
        A=A,
        B=B,
        empty_rows=empty_rows,
    )


def psndcg_at_k(
    y_true: MatrixLike,
    y_pred: Any,
    k: int = 5,
    *,
    propensity: MatrixLike | None = None,
    A: float = 0.55,
    B: float = 1.5,
    empty_rows: EmptyRows = "zero",
) -> float:
    """Propensity-scored nDCG at ``k`` (normalised, XC-repository convention).

    For each row, ``PSDCG@k = sum_{r=1..k} rel_r / (p_{l_r} log2(r + 1))``. The value
    returned is ``mean_rows(PSDCG@k of y_pred) / mean_rows(best PSDCG@k)``, the best
    ranking of a row listing its relevant labels by ``1 / p_l``, largest first. If no row
    has a relevant label the result is 0.0.

    Parameters
    ----------
    y_true : sparse matrix or array-like of shape (n, L)
        Ground truth; every nonzero entry is a relevant label.
    y_pred : sparse matrix, float array of shape (n, L), or int array of shape (n, k')
        Scores or ranked label ids; see :func:`precision_at_k`.
    k : int, default 5
        Cut-off rank; a positive integer.
    propensity : array of shape (L,), or training label matrix of shape (N, L)
        Label propensities; see :func:`psprecision_at_k`. Required.
    A, B : float, default 0.55 and 1.5
        Propensity model parameters, used only when ``propensity`` is a label matrix.
    empty_rows : {"zero", "skip"}, default "zero"
        Accepted for uniformity; both modes give the same value.

    Returns
    -------
    float
        Normalised PSnDCG@k.

    Raises
    ------
    ValueError
        If ``propensity`` is missing or malformed, or on invalid input (see
        :func:`precision_at_k`).
    """
    return _evaluate(
        "psndcg",
        y_true,
        y_pred,
        k,
        propensity=propensity,
        A=A,
        B=B,
        empty_rows=empty_rows,
    )


def propensity(y_train: MatrixLike, A: float = 0.55, B: float = 1.5) -> _F64:
    """Label propensities of Jain et al. (2016) estimated from training labels.

    ``p_l = 1 / (1 + C (N_l + B) ** -A)`` with ``C = (ln N - 1) (B + 1) ** A``, where ``N``
    is the number of training rows and ``N_l`` the number of training rows in which label
    ``l`` is relevant (nonzero). Common settings: ``A=0.55, B=1.5`` (default),
    ``A=0.6, B=2.6`` (Amazon datasets), ``A=0.5, B=0.4`` (Wikipedia datasets).

    Parameters
    ----------
    y_train : sparse matrix or array-like of shape (N, L)
        Training label matrix; every nonzero entry is a relevant label.
    A : float, default 0.55
        Exponent, must be > 0.
    B : float, default 1.5
        Offset, must be > 0.

    Returns
    -------
    numpy.ndarray of float64, shape (L,)
        Propensities in ``(0, 1)``; rarer labels get smaller values.

    Raises
    ------
    ValueError
        If ``A`` or ``B`` is not positive and finite, or if ``N < 3`` (then
        ``ln N - 1 <= 0`` and the model is undefined).
    """
    if not (np.isfinite(A) and A > 0):
        raise ValueError(f"A must be a positive finite number, got {A!r}")
    if not (np.isfinite(B) and B > 0):
        raise ValueError(f"B must be a positive finite number, got {B!r}")
    truth = _as_truth(y_train)
    n = truth.n_rows
    if n < 3:
        raise ValueError(
            f"propensity needs at least 3 training rows (C = (ln N - 1)(B + 1)^A must be "
            f"positive), got N={n}"
        )
    counts = np.bincount(truth.indices, minlength=truth.n_labels).astype(np.float64)
    c = (np.log(n) - 1.0) * (B + 1.0) ** A
    result: _F64 = 1.0 / (1.0 + c * (counts + B) ** (-A))
    return result


def ranking_report(
    y_true: MatrixLike,
    y_pred: Any,
    ks: Iterable[int] | int = (1, 3, 5),
    *,
    propensity: MatrixLike | None = None,
    A: float = 0.55,
    B: float = 1.5,
    empty_rows: EmptyRows = "zero",
) -> dict[str, float]:
    """All ranking metrics at several cut-offs, computed from one top-k selection.

    Parameters
    ----------
    y_true : sparse matrix or array-like of shape (n, L)
        Ground truth; every nonzero entry is a relevant label.
    y_pred : sparse matrix, float array of shape (n, L), or int array of shape (n, k')
        Scores or ranked label ids; see :func:`precision_at_k`.
    ks : int or iterable of int, default (1, 3, 5)
        Cut-offs (positive integers; duplicates are ignored, order is kept).
    propensity : array of shape (L,), or training label matrix of shape (N, L), optional
        If given, ``PSP@k`` and ``PSnDCG@k`` are reported as well; see
        :func:`psprecision_at_k`.
    A, B : float, default 0.55 and 1.5
        Propensity model parameters, used only when ``propensity`` is a label matrix.
    empty_rows : {"zero", "skip"}, default "zero"
        Treatment of rows without relevant labels; see :func:`precision_at_k`.

    Returns
    -------
    dict of str to float
        Keys ``"P@k"``, ``"R@k"``, ``"nDCG@k"`` and, with ``propensity``, ``"PSP@k"`` and
        ``"PSnDCG@k"``, grouped by metric, each in the order of ``ks``.

    Raises
    ------
    ValueError
        If ``ks`` is empty or holds a non-positive value, or on invalid input.
    """
    ks_list: list[object] = [ks] if isinstance(ks, (int, np.integer)) else list(ks)
    cutoffs = list(dict.fromkeys(_check_k(k, "every k in ks") for k in ks_list))
    if not cutoffs:
        raise ValueError("ks must contain at least one cut-off")
    mode = _check_empty_rows(empty_rows)
    ev = _Evaluation(y_true, y_pred, max(cutoffs), empty_rows=mode)
    report: dict[str, float] = {}
    report.update({f"P@{k}": ev.precision(k) for k in cutoffs})
    report.update({f"R@{k}": ev.recall(k) for k in cutoffs})
    report.update({f"nDCG@{k}": ev.ndcg(k) for k in cutoffs})
    prop = _resolve_propensity(propensity, ev.truth.n_labels, A, B)
    if prop is not None:
        inv_p = 1.0 / prop
        report.update({f"PSP@{k}": ev.psprecision(inv_p, k) for k in cutoffs})
        report.update({f"PSnDCG@{k}": ev.psndcg(inv_p, k) for k in cutoffs})
    return report


# --------------------------------------------------------------------------------------
# scikit-learn scorers
# --------------------------------------------------------------------------------------

_METRICS: dict[str, Callable[..., float]] = {
    "precision": precision_at_k,
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "psprecision": psprecision_at_k,
    "psndcg": psndcg_at_k,
}
_PS_KWARGS = frozenset({"propensity", "A", "B", "empty_rows"})
_BASIC_KWARGS = frozenset({"empty_rows"})


class RankingScorer:
    """A scikit-learn compatible scorer ``scorer(estimator, X, Y) -> float``.

    Build it with :func:`make_ranking_scorer`. Predictions come from
    ``estimator.predict_topk(X, k)`` (which returns ``(ids, scores)``; the ids are used)
    when the estimator has that method, and otherwise from
    ``estimator.decision_function(X)``, a score matrix of shape ``(n, L)``. Higher
    values are better, as scikit-learn expects.

    Parameters
    ----------
    metric : {"precision", "recall", "ndcg", "psprecision", "psndcg"}
        Metric to compute.
    k : int
        Cut-off rank.
    **metric_kwargs
        Keyword arguments of the metric (``empty_rows``; for the propensity-scored
        metrics also ``propensity``, ``A`` and ``B``).
    """

    def __init__(self, metric: str, k: int, **metric_kwargs: Any) -> None:
        if metric not in _METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(_METRICS)}")
        allowed = _PS_KWARGS if metric.startswith("ps") else _BASIC_KWARGS
        unknown = sorted(set(metric_kwargs) - allowed)
        if unknown:
            raise ValueError(
                f"unexpected keyword argument(s) {unknown} for metric {metric!r}; "
                f"allowed: {sorted(allowed)}"
            )
        if metric.startswith("ps") and metric_kwargs.get("propensity") is None:
            _require_propensity(None, f"make_ranking_scorer(metric={metric!r})")
        if "empty_rows" in metric_kwargs:
            _check_empty_rows(metric_kwargs["empty_rows"])
        self.metric = metric
        self.k = _check_k(k)
        self.metric_kwargs = dict(metric_kwargs)

    def __call__(self, estimator: Any, X: Any, y_true: MatrixLike) -> float:
        """Score ``estimator`` on ``(X, y_true)``.

        Parameters
        ----------
        estimator : object
            Fitted estimator with ``predict_topk(X, k)`` or ``decision_function(X)``.
        X : array-like or sparse matrix
            Features.
        y_true : sparse matrix or array-like of shape (n, L), label lists, or 1-D labels
            Ground-truth labels in any form ``XRLinearClassifier.fit`` takes: a 0/1
            indicator, one collection of label names per row, or one class label per row.
            Label lists and class labels are matched against ``estimator.classes_``;
            labels unknown to it count as misses.

        Returns
        -------
        float
            The metric value.
        """
        kind: PredKind
        if hasattr(estimator, "predict_topk"):
            result = estimator.predict_topk(X, self.k)
            ids = np.asarray(result[0] if isinstance(result, tuple) else result)
            if not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(
                    f"predict_topk must return integer label ids, got dtype {ids.dtype}"
                )
            pred: Any = ids
            kind = "ids"
        elif hasattr(estimator, "decision_function"):
            pred = estimator.decision_function(X)
            kind = "scores"
        else:
            raise TypeError(
                f"{type(estimator).__name__} has neither predict_topk(X, k) nor "
                "decision_function(X); cannot compute a ranking metric"
            )
        from xmrrs._targets import truth_indicator

        n_rows = int(pred.shape[0])
        y_true = truth_indicator(y_true, getattr(estimator, "classes_", None), n_rows)
        return _evaluate(self.metric, y_true, pred, self.k, kind=kind, **self.metric_kwargs)

    def __repr__(self) -> str:
        parts = [f"metric={self.metric!r}", f"k={self.k}"]
        for name, value in self.metric_kwargs.items():
            if isinstance(value, np.ndarray) or sp.issparse(value):
                shown = f"<{type(value).__name__} of shape {tuple(value.shape)}>"
            else:
                shown = repr(value)
            parts.append(f"{name}={shown}")
        return f"make_ranking_scorer({', '.join(parts)})"


def make_ranking_scorer(
    metric: str = "precision", k: int = 1, **metric_kwargs: Any
) -> RankingScorer:
    """Make a scorer for ``scoring=`` in ``GridSearchCV``, ``cross_val_score`` and friends.

    Parameters
    ----------
    metric : {"precision", "recall", "ndcg", "psprecision", "psndcg"}, default "precision"
        Metric to compute.
    k : int, default 1
        Cut-off rank.
    **metric_kwargs
        Passed to the metric: ``empty_rows``, and for ``"psprecision"``/``"psndcg"``
        the required ``propensity`` plus optional ``A`` and ``B``.

    Returns
    -------
    RankingScorer
        Callable ``scorer(estimator, X, Y) -> float``; see :class:`RankingScorer` for how
        predictions are obtained.

    Notes
    -----
    The scorer accepts every target form ``XRLinearClassifier.fit`` does: a sparse or
    dense 0/1 indicator, label lists and a 1-D class vector (the latter two are matched
    against the fitted ``estimator.classes_``; unknown labels count as misses).
    ``GridSearchCV`` passes a sparse ``Y`` through, but ``cross_val_score``/
    ``cross_validate`` (scikit-learn 1.9) validate ``y`` as array-like and reject sparse
    matrices there. With label lists, pass ``cv=KFold(n)``: an integer ``cv`` makes
    scikit-learn stratify, and its ``type_of_target`` rejects label lists.

    Raises
    ------
    ValueError
        For an unknown metric, a non-positive ``k``, unexpected keyword arguments or a
        propensity-scored metric without ``propensity``.

    Examples
    --------
    >>> from xmrrs.metrics import make_ranking_scorer
    >>> make_ranking_scorer("ndcg", k=3)
    make_ranking_scorer(metric='ndcg', k=3)
    """
    return RankingScorer(metric, k, **metric_kwargs)


#: Scorer for precision@1.
precision_at_1_scorer = make_ranking_scorer("precision", k=1)
#: Scorer for precision@3.
precision_at_3_scorer = make_ranking_scorer("precision", k=3)
#: Scorer for precision@5.
precision_at_5_scorer = make_ranking_scorer("precision", k=5)
#: Scorer for nDCG@5.
ndcg_at_5_scorer = make_ranking_scorer("ndcg", k=5)
