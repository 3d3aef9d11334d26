"""Multi-label targets: indicator matrices or label lists, to one CSR indicator and names."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["as_indicator", "encode_label_lists", "is_label_lists"]


def is_label_lists(Y: Any) -> bool:
    """True when ``Y`` is a sequence of label collections rather than a 2-D indicator."""
    if sp.issparse(Y) or isinstance(Y, np.ndarray):
        return False
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

    ``Y`` is a sparse or dense 0/1 indicator of shape ``(n_samples, n_labels)``, or a sequence
    of ``n_samples`` label collections (then the names are the sorted distinct labels, as
    :class:`sklearn.preprocessing.MultiLabelBinarizer` does).

    Raises
    ------
    ValueError
        Wrong number of rows, values other than 0/1, complex values, NaN, a 1-D target, no
        labels at all.
    """
    names: np.ndarray | None = None
    if Y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    if is_label_lists(Y):
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
                "2-D 0/1 indicator matrix (n_samples, n_labels) or a list of label lists; for "
                "one label per sample, pass [[label] for label in y]."
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
