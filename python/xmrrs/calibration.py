"""Calibrated label probabilities for a top-k ranker: :class:`CalibratedRanker`.

The path scores of :class:`~xmrrs.XRLinearClassifier` rank labels well but are not
probabilities: with the default ``"l3-hinge"`` post-processor they lie in (0, 1] and are
typically far above the observed precision. :class:`CalibratedRanker` maps them to
``P(label is a true label of the row | candidate in the top k)``:

1. the training set is split into ``cv`` folds; on each, a clone of the ranker is fitted on
   the other folds and ranks the held-out rows' top ``k`` labels;
2. every held-out (row, candidate) pair is one example: the path score (and, with
   ``method="sigmoid"``, the log of its rank) against whether the label is a true label of
   the row. ``method="isotonic"`` fits a monotone step function of the score
   (:class:`sklearn.isotonic.IsotonicRegression`, interpolated linearly as it predicts);
   ``method="sigmoid"`` fits Platt scaling, a logistic regression on
   ``(score, log(rank))``;
3. the ranker is refitted on all the training rows (``estimator_``) and its scores go
   through that map (as :class:`sklearn.calibration.CalibratedClassifierCV` does with
   ``ensemble=False``). Nothing is fitted on test data.

Only the labels the beam reaches in the top ``k`` get a probability; every other label is
absent from the sparse output (its probability is below the lowest calibrated one in
practice, but it is not estimated). The calibration is of the top-k candidates: use the
same ``k`` (or a smaller one) at prediction time.

Model selection with label lists needs ``cv=KFold(n)`` as for the estimator itself (see
:mod:`xmrrs.estimator`); the folds inside :meth:`CalibratedRanker.fit` are always plain
(shuffled) ``KFold`` splits, so every target form works there.

Example
-------
>>> from xmrrs.calibration import CalibratedRanker
>>> from xmrrs.datasets import make_xmc
>>> from xmrrs import XRLinearClassifier
>>> X, Y = make_xmc(1500, 3000, 100, random_state=0)
>>> cal = CalibratedRanker(XRLinearClassifier(n_jobs=1, n_estimators=1), k=5).fit(X, Y)
>>> P = cal.predict_proba(X[:3])            # sparse (3, 100): top-5 probabilities
>>> sure = cal.predict_above(X[:3], 0.5)     # labels with probability >= 0.5
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import _num_samples, check_is_fitted

from xmrrs._targets import as_indicator, column_to_1d
from xmrrs.estimator import topk_to_csr

__all__ = [
    "CalibratedRanker",
    "expected_calibration_error",
    "reliability_curve",
    "topk_hits",
]

Method = Literal["isotonic", "sigmoid"]
_METHODS = ("isotonic", "sigmoid")
#: Name of the inline JSON extra of the model directory (:mod:`xmrrs.modelfile`) that holds
#: the parameters and the fitted map.
CALIBRATION_EXTRA = "calibration"
FORMAT = "xmrrs.CalibratedRanker"
FORMAT_VERSION = 1


def topk_hits(Y: Any, ids: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Whether each top-k id is a true label of its row.

    Parameters
    ----------
    Y : sparse matrix of shape (n, n_labels)
        0/1 indicator of the true labels.
    ids : ndarray of int, shape (n, k)
        Label ids, ``-1`` for an empty slot (never a hit).

    Returns
    -------
    ndarray of bool, shape (n, k)
    """
    Y = sp.csr_matrix(Y)
    Y.sum_duplicates()
    Y.eliminate_zeros()
    n, n_labels = Y.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(Y.indptr))
    truth = np.sort(rows * n_labels + Y.indices.astype(np.int64))
    keys = np.arange(n, dtype=np.int64)[:, None] * n_labels + ids.astype(np.int64)
    hits: npt.NDArray[np.bool_] = np.isin(keys, truth) & (ids >= 0)
    return hits


