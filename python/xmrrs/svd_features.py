"""A dense block made from the sparse features: their projection onto a few singular vectors.

:class:`SVDFeatures` is a scikit-learn transformer whose ``transform`` returns a
:class:`~xmrrs.hybrid.HybridMatrix`: the (row-normalised) sparse features beside their
projection onto the top right singular vectors of the training rows (``source="rows"``:
latent semantic analysis) or of the labels' PIFA centroids (``source="labels"``), each
projected row L2-normalised. In a pipeline before :class:`~xmrrs.estimator.XRLinearClassifier`
it gives the linear model a dense, low-rank view of the features, as a text encoder's
embedding does (measured in ``benches/results/validation/lsa_dense_block.md``).

The singular vectors come from scikit-learn's ``randomized_svd`` with the BLAS held to one
thread, so a seed gives the same bits at any thread count. :meth:`SVDFeatures.save` writes
JSON and a ``.npy`` array (no pickle).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from xmrrs._files import load_npy_mapped, read_regular, write_atomic
from xmrrs.hybrid import HybridMatrix

PARAMS_FILE = "svd_features.json"
COMPONENTS_FILE = "svd_components.npy"
_SOURCES = ("rows", "labels")


def _rows(X: Any, normalize: bool) -> sp.csr_matrix:
    """``X`` as CSR float32, rows L2-normalised (zero rows stay zero) when ``normalize``."""
    from xmrrs import _xmrrs
    from xmrrs._validation import finite_csr_parts, to_scipy

    if isinstance(X, HybridMatrix):
        raise TypeError("SVDFeatures takes sparse or dense X, not a HybridMatrix")
    parts = finite_csr_parts(X, "X")
    if normalize:
        parts = _xmrrs.csr_normalize_rows(parts, 1)
    out: sp.csr_matrix = to_scipy(parts).astype(np.float32, copy=False)
    return out


class SVDFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Appends a low-rank dense block to sparse features (output: a ``HybridMatrix``).

    Parameters
    ----------
    n_components : int, default=64
        Width of the dense block (>= 1, below the smaller side of the matrix decomposed).
    source : {"rows", "labels"}, default="rows"
        Whose singular vectors: the training rows' (``fit(X)``), or the PIFA centroids of the
        labels (``fit(X, Y)``; labels x features).
    n_iter : int, default=1
        Power iterations of the randomized SVD (1 was as accurate as 5 for the models on the
        six shared sets' validation splits, at about half the time).
    normalize : bool, default=True
        L2-normalise the rows of ``X`` first (the sparse block is returned normalised too).
    random_state : int, default=0
        Seed of the randomized SVD.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features_in_), float32
        The right singular vectors, best first.
    n_features_in_ : int
        Features of ``X``.
    """

    def __init__(
        self,
        n_components: int = 64,
        *,
        source: str = "rows",
        n_iter: int = 1,
        normalize: bool = True,
        random_state: int = 0,
    ) -> None:
        self.n_components = n_components
        self.source = source
        self.n_iter = n_iter
        self.normalize = normalize
        self.random_state = random_state

    def _check_params(self) -> None:
        from xmrrs.estimator import _integer

        for name, low in (("n_components", 1), ("n_iter", 0), ("random_state", 0)):
            _integer(getattr(self, name), name, low)
        if self.source not in _SOURCES:
            raise ValueError(f"source must be one of {_SOURCES}, got {self.source!r}")
        if not isinstance(self.normalize, bool | np.bool_):
            raise ValueError(f"normalize must be a bool, got {self.normalize!r}")

    def fit(self, X: Any, y: Any = None) -> SVDFeatures:
        """Find the singular vectors (``y``: the labels, needed with ``source="labels"``)."""
        from sklearn.utils.extmath import randomized_svd
        from threadpoolctl import threadpool_limits

        self._check_params()
        Xn = _rows(X, bool(self.normalize))
        if self.source == "labels":
            if y is None:
                raise ValueError('source="labels" needs the labels: fit(X, Y)')
            from xmrrs._targets import as_indicator
            from xmrrs.indexing import label_representation

            Y, _ = as_indicator(y, Xn.shape[0])
            a = sp.csr_matrix(label_representation(Xn, Y, "pifa"))
        else:
            a = Xn
        k = int(self.n_components)
        if k >= min(a.shape):
            raise ValueError(
                f"n_components={k} must be below the smaller side of the {a.shape[0]} x "
                f"{a.shape[1]} matrix decomposed ({'labels' if self.source == 'labels' else 'rows'}"
                " x features)"
            )
        with threadpool_limits(limits=1):  # one BLAS thread: the same bits at any thread count
            _, _, vt = randomized_svd(
                a.astype(np.float64),
                k,
                n_iter=int(self.n_iter),
                random_state=int(self.random_state),
            )
        self.components_ = np.ascontiguousarray(vt, dtype=np.float32)
        self.n_features_in_ = int(Xn.shape[1])
        return self

    def transform(self, X: Any) -> HybridMatrix:
        """``HybridMatrix(X, block)``: ``X`` (row-normalised with ``normalize``) beside its
        projection onto ``components_``, each projected row L2-normalised."""
        check_is_fitted(self, "components_")
        Xn = _rows(X, bool(self.normalize))
        if Xn.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xn.shape[1]} features, but SVDFeatures is expecting "
                f"{self.n_features_in_} features as input"
            )
        from xmrrs.indexing import _normalize_dense

        return HybridMatrix(Xn, _normalize_dense(np.asarray(Xn @ self._basis())))

    def _basis(self) -> npt.NDArray[np.float32]:
        """``components_.T`` C-contiguous, made once per ``components_`` (scipy copies a
        Fortran-ordered operand on every product: 9 MB per query at 35,000 features)."""
        cached = getattr(self, "_basis_of", None)
        if cached is None or cached[0] is not self.components_:
            cached = (self.components_, np.ascontiguousarray(self.components_.T))
            self._basis_of = cached
        basis: npt.NDArray[np.float32] = cached[1]
        return basis

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> HybridMatrix:
        return self.fit(X, y).transform(X)

    # ---------------------------------------------------------------------------- files

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted transformer to the directory ``path`` (created if missing):
        ``svd_features.json`` (parameters and shape) and ``svd_components.npy``, each
        written to a temporary file, synced and renamed into place."""
        check_is_fitted(self, "components_")
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": "xmrrs-svd-features",
            "version": 1,
            "params": self.get_params(),
            "n_features_in": self.n_features_in_,
            "shape": list(self.components_.shape),
        }
        buf = io.BytesIO()
        np.save(buf, self.components_, allow_pickle=False)
        write_atomic(d / COMPONENTS_FILE, buf.getvalue())
        write_atomic(d / PARAMS_FILE, json.dumps(doc).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SVDFeatures:
        """Read a transformer written by :meth:`save`.

        Raises
        ------
        ValueError
            Not such a directory, or a corrupt or inconsistent file (the message names it).
        """
        d = Path(path)
        p = d / PARAMS_FILE
        if not p.is_file():
            raise ValueError(f"{p}: missing SVDFeatures file")
        try:
            doc = json.loads(read_regular(p, "SVDFeatures file", 1 << 20).decode("utf-8"))
            if doc.get("format") != "xmrrs-svd-features" or doc.get("version") != 1:
                raise ValueError("not an SVDFeatures file of version 1")
            est = cls(**doc["params"])
            est._check_params()
            k, n = (int(v) for v in doc["shape"])
            if k != est.n_components or n != int(doc["n_features_in"]) or n < 1:
                raise ValueError(f"shape {doc['shape']} disagrees with the parameters")
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{p}: corrupt SVDFeatures file ({e})") from None
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"{p}: bad SVDFeatures file ({e})") from None
        c = d / COMPONENTS_FILE
        if not c.is_file():
            raise ValueError(f"{c}: missing, or not a regular file")
        m = load_npy_mapped(c)  # no allocation from the header
        if m.shape != (k, n) or m.dtype != np.float32:
            raise ValueError(
                f"{c}: expected a float32 array of shape ({k}, {n}), got {m.dtype} {m.shape}"
            )
        comps = np.array(m, dtype=np.float32)
        if not np.isfinite(comps).all():
            raise ValueError(f"{c}: non-finite values")
        est.components_ = comps
        est.n_features_in_ = n
        return est
