"""A benchmark adapter: :class:`~xmrrs.svd_features.SVDFeatures` before
:class:`~xmrrs.XRLinearClassifier`, with the API the xmrrs runner drives (``fit``, ``save``,
``load(mmap=)``, ``set_params(n_jobs=)``, ``predict_topk``), so that ``suite.py`` times the
pair beside PECOS::

    .venv/bin/python benches/suite.py --validation 0.2 --libraries pecos-xrlinear,svd64 \\
        --xmrrs-config 'svd64={"__class__": "runners.svd_xr:SVDXRLinear", "n_components": 64}'

Its own parameters are ``n_components``, ``source`` and ``n_iter`` (those of
``SVDFeatures``); every other one goes to ``XRLinearClassifier``. Fit and prediction times
include the SVD and the projection of the rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xmrrs import XRLinearClassifier
from xmrrs.svd_features import SVDFeatures

_OWN = ("n_components", "source", "n_iter")


class SVDXRLinear:
    def __init__(
        self,
        n_jobs: int | None = None,
        random_state: int = 0,
        n_components: int = 64,
        source: str = "labels",
        n_iter: int = 1,
        **xr: Any,
    ) -> None:
        self.svd = SVDFeatures(
            n_components, source=source, n_iter=n_iter, random_state=random_state
        )
        self.xr = XRLinearClassifier(n_jobs=n_jobs, random_state=random_state, **xr)

    def get_params(self) -> dict[str, Any]:
        own = {k: v for k, v in self.svd.get_params().items() if k in _OWN}
        return {**own, **self.xr.get_params()}

    def fit(self, X: Any, Y: Any) -> SVDXRLinear:
        self.xr.fit(self.svd.fit_transform(X, Y), Y)
        return self

    @property
    def tree_(self) -> Any:
        return self.xr.tree_

    def save(self, path: Any) -> None:
        self.svd.save(Path(path) / "svd")
        self.xr.save(Path(path) / "xr")

    @classmethod
    def load(cls, path: Any, mmap: bool = False) -> SVDXRLinear:
        obj = cls.__new__(cls)
        obj.svd = SVDFeatures.load(Path(path) / "svd")
        obj.xr = XRLinearClassifier.load(Path(path) / "xr", mmap=mmap)
        return obj

    def set_params(self, **params: Any) -> SVDXRLinear:
        self.xr.set_params(**params)
        return self

    def predict_topk(self, X: Any, k: int = 10) -> Any:
        return self.xr.predict_topk(self.svd.transform(X), k=k)
