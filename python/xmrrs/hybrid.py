"""Hybrid features: a sparse block and a dense block side by side.

:class:`HybridMatrix` is the input type of a dense-plus-sparse XR-Linear model, for example
TF-IDF next to a text encoder's embedding. The core trains and searches the two blocks
without converting the dense one to CSR: its weights are stored densely and scored with
SIMD (column ``j < n_sparse`` is sparse column ``j``, the rest are the dense columns). The
solvers' copy of the dense rows and the model's dense weights are kept in half precision
(binary16, each row scaled by its own power of two), which halves their bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from xmrrs._validation import dense_finite


def _all_unit(norms: npt.NDArray[np.float64]) -> bool:
    """Every norm is 1 (up to float32 rounding) or 0."""
    return bool(np.all((norms == 0) | (np.abs(norms - 1.0) <= 1e-4)))


class HybridMatrix:
    """Rows made of a sparse block and a dense block.

    Parameters
    ----------
    sparse : sparse matrix of shape (n_samples, n_sparse)
        Converted to CSR float32 (a copy only when needed).
    dense : array-like of shape (n_samples, n_dense)
        Converted to a C-contiguous float32 array (a copy only when needed).

    Notes
    -----
    Supports ``len``, ``shape`` and row indexing (``H[rows]``, ``H[a:b]``), so that
    scikit-learn's splitters and ``GridSearchCV`` can slice it.
    """

    def __init__(self, sparse: Any, dense: Any) -> None:
        if not sp.issparse(sparse):
            raise TypeError(f"sparse must be a scipy sparse matrix, got {type(sparse).__name__}")
        s = sp.csr_matrix(sparse)
        if s.dtype != np.float32:
            s = s.astype(np.float32)
        d = dense_finite(dense, "the dense block")
        if s.shape[0] != d.shape[0]:
            raise ValueError(
                f"the sparse block has {s.shape[0]} rows but the dense block {d.shape[0]}"
            )
        if not np.isfinite(s.data).all():
            raise ValueError("the sparse block contains NaN or infinite values")
        self.sparse: sp.csr_matrix = s
        self.dense: npt.NDArray[np.float32] = d

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_samples, n_sparse + n_dense)``."""
        return (self.sparse.shape[0], self.sparse.shape[1] + self.dense.shape[1])

    @property
    def n_sparse(self) -> int:
        """Width of the sparse block."""
        return int(self.sparse.shape[1])

    @property
    def n_dense(self) -> int:
        """Width of the dense block."""
        return int(self.dense.shape[1])

    def __len__(self) -> int:
        return int(self.sparse.shape[0])

    def __getitem__(self, rows: Any) -> HybridMatrix:
        if isinstance(rows, tuple):
            # H[rows, ...] or H[rows, :] (scikit-learn's indexing) select rows too
            if len(rows) < 1 or any(r is not Ellipsis and r != slice(None) for r in rows[1:]):
                raise TypeError("HybridMatrix supports row indexing only")
            rows = rows[0]
        if isinstance(rows, slice):
            return HybridMatrix(self.sparse[rows], self.dense[rows])
        idx = np.asarray(rows)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return HybridMatrix(self.sparse[idx], self.dense[idx])

    def __repr__(self) -> str:
        return (
            f"HybridMatrix(n_samples={len(self)}, n_sparse={self.n_sparse}, "
            f"n_dense={self.n_dense}, nnz={self.sparse.nnz})"
        )

    def row_norms(self) -> npt.NDArray[np.float64]:
        """The L2 norm of each whole row (both blocks)."""
        s = self.sparse
        sq = np.add.reduceat(np.concatenate([s.data.astype(np.float64) ** 2, [0.0]]), s.indptr[:-1])
        sq[np.diff(s.indptr) == 0] = 0.0
        sq += np.einsum("ij,ij->i", self.dense, self.dense, dtype=np.float64)
        return np.asarray(np.sqrt(sq), dtype=np.float64)

    def rows_are_unit(self) -> bool:
        """Whether every row has unit L2 norm over both blocks (up to float32 rounding) or is
        all zero."""
        return _all_unit(self.row_norms())

    def normalized(self) -> HybridMatrix:
        """Rows scaled to unit L2 norm over both blocks (all-zero rows stay zero); ``self``
        when every row already has unit norm (up to float32 rounding)."""
        norms = self.row_norms()
        return self if _all_unit(norms) else self._scaled(norms)

    def scaled_to_unit(self) -> HybridMatrix:
        """Every row scaled to unit L2 norm over both blocks (all-zero rows stay zero), row
        by row: the rows of a slice come out as they do in the whole."""
        return self._scaled(self.row_norms())

    def _scaled(self, norms: npt.NDArray[np.float64]) -> HybridMatrix:
        """Every row divided by its ``norms`` entry (rows of norm 0 stay zero)."""
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        s = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ self.sparse, dtype=np.float32)
        return HybridMatrix(s, self.dense * scale.astype(np.float32)[:, None])

    def tocsr(self) -> sp.csr_matrix:
        """The same rows as one CSR matrix (the dense block's non-zeros as explicit entries)."""
        s, d = self.sparse, self.dense
        n, nd = d.shape
        if n == 0 or nd == 0 or not d.all():  # zeros in the dense block are left out
            return sp.csr_matrix(sp.hstack([s, sp.csr_matrix(d)], format="csr"))
        # each row: its sparse entries, then all nd dense ones (placed directly: ~5x faster
        # than scipy's hstack, which goes through COO)
        nnz = np.diff(s.indptr).astype(np.int64)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(nnz + nd, out=indptr[1:])
        size = int(indptr[-1])
        itype = np.int32 if max(size, self.shape[1]) < 2**31 else np.int64
        data = np.empty(size, dtype=np.float32)
        indices = np.empty(size, dtype=itype)
        within = np.arange(s.nnz, dtype=np.int64) - np.repeat(s.indptr[:-1].astype(np.int64), nnz)
        pos = np.repeat(indptr[:-1], nnz) + within
        data[pos] = s.data
        indices[pos] = s.indices
        dpos = (indptr[:-1] + nnz)[:, None] + np.arange(nd, dtype=np.int64)
        data[dpos] = d
        indices[dpos] = np.arange(s.shape[1], s.shape[1] + nd, dtype=itype)
        return sp.csr_matrix((data, indices, indptr.astype(itype)), shape=self.shape)
