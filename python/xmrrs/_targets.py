"""Targets: indicator matrices, label lists or 1-D class vectors, to one CSR indicator.

Three forms of ``Y`` are accepted wherever a target is (``fit``, ``score``, the scorers of
:mod:`xmrrs.metrics`):

* a 0/1 indicator of shape ``(n_samples, n_labels)``, dense or sparse;
* label lists: one collection of label names per sample (multi-label);
* a 1-D class vector: one label per sample (extreme multi-class), ints or strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "as_indicator",
    "column_to_1d",
    "encode_classes",
    "encode_label_lists",
    "is_class_vector",
    "is_label_lists",
    "truth_indicator",
]


def _is_collection(v: Any) -> bool:
    return isinstance(v, Iterable) and not isinstance(v, str | bytes)


def is_class_vector(Y: Any) -> bool:
    """True when ``Y`` is a 1-D sequence of scalar labels (one class per sample)."""
    if Y is None or sp.issparse(Y) or isinstance(Y, str | bytes):
        return False
    if not isinstance(Y, np.ndarray):
        if hasattr(Y, "__array__") and not isinstance(Y, list | tuple):
            Y = np.asarray(Y)  # a pandas Series, an array-like wrapper
        elif not isinstance(Y, Iterable):
            return False
        else:
            Y = list(Y)
            if len(Y) == 0 or any(_is_collection(v) for v in Y):
                return False
    arr = np.asarray(Y)
    if arr.ndim != 1 or arr.shape[0] == 0:
        return False
    if arr.dtype.kind == "O":
        return not any(_is_collection(v) for v in arr)
    return True


def encode_classes(
    y: Any, classes: np.ndarray | None = None, *, unknown: str = "error"
) -> tuple[sp.csr_matrix, np.ndarray]:
    """One-hot CSR indicator of a 1-D class vector over ``classes`` (sorted unique if None).

    Labels outside ``classes`` raise (``unknown="error"``) or give an empty row
    (``"ignore"``).

    Raises
    ------
    ValueError
        NaN or complex labels, or (``unknown="error"``) a label outside ``classes``.
    """
    arr = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if arr.dtype.kind == "c":
        raise ValueError("Unknown label type: complex class labels")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("Input y contains NaN or infinity.")
    if arr.dtype.kind == "O":
        arr = np.asarray(arr.tolist())  # homogeneous names become a typed array
        if arr.dtype.kind == "O":
            raise ValueError("Unknown label type: class labels of mixed types")
    if classes is None:
        if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
            raise ValueError(
                "Unknown label type: continuous. A 1-D y holds class labels; got non-integer "
                "floats (for per-label relevance use fit(X, Y, relevance=R))"
            )
        classes = np.unique(arr)
        cols = np.searchsorted(classes, arr)
        keep = np.ones(arr.shape[0], dtype=bool)
    else:
        classes = np.asarray(classes)
        if classes.size == 0:
            cols = np.zeros(arr.shape[0], dtype=np.int64)
            keep = np.zeros(arr.shape[0], dtype=bool)
        else:
            try:
                order = np.argsort(classes, kind="stable")
                pos = np.searchsorted(classes[order], arr)
                pos = np.minimum(pos, classes.size - 1)
                cols = order[pos]
                keep = classes[cols] == arr
            except TypeError:  # e.g. str vs int names
                cols = np.zeros(arr.shape[0], dtype=np.int64)
                keep = np.zeros(arr.shape[0], dtype=bool)
        if not keep.all() and unknown != "ignore":
            bad = arr[~keep][0]
            raise ValueError(f"y contains the label {bad!r}, unknown to this model")
    indptr = np.zeros(arr.shape[0] + 1, dtype=np.int64)
    np.cumsum(keep, out=indptr[1:])
    indices = np.asarray(cols[keep], dtype=np.int32)
    data = np.ones(indices.shape[0], dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(arr.shape[0], classes.size)), classes


def column_to_1d(Y: Any) -> Any:
    """A dense ``(n, 1)`` array target raveled to 1-D with a ``DataConversionWarning``.

    scikit-learn's rule (``type_of_target`` calls one column binary or multi-class, never
    multi-label); lists of one-label lists stay label lists, a sparse column an indicator.
    """
    if sp.issparse(Y) or isinstance(Y, list | tuple) or not hasattr(Y, "__array__"):
        return Y
    arr = np.asarray(Y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        import warnings

        from sklearn.exceptions import DataConversionWarning

        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please change the "
            "shape of y to (n_samples,), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        return arr.ravel()
    return Y


def truth_indicator(y: Any, classes: Any, n_samples: int) -> Any:
    """Ground truth ``y`` in a form :mod:`xmrrs.metrics` reads, columns as in ``classes``.

    Label lists and 1-D class vectors are encoded over ``classes`` (an estimator's
    ``classes_``), labels unknown to it dropped (they can never be predicted, so they count
    as misses); an indicator is returned unchanged.

    Raises
    ------
    ValueError
        Label lists or a class vector without ``classes``, or the wrong number of rows.
    """
    if is_class_vector(y) or is_label_lists(y):
        if classes is None:
            raise ValueError(
                "label lists and 1-D class labels are scored against the fitted estimator's "
                "classes_, and this estimator has none"
            )
        classes = np.asarray(classes)
        if is_class_vector(y):
            M, _ = encode_classes(y, classes, unknown="ignore")
        else:
            M, _ = encode_label_lists(y, classes, unknown="ignore")
        if M.shape[0] != n_samples:
            raise ValueError(f"X has {n_samples} rows but y has {M.shape[0]}")
        return M
    return y


def is_label_lists(Y: Any) -> bool:
    """True when ``Y`` is a sequence of label collections rather than a 2-D indicator."""
    if sp.issparse(Y) or is_class_vector(Y):
        return False
    if isinstance(Y, np.ndarray):  # an object array of collections (as pandas holds lists)
        return Y.ndim == 1 and Y.dtype.kind == "O" and Y.size > 0 and all(map(_is_collection, Y))
    if not isinstance(Y, Iterable) or isinstance(Y, str | bytes):
        return False
    rows = list(Y)
    if len(rows) == 0:
        return False
    # a 2-D numeric array of 0/1 is an indicator (scikit-learn's rule), anything else a list
    try:
        arr = np.asarray(rows)
    except ValueError:  # ragged
        return True
    if arr.ndim == 2 and arr.dtype.kind in "biuf":
        return not np.isin(arr, (0, 1)).all()
    # a 2-D complex array is a (bad) indicator, for as_indicator to reject
    return not (arr.ndim == 2 and arr.dtype.kind == "c")


def encode_label_lists(
    rows: Iterable[Iterable[Any]], classes: np.ndarray | None = None, *, unknown: str = "error"
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Encode label lists as a CSR 0/1 indicator over ``classes`` (sorted names if None).

    Labels outside ``classes`` raise (``unknown="error"``) or are dropped (``"ignore"``).

    Raises
    ------
    ValueError
        A row is not a collection, or names a label outside ``classes``.
    """
    rows = list(rows)
    for i, r in enumerate(rows):
        if isinstance(r, str | bytes) or not isinstance(r, Iterable):
            raise ValueError(
                f"Y[{i}] = {r!r} is not a collection of labels (label lists must be lists, "
                "tuples or sets of labels)"
            )
    lists = [list(r) for r in rows]
    if classes is None:
        names = sorted({lab for r in lists for lab in r})
        classes = np.asarray(names) if names else np.empty(0, dtype=np.int64)
    index = {c.item() if isinstance(c, np.generic) else c: j for j, c in enumerate(classes)}
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    cols: list[int] = []
    for i, r in enumerate(lists):
        ids = set()
        for lab in r:
            key = lab.item() if isinstance(lab, np.generic) else lab
            j = index.get(key)
            if j is None:
                if unknown == "ignore":
                    continue
                raise ValueError(f"Y[{i}] contains the label {lab!r}, unknown to this model")
            ids.add(j)
        cols.extend(sorted(ids))
        indptr[i + 1] = len(cols)
    indices = np.asarray(cols, dtype=np.int32)
    data = np.ones(len(cols), dtype=np.float32)
    Y = sp.csr_matrix((data, indices, indptr), shape=(len(lists), len(classes)))
    return Y, classes


