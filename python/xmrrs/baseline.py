"""A label-centroid baseline. It is *not* the XR-Linear model: it is the yardstick that the
README's demo reports until the tree model lands, and a sanity check for the kernels.

Each label is represented by the L2-normalised sum of the L2-normalised feature rows of its
positive samples (PIFA); a query's score for a label is the cosine between the query and that
centroid. Scoring is exhaustive (every label), in row batches to bound memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from xmrrs import sparse as xs
from xmrrs._validation import csr_parts

__all__ = ["LabelCentroidBaseline"]


class LabelCentroidBaseline:
    """Exhaustive cosine scoring against PIFA label centroids (a baseline).

    Parameters
    ----------
    batch_size : int, default=2048
        Rows scored at once in :meth:`predict_topk`.
    n_jobs : int, optional
        Threads (None: all cores).

    Attributes
    ----------
    centroids_ : csr_matrix of shape (n_labels, n_features)
        Unit-norm label centroids (rows of zeros for labels without positives).
    """

    def __init__(self, batch_size: int = 2048, n_jobs: int | None = None) -> None:
        self.batch_size = batch_size
        self.n_jobs = n_jobs

    def fit(self, X: Any, Y: Any) -> LabelCentroidBaseline:
        """Compute the label centroids from features ``X`` and label indicators ``Y``."""
        nx, ny = csr_parts(X, "X")[0], csr_parts(Y, "Y")[0]
        if nx != ny:
            raise ValueError(f"X has {nx} rows but Y has {ny}")
        Xn = xs.normalize_rows(X, n_jobs=self.n_jobs)
        Yb = sp.csr_matrix(Y, dtype=np.float32, copy=True)
        Yb.data[:] = 1.0
        Z = xs.matmul(xs.transpose(Yb, n_jobs=self.n_jobs), Xn, n_jobs=self.n_jobs)
        self.centroids_ = xs.normalize_rows(Z, n_jobs=self.n_jobs)
        self._zt = xs.transpose(self.centroids_, n_jobs=self.n_jobs)
        return self

    def predict_topk(self, X: Any, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` label ids (padded with -1) and cosine scores (padded with -inf)."""
        if not hasattr(self, "_zt"):
            raise RuntimeError("call fit before predict_topk")
        Xn = xs.normalize_rows(X, n_jobs=self.n_jobs)
        if Xn.shape[1] != self._zt.shape[0]:
            raise ValueError(f"X has {Xn.shape[1]} features, the model {self._zt.shape[0]}")
        ids, scores = [], []
        for s in range(0, Xn.shape[0], self.batch_size):
            S = xs.matmul(Xn[s : s + self.batch_size], self._zt, n_jobs=self.n_jobs)
            i, v = xs.topk(S, k, n_jobs=self.n_jobs)
            ids.append(i)
            scores.append(v)
        if not ids:
            return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
        return np.vstack(ids), np.vstack(scores)
