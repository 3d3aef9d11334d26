"""The scikit-learn estimator: :class:`XRLinearClassifier`.

The three stages are separate and replaceable:

1. *representation*: one row per label (``"pifa"`` by default; any name accepted by
   :func:`xmrrs.indexing.label_representation`, a callable ``f(X, Y) -> Z``, or a precomputed
   matrix with one row per label);
2. *indexer*: the label tree (a :class:`~xmrrs.indexing.HierarchicalKMeans` built from
   ``branching`` / ``max_leaf_size`` / ``kmeans_max_iter`` by default; or any object with
   ``fit(Z)`` that sets ``tree_``; or a ready :class:`~xmrrs.indexing.ClusterTree`);
3. *matcher and ranker*: the XR-Linear models trained level by level over that tree, queried
   with beam search.

Example
-------
>>> from xmrrs import XRLinearClassifier
>>> from xmrrs.datasets import make_xmc
>>> X, Y = make_xmc(2000, 5000, 200, random_state=0)
>>> clf = XRLinearClassifier(n_jobs=1).fit(X[:1500], Y[:1500])
>>> ids, scores = clf.predict_topk(X[1500:], k=5)

Targets
-------
``fit`` takes a 0/1 indicator ``Y`` (dense or sparse), label lists (one collection of
label names per row) or a 1-D ``y`` of one class per row (extreme multi-class, as
napkinXC supports). With a 1-D ``y``, :meth:`~XRLinearClassifier.predict` returns class
labels and :meth:`~XRLinearClassifier.score` is the accuracy, as for any scikit-learn
classifier; otherwise ``predict`` is the sparse top-k indicator and ``score`` is P@1.

Model selection
---------------
The scorers of :mod:`xmrrs.metrics` and ``score`` take every one of these forms (label
lists and class labels are matched against the fitted ``classes_``; labels unknown to it
count as misses). ``GridSearchCV`` and ``cross_val_score`` work with all of them, with one
restriction that comes from scikit-learn: for a classifier, an integer ``cv`` means
``StratifiedKFold``, whose ``type_of_target`` rejects label lists ("legacy multi-label data
representation"). With label lists pass a splitter, ``cv=KFold(n_splits)``. A sparse ``Y``
works with ``GridSearchCV`` but not with ``cross_val_score`` / ``cross_validate``, which
validate ``y`` as a dense array-like (pass ``Y.toarray()`` or label lists there).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from xmrrs import _xmrrs
from xmrrs._progress import Progress
from xmrrs._targets import (
    as_indicator,
    column_to_1d,
    is_class_vector,
    relevance_matrix,
    truth_indicator,
)
from xmrrs._validation import csr_parts, is_sparray
from xmrrs.hybrid import HybridMatrix
from xmrrs.indexing import ClusterTree, HierarchicalKMeans, check_branching, label_representation
from xmrrs.sparse import normalize_rows

__all__ = ["XRLinearClassifier"]

Loss = Literal["squared_hinge", "hinge", "logistic"]
NegativeScheme = Literal["tfn", "man", "tfn+man"]
Ensemble = Literal["mixed", "seeds"]
_ENSEMBLES = ("mixed", "seeds")
_LOSSES = ("squared_hinge", "hinge", "logistic")
_NEGATIVES = ("tfn", "man", "tfn+man")
_REPRESENTATIONS = ("pifa", "pii", "spectral")


def _number(value: Any, name: str, *, low: float, low_open: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(float(value))
    ):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    return float(value)


def check_representation(Z: Any, n_labels: int) -> Any:
    """``Z`` if it has one row per label, else a ``ValueError``."""
    if Z is None or Z.shape[0] != n_labels:
        raise ValueError(
            f"the label representation must have one row per label ({n_labels}), got "
            f"{None if Z is None else Z.shape}"
        )
    return Z


def _integer(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_top_max_samples(value: Any) -> float | None:
    """``top_max_samples`` checked: None, a float in (0, 1] or an int >= 1."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"top_max_samples must be None, a float or an int, got {value!r}")
    if isinstance(value, numbers.Integral):
        return _integer(value, "top_max_samples", 1)
    v = _number(value, "top_max_samples", low=0.0, low_open=True)
    if v > 1.0:
        raise ValueError(
            f"top_max_samples as a float is a share of the rows, in (0, 1]; got {value!r} "
            "(pass an int for a number of rows)"
        )
    return v


