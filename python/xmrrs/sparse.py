"""Multithreaded sparse kernels of the Rust core, on scipy matrices.

Inputs may be any scipy sparse format (or dense arrays); int32/int64 indices and
float32/float64 values are read without a copy, and every input is validated (monotone
indptr, indices in range, finite values). Unsorted or duplicate indices are accepted:
duplicates are summed, as scipy does. Results are canonical CSR float32 matrices; they are
``csr_array`` when an input is a scipy sparse array, else ``csr_matrix``.

``n_jobs``: ``None`` or ``-1`` uses every core, ``k > 0`` uses ``k`` threads, ``-k`` uses
``cores + 1 - k``. Results do not depend on ``n_jobs``.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp

from xmrrs import _xmrrs
from xmrrs._validation import csr_parts, dense_f32, is_sparray, to_scipy

__all__ = [
    "canonicalize",
    "dot_dense_rows",
    "effective_n_jobs",
    "matmul",
    "matmul_dense",
    "normalize_rows",
    "take_cols",
    "take_rows",
    "to_csc",
    "topk",
    "topk_csr",
    "transpose",
]

Sparse: TypeAlias = sp.csr_matrix | sp.csr_array


def effective_n_jobs(n_jobs: int | None = None) -> int:
    """Number of threads that ``n_jobs`` stands for."""
    return int(_xmrrs.effective_n_jobs(n_jobs))


def canonicalize(a: Any, *, n_jobs: int | None = None) -> Sparse:
    """CSR float32 copy of ``a`` with sorted indices and duplicates summed."""
    return to_scipy(_xmrrs.csr_canonicalize(csr_parts(a, "A"), n_jobs), is_sparray(a))


def transpose(a: Any, *, n_jobs: int | None = None) -> Sparse:
    """``a.T`` as a canonical CSR matrix (parallel counting transpose)."""
    return to_scipy(_xmrrs.csr_transpose(csr_parts(a, "A"), n_jobs), is_sparray(a))


def to_csc(a: Any, *, n_jobs: int | None = None) -> sp.csc_matrix | sp.csc_array:
    """``a`` in CSC form with sorted indices, built by the parallel transpose."""
    n, m, indptr, indices, data = _xmrrs.csr_transpose(csr_parts(a, "A"), n_jobs)
    cls = sp.csc_array if is_sparray(a) else sp.csc_matrix
    out = cls((data, indices, indptr), shape=(m, n), copy=False)
    out.has_sorted_indices = True
    return out


def normalize_rows(a: Any, *, n_jobs: int | None = None) -> Sparse:
    """Rows scaled to unit L2 norm; all-zero rows stay zero."""
    return to_scipy(_xmrrs.csr_normalize_rows(csr_parts(a, "A"), n_jobs), is_sparray(a))


def matmul(a: Any, b: Any, *, n_jobs: int | None = None) -> Sparse:
    """Sparse product ``a @ b`` (Gustavson, parallel over rows balanced by work).

    Exact zeros in the result are dropped, as scipy does.
    """
    parts = _xmrrs.csr_spgemm(csr_parts(a, "A"), csr_parts(b, "B"), n_jobs)
    return to_scipy(parts, is_sparray(a, b))


def matmul_dense(a: Any, b: Any, *, n_jobs: int | None = None) -> np.ndarray:
    """``a @ b`` for sparse ``a`` (n, d) and dense ``b`` (d, k): a dense float32 (n, k) array."""
    parts = csr_parts(a, "A")
    bd = dense_f32(b, "B")
    if bd.shape[0] != parts[1]:
        raise ValueError(f"shape mismatch: A is {parts[:2]} but B has {bd.shape[0]} rows")
    return np.asarray(_xmrrs.csr_dense(parts, bd, n_jobs))


def dot_dense_rows(a: Any, w: Any, *, n_jobs: int | None = None) -> np.ndarray:
    """Row-wise sparse dot against a dense block: ``a @ w.T`` for ``w`` of shape (m, d)."""
    return np.asarray(_xmrrs.csr_dot_dense_rows(csr_parts(a, "A"), dense_f32(w, "W"), n_jobs))


def _ids(ids: Any, name: str) -> np.ndarray:
    """``ids`` as a flat int64 array; anything but integers is an error, not truncated."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu" and arr.size > 0:
        raise ValueError(
            f"{name} must be integer ids, got dtype {arr.dtype}"
            + (" (a boolean mask: pass np.flatnonzero(mask))" if arr.dtype.kind == "b" else "")
        )
    if arr.dtype.kind == "u" and arr.size > 0 and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds an id beyond the int64 range")
    return np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)


def take_rows(a: Any, rows: Any, *, n_jobs: int | None = None) -> Sparse:
    """Rows ``rows`` of ``a`` in that order (repeats allowed; negative ids are an error).

    Raises
    ------
    ValueError
        ``rows`` are not integers (floats, booleans...) or are out of range.
    """
    idx = _ids(rows, "rows")
    return to_scipy(_xmrrs.csr_row_gather(csr_parts(a, "A"), idx, n_jobs), is_sparray(a))


def take_cols(a: Any, cols: Any, *, n_jobs: int | None = None) -> Sparse:
    """Columns ``cols`` of ``a`` in that order (repeats allowed; negative ids are an error).

    Raises
    ------
    ValueError
        ``cols`` are not integers (floats, booleans...) or are out of range.
    """
    idx = _ids(cols, "cols")
    return to_scipy(_xmrrs.csr_col_gather(csr_parts(a, "A"), idx, n_jobs), is_sparray(a))


def topk(a: Any, k: int, *, n_jobs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-``k`` stored entries, best first; ties go to the lower column.

    Parameters
    ----------
    a : sparse matrix or array-like of shape (n_rows, n_cols)
    k : int
        Entries per row (a positive integer; more than ``n_cols`` means ``n_cols``).

    Returns
    -------
    ids : ndarray of int64, shape (n_rows, min(k, n_cols))
        Column ids, padded with -1 where a row has fewer stored entries.
    scores : ndarray of float32, shape (n_rows, min(k, n_cols))
        The matching values, padded with ``-inf``.
    """
    parts = csr_parts(a, "A")
    ids, scores = _xmrrs.csr_topk(parts, _check_k(k, parts[1]), n_jobs)
    return np.asarray(ids), np.asarray(scores)


def topk_csr(a: Any, k: int, *, n_jobs: int | None = None) -> Sparse:
    """``a`` with only the ``k`` largest stored entries of each row kept (``k`` a positive
    integer; all entries when ``k`` is at least the number of columns)."""
    parts = csr_parts(a, "A")
    return to_scipy(_xmrrs.csr_topk_csr(parts, _check_k(k, parts[1]), n_jobs), is_sparray(a))


def _check_k(k: int, n_cols: int) -> int:
    """``k`` capped at ``n_cols`` (a row has no more entries; the core allocates ``k`` per
    row)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return min(int(k), n_cols)