def as_indicator(Y: Any, n_samples: int) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """Return ``(Y as canonical CSR float32 0/1, label names or None)``.

    ``Y`` is a sparse or dense 0/1 indicator of shape ``(n_samples, n_labels)``, a sequence
    of ``n_samples`` label collections (then the names are the sorted distinct labels, as
    :class:`sklearn.preprocessing.MultiLabelBinarizer` does), or a 1-D class vector (one-hot
    over its sorted distinct labels, as :class:`sklearn.preprocessing.LabelEncoder` does).

    Raises
    ------
    ValueError
        Wrong number of rows, values other than 0/1, complex values, NaN, no labels at all.
    """
    names: np.ndarray | None = None
    if Y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    if is_class_vector(Y):
        M, names = encode_classes(Y)
    elif is_label_lists(Y):
        M, names = encode_label_lists(Y)
    elif sp.issparse(Y):
        if Y.ndim != 2:
            raise ValueError(f"Y must be 2-D, got {Y.ndim}-D")
        if Y.dtype.kind not in "biuf":
            raise ValueError(
                f"Unknown label type: Y must be a numeric 0/1 indicator, got dtype {Y.dtype}"
            )
        M = sp.csr_matrix(Y, dtype=np.float32, copy=True)
    else:
        arr = np.asarray(Y)
        if arr.ndim != 2:
            raise ValueError(
                f"Unknown label type: a {arr.ndim}-D target of shape {arr.shape}. Y must be a "
                "2-D 0/1 indicator matrix (n_samples, n_labels), a list of label lists or a "
                "1-D vector of class labels."
            )
        if arr.dtype.kind not in "biuf":
            raise ValueError(
                f"Unknown label type: Y must be a numeric 0/1 indicator, got dtype {arr.dtype}"
            )
        M = sp.csr_matrix(arr.astype(np.float32))
    if M.shape[0] != n_samples:
        raise ValueError(f"X has {n_samples} rows but Y has {M.shape[0]}")
    if M.shape[1] == 0:
        raise ValueError("Y has no labels (0 columns)")
    if not np.isfinite(M.data).all():
        raise ValueError("Input y contains NaN or infinity.")
    M.sum_duplicates()
    M.eliminate_zeros()
    if M.nnz and not np.all(M.data == 1.0):
        bad = M.data[M.data != 1.0][0]
        kind = "continuous" if float(bad) != round(float(bad)) else "multiclass"
        raise ValueError(
            f"Unknown label type: {kind}-multioutput. Y must be a 0/1 indicator, found the "
            f"value {bad!r}; pass per-label relevance weights with fit(X, Y, relevance=R)"
        )
    M.sort_indices()
    return M, names


def relevance_matrix(relevance: Any, shape: tuple[int, int]) -> sp.csr_matrix:
    """``relevance`` as ``fit(X, Y, relevance=R)`` takes it: real, of ``Y``'s shape, a
    canonical float32 CSR matrix (duplicates summed, indices sorted).

    Raises
    ------
    ValueError
        Complex values or a shape other than ``shape``.
    """
    if np.iscomplexobj(relevance.data if sp.issparse(relevance) else relevance):
        raise ValueError("relevance must be real, got complex values")
    R = sp.csr_matrix(relevance, dtype=np.float32)
    if R.shape != shape:
        raise ValueError(f"relevance has shape {R.shape}, Y has {shape}")
    R.sum_duplicates()
    R.sort_indices()
    return R