def top_fraction(top_max_samples: float | None, n_samples: int) -> float:
    """The share of the rows the top layer trains on (see ``top_max_samples``)."""
    if top_max_samples is None:
        return 1.0
    if isinstance(top_max_samples, int):
        return min(1.0, top_max_samples / max(1, n_samples))
    return float(top_max_samples)


def _seed(random_state: Any) -> int:
    if random_state is None:
        return 0
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    raise ValueError(f"random_state must be None, an int or a RandomState, got {random_state!r}")


def _sparse_out(m: sp.csr_matrix) -> sp.csr_matrix | sp.csr_array:
    """``m`` as the sparse flavour scikit-learn's ``sparse_interface`` asks for."""
    from sklearn import get_config

    if get_config().get("sparse_interface", "spmatrix") == "sparray":
        return sp.csr_array(m)
    return m


def topk_to_csr(
    ids: np.ndarray, scores: np.ndarray, n_labels: int, *, binary: bool = False
) -> sp.csr_matrix:
    """CSR matrix ``(n, n_labels)`` of top-k ``(ids, scores)`` rows (``-1`` ids dropped),
    indices sorted; values are the scores, or int32 ones when ``binary``."""
    n = ids.shape[0]
    keep = ids >= 0
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    order = np.argsort(np.where(keep, ids, np.iinfo(np.int64).max), axis=1, kind="stable")
    rows = np.arange(n)[:, None]
    ids_s, sc_s, keep_s = ids[rows, order], scores[rows, order], keep[rows, order]
    data = np.ones(int(indptr[-1]), np.int32) if binary else sc_s[keep_s]
    return sp.csr_matrix((data, ids_s[keep_s].astype(np.int32), indptr), shape=(n, n_labels))


class XRLinearClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """XR-Linear extreme multi-label ranker (PECOS's model, in Rust).

    Parameters
    ----------
    representation : {"pifa", "pii", "spectral"}, callable or array-like, default="pifa"
        Label representation clustered into the tree: a name for
        :func:`xmrrs.indexing.label_representation`, a callable ``f(X, Y) -> Z`` (``X`` rows
        normalised if ``normalize``), or a matrix ``Z`` with one row per label. It is
        computed once per fit and shared by the trees (with ``"pifa"`` and
        ``ensemble="mixed"``, trees 2, 4, ... are clustered on ``"pii"`` instead).
    indexer : object or ClusterTree, optional
        ``None`` builds :class:`~xmrrs.indexing.HierarchicalKMeans` from ``branching``,
        ``max_leaf_size`` and ``kmeans_max_iter``. An object with ``fit(Z)`` setting
        ``tree_`` is cloned and fitted on ``Z``; a :class:`~xmrrs.indexing.ClusterTree` over
        the labels is used as it is (``representation`` is then not computed; every one of
        the ``n_estimators`` shares it, so use ``n_estimators=1`` with a given tree).
    branching : int or sequence of int, default=100
        Largest fan-out of the default indexer (PECOS: 16), or every level's fan-out
        (for example :func:`xmrrs.indexing.pecos_fanouts` to match PECOS's tree).
    max_leaf_size : int, default=100
        Largest number of labels in a leaf of the default indexer (PECOS: 100).
    kmeans_max_iter : int, default=20
        Lloyd iterations per node of the default indexer.
    loss : {"squared_hinge", "hinge", "logistic"}, default="squared_hinge"
        Loss of the per-node linear models (L2-regularised, solved in the dual).
    Cp : float, default=0.8
        Penalty of positive examples (> 0; PECOS: 1). With 3 mixed trees, 0.8 scored
        about 0.003 higher P@1 than 1 on debian/deps and 0.003 lower on the 200k synthetic
        set (means over seeds 0-4; see the README).
    Cn : float, default=1.0
        Penalty of negative examples (> 0).
    max_iter : int, default=100
        Coordinate-descent passes per node.
    tol : float, default=0.1
        Stopping tolerance of the solver (> 0). With a :class:`~xmrrs.hybrid.HybridMatrix`,
        ``tol=1.0`` about halves the solver's passes: on debian/texts with MiniLM embeddings
        it fit in 1.25-1.85x TF-IDF's time (against 2.3-2.8x at 0.1), at P@k at or above the
        same columns as one CSR matrix with two trees (see ``benches/README.md``).
    bias : float, default=1.0
        Value of the constant feature (0 disables the bias term).
    threshold : float, default=0.2
        Weights with a smaller magnitude are dropped (model size and speed; PECOS: 0.1).
        0.2 halves the model of 0.1 at about the same P@k (see ``n_estimators``).
    negatives : {"tfn", "man", "tfn+man"}, default="tfn"
        Negatives of each node: instances of the same parent cluster (``tfn``), those the
        upper levels' beam reaches on the training set (``man``), or both.
    n_estimators : int, default=2
        Trees, each with its own models and k-means seed ``random_state + i``; their scores
        are averaged (Parabel uses 3). The defaults (2 trees, ``threshold=0.2``) were chosen
        on validation splits of six training sets by a rule fixed beforehand (most of the
        targets met: P@k at least the best peer's, time at most half of PECOS's, model at
        most 1.5x; see ``benches/README.md``): against 3 trees at 0.1 they train in about
        2/3 of the time with a third of the model, at about 0.002 lower mean P@k.
        ``n_estimators=3`` is the more accurate choice where time and size matter less.
    ensemble : {"mixed", "seeds"}, default="mixed"
        How the trees of the default indexer differ. ``"seeds"``: only by their seeds.
        ``"mixed"``: tree 0 is the balanced tree of ``branching`` and ``max_leaf_size``;
        trees 1, 2, ... are *unbalanced* (each label joins its nearest centroid, as in
        Bonsai) with the same depth as tree 0 and fan-out ``branching // 2`` (odd ``i``) or
        ``branching`` (even ``i``) at every level, so their leaves are smaller and uneven
        (leaves still hold at most ``max_leaf_size`` labels where that many leaves can hold
        them all, else as few as they can, evenly; when tree 0 is one leaf, so are they).
        With ``representation="pifa"``, the even trees are clustered on PII (each label's
        training instances) instead: a second view of the labels, and cheaper to cluster.
        Mixed trees err differently and average better than same-shape trees on most of our
        benchmark sets (see the README). Ignored with a given ``indexer``.
    beam_size : int, default=10
        Beam width of the search on the inner levels.
    top_k : int, default=10
        Labels returned by :meth:`predict` (multi-label targets) and
        :meth:`decision_function`.
    post_processor : str, default="l3-hinge"
        Margin transform combined along the path: ``"l3-hinge"`` (``exp(-max(0, 1-m)^3)``,
        multiplied), ``"sigmoid"``, ``"noop"``, ``"log-l3-hinge"``, ``"log-sigmoid"``...
    normalize : bool, default=True
        L2-normalise the rows of ``X`` in ``fit`` and ``predict`` (XR-Linear expects it).
        A :class:`~xmrrs.hybrid.HybridMatrix` is normalised over both blocks.
    dense_in_ranker : bool, default=True
        With a :class:`~xmrrs.hybrid.HybridMatrix`: whether the label layer (the ranker)
        also trains on the dense block. ``False`` trains it on the sparse block alone (the
        matcher layers keep the dense block): on debian/texts with MiniLM embeddings it fit
        in 1.5-1.9x TF-IDF's time against 2.4-3.3x (measured before the solvers kept the
        dense rows in half precision), at 0.05-0.4 points lower P@k (see
        ``benches/README.md``).
    dense_in_tree : bool, default=False
        With a :class:`~xmrrs.hybrid.HybridMatrix`: whether the label representation the
        trees are clustered on (``representation``, and PII for the mixed ensemble's even
        trees) includes the dense block. ``False`` computes it from the sparse block alone
        (its rows L2-normalised with ``normalize``): on validation splits of debian/texts
        (TF-IDF + MiniLM) it fitted deps 1.3-1.5x faster than ``True`` at equal or higher
        P@k, and tags at about the same time and P@k (see ``benches/README.md``).
    top_max_samples : int, float or None, default=None
        Rows the top layer (the root's children, the only models trained on every row)
        trains on. ``None``: every row. A float in (0, 1]: that share of the rows; an int
        >= 1: about that many (a share of ``min(1, top_max_samples / n_samples)``). Each row
        is kept or not by a hash of the seed and its index, so row blocks choose theirs
        independently: :func:`xmrrs.distributed.fit` then gathers only the sample for that
        task, which bounds its memory (see ``docs/distributed.md``). The layers below train
        on every row that reaches them.
    n_jobs : int, optional
        Threads (None or -1: all cores). Results do not depend on it.
    random_state : int, RandomState or None, default=0
        Seed of the indexer and the solver.
    verbose : int or bool, default=0
        When > 0 (or True): a progress bar over the stages and their times on stderr.

    Attributes
    ----------
    classes_ : ndarray of shape (n_labels,)
        Label of each column of the outputs: ``arange(n_labels)`` for an indicator ``Y``,
        the sorted label names when ``Y`` was a list of label lists or a 1-D ``y``.
    target_type_ : {"multilabel", "multiclass"}
        ``"multiclass"`` when ``fit`` got a 1-D ``y`` (one class per row): :meth:`predict`
        then returns class labels and :meth:`score` is the accuracy.
    n_features_in_ : int
        Number of features seen in ``fit``.
    tree_ : ClusterTree
        The label tree (of the first estimator when ``n_estimators > 1``).
    models_ : list
        The compiled models (``xmrrs._xmrrs.XrModel``), one per estimator.
    n_iter_ : ndarray of shape (n_estimators, depth + 1)
        Mean number of solver passes per node, for each estimator and layer (not saved in
        model files).
    """

    def __init__(
        self,
        *,
        representation: str | Callable[..., Any] | Any = "pifa",
        indexer: Any = None,
        branching: int | Sequence[int] = 100,
        max_leaf_size: int = 100,
        kmeans_max_iter: int = 20,
        loss: Loss = "squared_hinge",
        Cp: float = 0.8,
        Cn: float = 1.0,
        max_iter: int = 100,
        tol: float = 0.1,
        bias: float = 1.0,
        threshold: float = 0.2,
        negatives: NegativeScheme = "tfn",
        n_estimators: int = 2,
        ensemble: Ensemble = "mixed",
        beam_size: int = 10,
        top_k: int = 10,
        post_processor: str = "l3-hinge",
        normalize: bool = True,
        dense_in_ranker: bool = True,
        dense_in_tree: bool = False,
        top_max_samples: float | None = None,
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = 0,
        verbose: int | bool = 0,
    ) -> None:
        self.representation = representation
        self.indexer = indexer
        self.branching = branching
        self.max_leaf_size = max_leaf_size
        self.kmeans_max_iter = kmeans_max_iter
        self.loss = loss
        self.Cp = Cp
        self.Cn = Cn
        self.max_iter = max_iter
        self.tol = tol
        self.bias = bias
        self.threshold = threshold
        self.negatives = negatives
        self.n_estimators = n_estimators
        self.ensemble = ensemble
        self.beam_size = beam_size
        self.top_k = top_k
        self.post_processor = post_processor
        self.normalize = normalize
        self.dense_in_ranker = dense_in_ranker
        self.dense_in_tree = dense_in_tree
        self.top_max_samples = top_max_samples
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------------------ tags

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_label = True
        tags.classifier_tags.multi_class = True
        tags.target_tags.two_d_labels = True
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags

    # ------------------------------------------------------------------------ validation

    def _check_params(self) -> dict[str, Any]:
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if self.ensemble not in _ENSEMBLES:
            raise ValueError(f"ensemble must be one of {_ENSEMBLES}, got {self.ensemble!r}")
        if self.negatives not in _NEGATIVES:
            raise ValueError(f"negatives must be one of {_NEGATIVES}, got {self.negatives!r}")
        if not isinstance(self.post_processor, str):
            raise ValueError(f"post_processor must be a string, got {self.post_processor!r}")
        _xmrrs.check_post_processor(self.post_processor)
        if not isinstance(self.normalize, bool | np.bool_):
            raise ValueError(f"normalize must be a bool, got {self.normalize!r}")
        if not isinstance(self.dense_in_ranker, bool | np.bool_):
            raise ValueError(f"dense_in_ranker must be a bool, got {self.dense_in_ranker!r}")
        if not isinstance(self.dense_in_tree, bool | np.bool_):
            raise ValueError(f"dense_in_tree must be a bool, got {self.dense_in_tree!r}")
        if isinstance(self.representation, str) and self.representation not in _REPRESENTATIONS:
            raise ValueError(
                f"representation must be one of {_REPRESENTATIONS}, a callable or a matrix, "
                f"got {self.representation!r}"
            )
        if not isinstance(self.verbose, bool | np.bool_):  # True / False as in scikit-learn
            _integer(self.verbose, "verbose", 0)
        return {
            "branching": check_branching(self.branching),
            "max_leaf_size": _integer(self.max_leaf_size, "max_leaf_size", 1),
            "kmeans_max_iter": _integer(self.kmeans_max_iter, "kmeans_max_iter", 0),
            "loss": self.loss,
            "cp": _number(self.Cp, "Cp", low=0.0, low_open=True),
            "cn": _number(self.Cn, "Cn", low=0.0, low_open=True),
            "max_iter": _integer(self.max_iter, "max_iter", 1),
            "tol": _number(self.tol, "tol", low=0.0, low_open=True),
            "bias": _number(self.bias, "bias", low=0.0),
            "threshold": _number(self.threshold, "threshold", low=0.0),
            "negatives": self.negatives,
            "n_estimators": _integer(self.n_estimators, "n_estimators", 1),
            "beam_size": _integer(self.beam_size, "beam_size", 1),
            "top_k": _integer(self.top_k, "top_k", 1),
            "seed": _seed(self.random_state),
            "top_max_samples": check_top_max_samples(self.top_max_samples),
        }

    def _log(self, msg: str) -> None:
        if self.verbose:
            Progress(quiet=False).write(f"[XRLinearClassifier] {msg}")

    def _x_fit(self, X: Any) -> tuple[Any, Any]:
        if isinstance(X, HybridMatrix):
            if len(X) < 1:
                raise ValueError(
                    f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 "
                    f"is required by {type(self).__name__}."
                )
            if X.n_sparse < 1:
                raise ValueError("the sparse block of a HybridMatrix needs at least 1 column")
            self.n_features_in_ = X.shape[1]
            Xh = X.normalized() if self.normalize else X
            return csr_parts(Xh.sparse, "X"), Xh
        if sp.issparse(X) and X.format == "csr" and X.ndim == 2:
            # scipy CSR: the checks validate_data would make (it has no feature names to
            # find, and its first call costs a dataframe-plugin scan of ~20 ms); the core
            # validates the index arrays
            for n, what in zip(X.shape, ("sample", "feature"), strict=True):
                if n < 1:
                    raise ValueError(
                        f"Found array with 0 {what}(s) (shape={X.shape}) while a minimum of 1 "
                        f"is required by {type(self).__name__}."
                    )
            if X.dtype.kind in "fc" and not np.isfinite(X.data).all():
                raise ValueError("Input X contains NaN or infinity.")
            self.n_features_in_ = X.shape[1]
        else:
            X = validate_data(
                self,
                X,
                reset=True,
                accept_sparse=("csr", "csc", "coo"),
                dtype=(np.float32, np.float64),
                ensure_min_samples=1,
            )
        parts = csr_parts(X, "X")
        # rows of unit norm already (up to rounding) are used as they are: no copy
        if self.normalize and not _xmrrs.csr_rows_are_unit(parts, self.n_jobs):
            parts = _xmrrs.csr_normalize_rows(parts, self.n_jobs)
        return parts, sp.csr_matrix(
            (parts[4], parts[3], parts[2]), shape=(parts[0], parts[1]), copy=False
        )

    def _x_predict(self, X: Any) -> tuple[Any, Any]:
        """CSR parts of ``X`` (and the dense block of a hybrid model) for prediction; a light
        path for scipy CSR input."""
        self._check_fitted()
        n_dense = self.models_[0].n_dense
        if isinstance(X, HybridMatrix) != (n_dense > 0):
            raise ValueError(
                f"this model was fitted on {'a HybridMatrix' if n_dense else 'sparse or dense'} "
                f"input; got {type(X).__name__}"
            )
        if isinstance(X, HybridMatrix):
            if X.shape[1] != self.n_features_in_ or X.n_dense != n_dense:
                raise ValueError(
                    f"X has {X.n_sparse} sparse and {X.n_dense} dense features, but "
                    f"{type(self).__name__} is expecting {self.n_features_in_ - n_dense} and "
                    f"{n_dense}"
                )
            Xh = X.normalized() if self.normalize else X
            return csr_parts(Xh.sparse, "X"), Xh.dense
        if not (sp.issparse(X) and X.format == "csr" and X.ndim == 2):
            X = validate_data(
                self,
                X,
                reset=False,
                accept_sparse=("csr", "csc", "coo"),
                dtype=(np.float32, np.float64),
            )
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        return csr_parts(X, "X"), None

    # ------------------------------------------------------------------------------- fit

    def _tree_input(self, Xn: Any) -> Any:
        """The rows the label representations are computed from (see ``dense_in_tree``)."""
        if isinstance(Xn, HybridMatrix) and not self.dense_in_tree:
            return normalize_rows(Xn.sparse, n_jobs=self.n_jobs) if self.normalize else Xn.sparse
        return Xn

    def _representation(self, Xn: sp.csr_matrix, Y: sp.csr_matrix, seed: int) -> Any:
        """The label representation clustered into every tree (None for a given tree)."""
        n_labels = Y.shape[1]
        if isinstance(self.indexer, ClusterTree):
            if self.indexer.n_labels != n_labels:
                raise ValueError(
                    f"the indexer tree has {self.indexer.n_labels} labels but Y has {n_labels}"
                )
            return None
        rep = self.representation
        if isinstance(rep, str):
            Z = label_representation(Xn, Y, rep, n_jobs=self.n_jobs, random_state=seed)  # type: ignore[arg-type]
        elif callable(rep):
            Z = rep(Xn, Y)
        else:
            Z = rep
        return check_representation(Z, n_labels)

    def _pii_view(self, first: Any) -> bool:
        """Whether the mixed ensemble clusters its even trees on PII (see ``ensemble``)."""
        return (
            self.ensemble == "mixed"
            and self.indexer is None
            and isinstance(self.representation, str)
            and self.representation == "pifa"
            and first.depth > 0
        )

    def _indexer(self, p: dict[str, Any], i: int, first: Any = None) -> Any:
        """The unfitted indexer of tree ``i`` (``first``: tree 0, whose depth the mixed trees
        share)."""
        seed = p["seed"] + i
        if self.indexer is None:
            kw: dict[str, Any] = {
                "branching": p["branching"],
                "max_leaf_size": p["max_leaf_size"],
                "max_iter": p["kmeans_max_iter"],
                "random_state": seed,
                "n_jobs": self.n_jobs,
            }
            depth = 0 if first is None else first.depth
            if depth > 0 and self.ensemble == "mixed":
                b = p["branching"]
                b = max(b) if isinstance(b, tuple) else b
                width = max(2, b // 2) if i % 2 == 1 else b
                kw.update(branching=(width,) * depth, balanced=False)
            return HierarchicalKMeans(**kw)
        indexer = clone(self.indexer)
        if "random_state" in indexer.get_params():
            indexer.set_params(random_state=seed)
        return indexer

    def _tree(self, Z: Any, n_labels: int, p: dict[str, Any], i: int, first: Any = None) -> Any:
        """Tree ``i`` of the ensemble (``first``: tree 0, whose depth the mixed trees share)."""
        if Z is None:
            return self.indexer
        tree = self._indexer(p, i, first).fit(Z).tree_
        self._check_tree(tree, n_labels)
        return tree

    @staticmethod
    def _check_tree(tree: Any, n_labels: int) -> None:
        if not isinstance(tree, ClusterTree) or tree.n_labels != n_labels:
            raise ValueError("the indexer must set tree_ to a ClusterTree over every label")

    def fit(self, X: Any, Y: Any, relevance: Any = None) -> XRLinearClassifier:
        """Build the label tree and train the models of every level.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Features (tf-idf or similar; rows are L2-normalised when ``normalize``).
        Y : {array-like, sparse matrix} of shape (n_samples, n_labels) or (n_samples,), or \
list of label lists
            0/1 indicator, or one collection of labels per sample (names are then sorted into
            ``classes_``, as :class:`~sklearn.preprocessing.MultiLabelBinarizer` does), or a
            1-D vector of one class label per sample (ints or strings; multi-class: trained
            as one label per row, ``classes_`` its sorted distinct values).
            Labels without any positive sample are kept; their models only see negatives, so
            they are rarely ranked. Samples without labels only serve as negatives.
        relevance : sparse matrix of shape (n_samples, n_labels), optional
            Non-negative cost of each positive (instance, label) pair, on ``Y``'s pattern
            (cost-sensitive training; a positive's penalty is ``Cp * relevance``).

        Returns
        -------
        self
        """
        import time

        p = self._check_params()
        for attr in (
            "models_",
            "tree_",
            "classes_",
            "target_type_",
            "n_iter_",
            "n_features_in_",
            "feature_names_in_",
        ):
            self.__dict__.pop(attr, None)
        x_parts, Xn = self._x_fit(X)
        Y = column_to_1d(Y)
        multiclass = is_class_vector(Y)
        Ym, names = as_indicator(Y, Xn.shape[0])
        rel_parts = None
        if relevance is not None:
            if names is not None:
                raise ValueError(
                    "relevance needs Y as an indicator matrix, not label lists or class labels"
                )
            rel_parts = csr_parts(relevance_matrix(relevance, Ym.shape), "relevance")
        y_parts = csr_parts(Ym, "Y")
        t0 = time.perf_counter()
        # one representation for every tree (it does not depend on the seed; the trees
        # differ by their k-means seeds and, mixed, their shapes and the PII view); built
        # first so that the representations are freed before the (memory-heavier) training
        n_est = p["n_estimators"]
        # verbose: one bar over the stages (representation, each tree, the models)
        bar = Progress(quiet=not self.verbose).bar(2 + n_est, "fit: representation", "stage")
        with bar:
            Xr = None if isinstance(self.indexer, ClusterTree) else self._tree_input(Xn)
            Z = self._representation(Xr, Ym, p["seed"])
            bar.update()
            bar.set_description("fit: trees")
            trees = [self._tree(Z, Ym.shape[1], p, 0)]
            bar.update()
            pii_view = n_est > 2 and self._pii_view(trees[0])
            Z_pii = label_representation(Xr, Ym, "pii", n_jobs=self.n_jobs) if pii_view else None
            for i in range(1, n_est):
                Zi = Z_pii if pii_view and i % 2 == 0 else Z
                trees.append(self._tree(Zi, Ym.shape[1], p, i, trees[0]))
                bar.update()
            del Z, Z_pii, Xr
            self._log(
                f"representation and {len(trees)} tree(s) {trees[0].n_nodes_per_level} "
                f"in {time.perf_counter() - t0:.2f} s"
            )
            bar.set_description(f"fit: models of {n_est} tree(s)")
            t1 = time.perf_counter()
            # every tree's training tasks share one pool (largest first), so the threads
            # stay busy where one tree's last tasks would leave them idle
            trained = _xmrrs.xr_train(
                x_parts,
                y_parts,
                [(tree.child_ptrs, tree.leaf_ptr, tree.labels) for tree in trees],
                [p["seed"] + i for i in range(n_est)],
                loss=p["loss"],
                cp=p["cp"],
                cn=p["cn"],
                max_iter=p["max_iter"],
                tol=p["tol"],
                bias=p["bias"],
                threshold=p["threshold"],
                negatives=p["negatives"],
                beam_size=p["beam_size"],
                post_processor=self.post_processor,
                relevance=rel_parts,
                n_jobs=self.n_jobs,
                x_dense=Xn.dense if isinstance(Xn, HybridMatrix) else None,
                dense_in_ranker=bool(self.dense_in_ranker),
                top_fraction=top_fraction(p["top_max_samples"], Xn.shape[0]),
            )
            bar.update()
            self._log(f"models of {n_est} tree(s) in {time.perf_counter() - t1:.2f} s")
            models = [model for model, _ in trained]
            n_iter = [passes for _, passes in trained]
        self.n_iter_ = np.asarray(n_iter)
        self.models_ = models
        self.tree_ = trees[0]
        self.classes_ = names if names is not None else np.arange(Ym.shape[1])
        self.target_type_ = "multiclass" if multiclass else "multilabel"
        return self

    # --------------------------------------------------------------------------- predict

    def _check_fitted(self) -> None:
        """sklearn's ``check_is_fitted`` (its error when not fitted), without its cost per
        query (estimator tags) once fitted."""
        if "models_" not in self.__dict__:
            check_is_fitted(self, "models_")

    def _search(self, X: Any, k: int, beam_size: int | None) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        # no more labels or beam entries than the model has (the core allocates k per row)
        n_labels = len(self.classes_)
        k = min(_integer(k, "k", 1), n_labels)
        beam = self.beam_size if beam_size is None else beam_size
        beam = min(_integer(beam, "beam_size", 1), n_labels)
        parts, dense = self._x_predict(X)
        # rows are normalised inside the search call (one-row queries without a thread pool);
        # hybrid rows were normalised by _x_predict
        normalize = bool(self.normalize) and dense is None
        if len(self.models_) == 1:
            return self.models_[0].predict_topk(
                parts, k, beam, self.post_processor, self.n_jobs, normalize, dense
            )
        return _xmrrs.xr_predict_ensemble(
            self.models_, parts, k, beam, self.post_processor, self.n_jobs, normalize, dense
        )

    def predict_topk(
        self, X: Any, k: int | None = None, *, beam_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best labels of each row, best first.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        k : int, optional
            Labels per row (default ``top_k``); more than ``n_labels`` means ``n_labels``.
        beam_size : int, optional
            Beam width (default ``beam_size``), at most ``n_labels``.

        Returns
        -------
        ids : ndarray of int64, shape (n_samples, min(k, n_labels))
            Column indices into ``classes_`` (``n_labels = len(classes_)``); ``-1`` pads rows
            where the beam reached fewer labels.
        scores : ndarray of float32, shape (n_samples, min(k, n_labels))
            Path scores (higher is better); ``-inf`` where ``ids`` is ``-1``.
        """
        return self._search(X, self.top_k if k is None else k, beam_size)

    def _topk_matrix(self, X: Any, binary: bool) -> sp.csr_matrix | sp.csr_array:
        ids, scores = self._search(X, self.top_k, None)
        m = topk_to_csr(ids, scores, len(self.classes_), binary=binary)
        return _sparse_out(m) if not is_sparray(X) else sp.csr_array(m)

    def predict(self, X: Any) -> sp.csr_matrix | sp.csr_array | np.ndarray:
        """Predicted labels.

        Returns
        -------
        ndarray of shape (n_samples,) or sparse matrix of shape (n_samples, n_labels)
            Multi-class model (fitted on a 1-D ``y``): the best class of each row,
            ``classes_[top-1]``. Multi-label model: sparse 0/1 indicator (int32) of the
            ``top_k`` best labels of each row.
        """
        if getattr(self, "target_type_", "multilabel") == "multiclass":
            ids, _ = self._search(X, 1, None)
            # the beam reaches at least one leaf, so top-1 exists; -1 is only a safeguard
            return np.asarray(self.classes_)[np.maximum(ids[:, 0], 0)]
        return self._topk_matrix(X, binary=True)

    def decision_function(self, X: Any) -> sp.csr_matrix | sp.csr_array | np.ndarray:
        """Scores of the labels: the sparse top-k matrix, or a margin for two classes.

        Returns
        -------
        sparse matrix of shape (n_samples, n_labels) or ndarray of shape (n_samples,)
            The ``top_k`` best path scores of each row (others not stored; columns follow
            ``classes_``). A multi-class model with exactly two classes returns, as
            scikit-learn's binary classifiers do, the margin ``score(classes_[1]) -
            score(classes_[0])`` (> 0 where ``predict`` says ``classes_[1]``), so that
            ``OneVsRestClassifier`` and other binary meta-estimators can use it.

        Notes
        -----
        Unlike scikit-learn's multi-class classifiers the output for more than two classes
        is not a dense ``(n_samples, n_classes)`` array: with 1e5-1e6 classes it would not fit
        in memory. :meth:`predict_topk` gives ids and scores as dense ``(n, k)`` arrays.
        """
        if getattr(self, "target_type_", "multilabel") == "multiclass" and len(self.classes_) == 2:
            beam = max(2, self.beam_size)
            ids, scores = self._search(X, 2, beam)
            s = np.where(ids == 1, scores, -scores).astype(np.float64)
            return np.asarray(s.sum(axis=1))
        return self._topk_matrix(X, binary=False)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Precision@1 of the predictions against the true labels ``y`` (any form ``fit`` takes).

        For a 1-D ``y`` this is the accuracy (the top label is the predicted class). Labels
        of ``y`` unknown to the model count as misses.
        """
        from xmrrs.metrics import precision_at_k

        if sample_weight is not None:
            raise ValueError("sample_weight is not supported by precision@1")
        check_is_fitted(self, "models_")
        ids, _ = self.predict_topk(X, 1)
        Yt = truth_indicator(y, self.classes_, ids.shape[0])
        if Yt is y:
            Yt, _ = as_indicator(y, ids.shape[0])
            if Yt.shape[1] != len(self.classes_):
                raise ValueError(f"y has {Yt.shape[1]} labels, the model {len(self.classes_)}")
        return float(precision_at_k(Yt, ids, k=1))

    # ------------------------------------------------------------------------ persistence

    def save(self, path: Any) -> None:
        """Write the fitted model to the directory ``path`` (no pickle inside), crash-safely.

        ``path`` must be new, empty, or an xmrrs model (which is replaced); see
        :func:`xmrrs.modelfile.save`. ``n_jobs`` is not saved.
        """
        from xmrrs.modelfile import save

        save(self, path)

    @classmethod
    def load(
        cls, path: Any, *, mmap: bool = False, n_jobs: int | None = None
    ) -> XRLinearClassifier:
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
            Model directory.
        mmap : bool, default=False
            Map the weights read-only (ready in milliseconds, shared between processes).
        n_jobs : int, optional
            Threads of the loaded model (``n_jobs`` is never read from the file).

        Returns
        -------
        XRLinearClassifier
        """
        from xmrrs.modelfile import load

        return load(cls, path, mmap=mmap, n_jobs=n_jobs)

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        if "models_" in state:
            state = dict(state)
            state["models_"] = [m.to_bytes() for m in state["models_"]]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "models_" in state:
            state = dict(state)
            state["models_"] = [_xmrrs.XrModel.from_bytes(b) for b in state["models_"]]
        super().__setstate__(state)
