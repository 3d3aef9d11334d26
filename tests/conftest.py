"""Shared test helpers: small random sparse matrices with every awkward property."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import strategies as st


@st.composite
def raw_csr(
    draw: st.DrawFn,
    max_rows: int = 12,
    max_cols: int = 12,
    min_rows: int = 0,
    min_cols: int = 0,
    rows: int | None = None,
    cols: int | None = None,
) -> sp.csr_matrix:
    """A CSR matrix that may have unsorted and duplicate indices, empty rows and columns,
    zero-size shapes, explicit zeros, int32 or int64 indices and float32 or float64 values."""
    n = rows if rows is not None else draw(st.integers(min_rows, max_rows))
    m = cols if cols is not None else draw(st.integers(min_cols, max_cols))
    entries = []
    if n > 0 and m > 0:
        entries = draw(
            st.lists(
                st.tuples(
                    st.integers(0, n - 1),
                    st.integers(0, m - 1),
                    st.one_of(st.just(0.0), st.floats(-8, 8, width=32)),
                ),
                max_size=3 * n * m // 2 + 1,
            )
        )
    # group by row but keep the drawn order within a row (unsorted, duplicates possible)
    entries.sort(key=lambda e: e[0])
    idx_dtype = draw(st.sampled_from([np.int32, np.int64]))
    val_dtype = draw(st.sampled_from([np.float32, np.float64]))
    counts = np.bincount([e[0] for e in entries], minlength=n) if entries else np.zeros(n, int)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(idx_dtype)
    indices = np.array([e[1] for e in entries], dtype=idx_dtype)
    data = np.array([e[2] for e in entries], dtype=val_dtype)
    a = sp.csr_matrix((data, indices, indptr), shape=(n, m))
    # scipy may downcast the index dtype; force the drawn one
    a.indptr = indptr
    a.indices = indices
    return a


def dense(a: sp.spmatrix) -> np.ndarray:
    """Dense float64 copy (duplicates summed)."""
    return np.asarray(a.toarray(), dtype=np.float64)