def reliability_curve(
    hits: npt.ArrayLike, probs: npt.ArrayLike, n_bins: int = 15
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Mean predicted probability, observed frequency and count in equal-width bins.

    Parameters
    ----------
    hits : array-like of bool
        Outcomes (any shape; flattened).
    probs : array-like of float
        Predicted probabilities in [0, 1], same shape as ``hits``.
    n_bins : int, default=15
        Equal-width bins over [0, 1].

    Returns
    -------
    mean_prob, frequency, count : ndarrays of shape (n_bins,)
        NaN in the first two for empty bins.
    """
    h = np.asarray(hits, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), 0.0, 1.0)
    if h.shape != p.shape:
        raise ValueError(f"hits has {h.size} values, probs {p.size}")
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, weights=p, minlength=n_bins) / count
        freq = np.bincount(b, weights=h, minlength=n_bins) / count
    return mean_p, freq, count


def expected_calibration_error(
    hits: npt.ArrayLike, probs: npt.ArrayLike, n_bins: int = 15
) -> float:
    """ECE: the count-weighted mean of ``|frequency - mean probability|`` over the bins.

    Parameters
    ----------
    hits, probs, n_bins
        As in :func:`reliability_curve` (for a ranker: its top-k candidates' outcomes and
        probabilities, ``-1`` slots left out).

    Returns
    -------
    float
    """
    mean_p, freq, count = reliability_curve(hits, probs, n_bins)
    total = count.sum()
    if total == 0:
        return 0.0
    nz = count > 0
    return float(np.sum(count[nz] * np.abs(freq[nz] - mean_p[nz])) / total)


def _features(scores: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """``(score, log(rank))`` of each valid top-k entry, one row per entry."""
    ranks = np.broadcast_to(np.arange(1, scores.shape[1] + 1, dtype=np.float64), scores.shape)
    return np.column_stack([scores.ravel().astype(np.float64), np.log(ranks.ravel())])


class CalibratedRanker(BaseEstimator):  # type: ignore[misc]
    """A ranker whose top-k scores are mapped to calibrated probabilities.

    Parameters
    ----------
    estimator : estimator with ``fit`` and ``predict_topk(X, k)``, optional
        The ranker (default ``XRLinearClassifier()``); cloned, never modified.
    method : {"isotonic", "sigmoid"}, default="isotonic"
        ``"isotonic"``: monotone map of the path score. ``"sigmoid"``: Platt scaling, a
        logistic regression on the path score and the log of the rank.
    cv : int or cross-validation splitter, default=3
        Folds of the training set that give held-out scores (an int means
        ``KFold(cv, shuffle=True, random_state=random_state)``).
    k : int, default=10
        Candidates per row that are calibrated and returned.
    random_state : int, default=0
        Seed of the fold shuffle.

    Attributes
    ----------
    estimator_ : estimator
        The ranker fitted on all the training rows.
    classes_ : ndarray of shape (n_labels,)
        ``estimator_.classes_``.
    calibrator_ : dict
        The fitted map: ``{"x": [...], "y": [...]}`` (isotonic breakpoints) or
        ``{"coef": [a, b], "intercept": c}`` (sigmoid); plain JSON values.
    n_calibration_pairs_ : int
        Held-out (row, candidate) pairs the map was fitted on.
    """

    estimator_: Any
    classes_: np.ndarray
    calibrator_: dict[str, Any]
    n_calibration_pairs_: int

    def __init__(
        self,
        estimator: Any = None,
        *,
        method: Method = "isotonic",
        cv: Any = 3,
        k: int = 10,
        random_state: int = 0,
    ) -> None:
        self.estimator = estimator
        self.method = method
        self.cv = cv
        self.k = k
        self.random_state = random_state

    def _base(self) -> Any:
        if self.estimator is None:
            from xmrrs.estimator import XRLinearClassifier

            return XRLinearClassifier()
        return self.estimator

    def _splitter(self) -> Any:
        from sklearn.model_selection import KFold

        cv = self.cv
        if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
            if cv < 2:
                raise ValueError(f"cv must be >= 2 folds, got {cv}")
            return KFold(int(cv), shuffle=True, random_state=self.random_state)
        if not hasattr(cv, "split"):
            raise ValueError(f"cv must be an int or a splitter with split(), got {cv!r}")
        return cv

    def fit(self, X: Any, Y: Any) -> CalibratedRanker:
        """Fit the map on held-out folds, then the ranker on all rows.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        Y : any target form the ranker's ``fit`` takes
            Indicator (dense or sparse), label lists or a 1-D class vector.

        Returns
        -------
        self
        """
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, numbers.Integral) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        base = self._base()
        n = _num_samples(X)
        Y = column_to_1d(Y)
        # the folds train on the indicator: every fold model then has the same columns
        Yind, _ = as_indicator(Y, n)
        feats, outcomes = [], []
        for tr, va in self._splitter().split(np.zeros((n, 1))):
            model = clone(base).fit(_safe_indexing(X, tr), Yind[tr])
            ids, scores = model.predict_topk(_safe_indexing(X, va), int(self.k))
            valid = (ids >= 0).ravel()
            feats.append(_features(scores)[valid])
            outcomes.append(topk_hits(Yind[va], ids).ravel()[valid])
        F = np.concatenate(feats)
        hits = np.concatenate(outcomes)
        if hits.all() or not hits.any():
            raise ValueError(
                "the held-out top-k candidates are all hits or all misses: nothing to "
                "calibrate (more rows or another k)"
            )
        self.calibrator_ = self._fit_map(F, hits)
        self.n_calibration_pairs_ = int(hits.size)
        self.estimator_ = clone(base).fit(X, Y)
        self.classes_ = self.estimator_.classes_
        return self

    def _fit_map(self, F: npt.NDArray[np.float64], hits: npt.NDArray[np.bool_]) -> dict[str, Any]:
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
            iso.fit(F[:, 0], hits.astype(np.float64))
            return {
                "x": [float(v) for v in iso.X_thresholds_],
                "y": [float(v) for v in iso.y_thresholds_],
            }
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4, max_iter=1000).fit(F, hits)
        return {"coef": [float(v) for v in lr.coef_.ravel()], "intercept": float(lr.intercept_[0])}

    def calibrate(self, scores: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """Probabilities of a ``(n, k)`` array of path scores, best first (``-inf``: 0)."""
        check_is_fitted(self, "calibrator_")
        c = self.calibrator_
        s = np.asarray(scores, dtype=np.float64)
        if "x" in c:
            p = np.interp(s, np.asarray(c["x"]), np.asarray(c["y"]))
        else:
            z = _features(s) @ np.asarray(c["coef"]) + c["intercept"]
            p = (1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))).reshape(s.shape)
        out: npt.NDArray[np.float64] = np.where(np.isfinite(s), p, 0.0)
        return out

    def predict_topk(
        self, X: Any, k: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The ranker's top ``k`` ids (default ``self.k``) and their probabilities.

        Returns
        -------
        ids : ndarray of int64, shape (n, k)
            As the ranker's ``predict_topk`` (``-1`` pads, probability 0).
        probs : ndarray of float64, shape (n, k)
        """
        check_is_fitted(self, "calibrator_")
        ids, scores = self.estimator_.predict_topk(X, self.k if k is None else k)
        return ids, self.calibrate(scores)

    def predict_proba(self, X: Any, k: int | None = None) -> sp.csr_matrix:
        """Sparse ``(n, n_labels)`` probabilities of the top ``k`` labels of each row.

        Labels outside the top ``k`` are not stored (not estimated); columns follow
        ``classes_``. Rows do not sum to 1: a row can have several true labels.
        """
        ids, probs = self.predict_topk(X, k)
        return topk_to_csr(ids, probs, len(self.classes_))

    def predict_above(
        self, X: Any, threshold: float = 0.5, k: int | None = None, *, return_lists: bool = False
    ) -> sp.csr_matrix | list[list[Any]]:
        """Labels with probability ``>= threshold``, at most ``k`` per row.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        threshold : float, default=0.5
            Probability cut-off in [0, 1].
        k : int, optional
            Largest number of labels per row (default ``self.k``).
        return_lists : bool, default=False
            Return one list of ``classes_`` names per row (best first) instead of a sparse
            0/1 indicator (int32, ``(n_samples, n_labels)``).
        """
        t = float(threshold)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        ids, probs = self.predict_topk(X, k)
        ids = np.where((probs >= t) & (ids >= 0), ids, -1)
        if return_lists:
            classes = np.asarray(self.classes_)
            return [classes[row[row >= 0]].tolist() for row in ids]
        return topk_to_csr(ids, probs, len(self.classes_), binary=True)

    # ------------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to the directory ``path`` (no pickle), crash-safely as a whole.

        One :mod:`xmrrs.modelfile` directory: the ranker's manifest and estimators, with the
        parameters and the fitted map as the ``"calibration"`` JSON extra of the manifest,
        committed together. ``path`` must be new, empty, or an xmrrs model (replaced).

        Raises
        ------
        TypeError
            The ranker is not an :class:`~xmrrs.XRLinearClassifier`.
        FileExistsError
            ``path`` holds something that is not an xmrrs model; nothing was changed.
        """
        from xmrrs.estimator import XRLinearClassifier
        from xmrrs.modelfile import save

        check_is_fitted(self, "calibrator_")
        if not isinstance(self.estimator_, XRLinearClassifier):
            raise TypeError(
                f"save needs an XRLinearClassifier ranker, got {type(self.estimator_).__name__}"
            )
        cv = self.cv if isinstance(self.cv, int) and not isinstance(self.cv, bool) else None
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "params": {
                "method": self.method,
                "cv": cv,
                "k": int(self.k),
                "random_state": self.random_state,
            },
            "calibrator": self.calibrator_,
            "n_calibration_pairs": self.n_calibration_pairs_,
        }
        save(self.estimator_, path, extras_json={CALIBRATION_EXTRA: doc})

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, mmap: bool = False, n_jobs: int | None = None
    ) -> CalibratedRanker:
        """Read a model written by :meth:`save` (``mmap``, ``n_jobs``: as the ranker's load).

        Raises
        ------
        FileNotFoundError
            No model at ``path``.
        ValueError
            Not a calibrated model (e.g. a plain ranker), or a corrupt file.
        """
        from xmrrs.estimator import XRLinearClassifier
        from xmrrs.modelfile import MANIFEST, load_with_extras

        path = Path(path)
        where = path / MANIFEST
        if not os.path.lexists(where) and os.path.lexists(path / "calibration.json"):
            raise ValueError(
                f"{path}: the unreleased layout of CalibratedRanker (ranker/ and "
                "calibration.json), no longer read; fit and save the model again"
            )
        ranker, extras = load_with_extras(XRLinearClassifier, path, mmap=mmap, n_jobs=n_jobs)
        doc: Any = extras.json.get(CALIBRATION_EXTRA)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{where}: not a {FORMAT} model (no {CALIBRATION_EXTRA!r} extra)")
        if doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{where}: unsupported format version {doc.get('format_version')!r}")
        params: Any = doc.get("params")
        c: Any = doc.get("calibrator")
        if not isinstance(params, dict) or not _valid_map(c):
            raise ValueError(f"{where}: corrupt calibration")
        cv = params.get("cv")
        try:
            obj = cls(
                clone(ranker),
                method=params["method"],
                cv=3 if cv is None else cv,
                k=params["k"],
                random_state=params["random_state"],
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: corrupt parameters ({e})") from None
        obj.estimator_ = ranker
        obj.classes_ = ranker.classes_
        obj.calibrator_ = c
        pairs = doc.get("n_calibration_pairs", 0)
        obj.n_calibration_pairs_ = int(pairs) if isinstance(pairs, int) else 0
        return obj


def _valid_map(c: Any) -> bool:
    def floats(v: Any) -> bool:
        return isinstance(v, list) and all(
            isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x) for x in v
        )

    if not isinstance(c, dict):
        return False
    if set(c) == {"x", "y"}:
        return (
            floats(c["x"])
            and floats(c["y"])
            and len(c["x"]) == len(c["y"]) >= 1
            and bool(np.all(np.diff(c["x"]) >= 0))
            and all(0.0 <= y <= 1.0 for y in c["y"])
        )
    if set(c) == {"coef", "intercept"}:
        return floats(c["coef"]) and len(c["coef"]) == 2 and floats([c["intercept"]])
    return False
