"""A stand-in with ``XRLinearClassifier``'s API, for testing the benchmark harness before the
estimator exists: it wraps :class:`xmrrs.baseline.LabelCentroidBaseline` (exhaustive cosine
to PIFA label centroids; *not* XR-Linear). Use it only with ``--xmrrs-class``, and never
report its figures as xmrrs's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmrrs.baseline import LabelCentroidBaseline


class CentroidStandIn:
    """``fit`` / ``save`` / ``load`` / ``set_params`` / ``predict_topk`` over the baseline."""

    def __init__(self, n_jobs: int | None = None, random_state: int = 0) -> None:
        self.n_jobs = n_jobs
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"n_jobs": self.n_jobs, "random_state": self.random_state}

    def set_params(self, **params: Any) -> CentroidStandIn:
        for key, value in params.items():
            setattr(self, key, value)
        if hasattr(self, "model_"):
            self.model_.n_jobs = self.n_jobs
        return self

    def fit(self, X: Any, Y: Any) -> CentroidStandIn:
        self.model_ = LabelCentroidBaseline(n_jobs=self.n_jobs).fit(X, Y)
        return self

    def save(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        sp.save_npz(Path(path) / "centroids.npz", self.model_.centroids_, compressed=False)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> CentroidStandIn:
        from xmrrs import sparse as xs

        est = cls()
        model = LabelCentroidBaseline()
        model.centroids_ = sp.load_npz(Path(path) / "centroids.npz").tocsr()
        model._zt = xs.transpose(model.centroids_)
        est.model_ = model
        return est

    def predict_topk(self, X: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return self.model_.predict_topk(X, k=k)
