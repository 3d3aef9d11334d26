"""Conversion of user inputs to what the Rust core accepts, with clear errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

CsrParts = tuple[int, int, np.ndarray, np.ndarray, np.ndarray]

_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
_VALUE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_sparray(*objs: Any) -> bool:
    """True when any argument is a scipy sparse *array* (``csr_array``...), not a matrix."""
    return any(isinstance(o, sp.sparray) for o in objs)


def dense_finite(a: Any, name: str) -> np.ndarray:
    """``a`` as a C-contiguous 2-D float32 array (a copy only when needed), checked numeric
    and finite."""
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def finite_csr_parts(a: Any, name: str = "X") -> CsrParts:
    """:func:`csr_parts` of ``a`` (a dense ``a`` converted to float32 first), with
    scikit-learn's error for NaN or infinite values raised here rather than by the core."""
    if not sp.issparse(a):
        a = sp.csr_matrix(np.asarray(a, dtype=np.float32))
    parts = csr_parts(a, name)
    if parts[4].dtype.kind == "f" and not np.isfinite(parts[4]).all():
        raise ValueError(f"Input {name} contains NaN or infinity.")
    return parts


def csr_parts(a: Any, name: str = "X") -> CsrParts:
    """Return ``(n_rows, n_cols, indptr, indices, data)`` of ``a`` as a CSR matrix.

    Accepts any scipy sparse format or a 2-D array-like. int32/int64 index arrays and
    float32/float64 values pass through without a copy (the core validates them: monotone
    indptr, indices in range, finite values); other numeric dtypes are cast to float32.
    """
    if sp.issparse(a):
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got {a.ndim}-D")
        m = a if a.format == "csr" else a.tocsr()
    else:
        arr = np.asarray(a)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array or sparse matrix, got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
        m = sp.csr_matrix(arr.astype(np.float32, copy=False))
    data = m.data
    if data.dtype.kind == "c":
        raise TypeError(f"{name} has complex values ({data.dtype}); only real values are supported")
    if data.dtype not in _VALUE_DTYPES:
        if data.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric, got dtype {data.dtype}")
        data = data.astype(np.float32)
    indptr, indices = m.indptr, m.indices
    if indptr.dtype not in _INDEX_DTYPES:
        indptr = indptr.astype(np.int64)
    if indices.dtype not in _INDEX_DTYPES:
        indices = indices.astype(np.int64)
    n_rows, n_cols = m.shape
    # contiguous and aligned (buffers at odd offsets, as dask and pickle can hand over, are
    # copied; the core borrows only aligned memory)
    return (int(n_rows), int(n_cols), _borrowable(indptr), _borrowable(indices), _borrowable(data))


def _borrowable(a: np.ndarray) -> np.ndarray:
    """``a`` when C-contiguous and aligned (checked by its flags: ``np.require`` costs
    microseconds per call, a one-row query's scale), else an aligned contiguous copy."""
    flags = a.flags
    if flags.c_contiguous and flags.aligned:
        return a
    return np.require(a, requirements=("C", "A"))


def to_scipy(parts: CsrParts, sparray: bool = False) -> sp.csr_matrix | sp.csr_array:
    """Wrap a CSR tuple from the core into a scipy matrix (or array) without copying values."""
    n_rows, n_cols, indptr, indices, data = parts
    cls = sp.csr_array if sparray else sp.csr_matrix
    m = cls((data, indices, indptr), shape=(n_rows, n_cols), copy=False)
    m.has_sorted_indices = True
    m.has_canonical_format = True
    return m


def dense_f32(a: Any, name: str, ndim: int = 2) -> np.ndarray:
    """A C-contiguous float32 copy (or view) of a dense operand, with a clear shape check."""
    arr = np.asarray(a)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    return np.require(arr, dtype=np.float32, requirements=("C", "A"))
