"""Inputs at the edges: non-integer ids, complex targets and a huge ``k``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from xmrrs import XRLinearClassifier
from xmrrs import sparse as xs
from xmrrs._targets import as_indicator
from xmrrs.datasets import make_xmc

HUGE = [10**12, 2**62, 2**63, np.int64(2**62), np.uint64(2**63)]


@pytest.mark.parametrize("ids", [[0.5, 1.7], np.array([0.0, 1.0]), [True, False, True], ["0"]])
def test_take_rows_and_cols_reject_ids_that_are_not_integers(ids: object) -> None:
    a = sp.csr_matrix(np.arange(9, dtype=np.float32).reshape(3, 3))
    with pytest.raises(ValueError, match="integer ids"):
        xs.take_rows(a, ids)
    with pytest.raises(ValueError, match="integer ids"):
        xs.take_cols(a, ids)
    # integers of any width still work, and an empty list is an empty selection
    np.testing.assert_array_equal(
        xs.take_rows(a, np.array([2, 0], np.uint8)).toarray()[0], a[2].toarray()[0]
    )
    assert xs.take_cols(a, []).shape == (3, 0)


@pytest.mark.parametrize("k", HUGE)
def test_topk_caps_a_huge_k_at_the_number_of_columns(k: int) -> None:
    a = sp.csr_matrix(np.array([[0, 3, 1, 0], [2, 0, 0, 0]], dtype=np.float32))
    ids, scores = xs.topk(a, k)
    assert ids.shape == scores.shape == (2, 4)
    np.testing.assert_array_equal(ids, [[1, 2, -1, -1], [0, -1, -1, -1]])
    np.testing.assert_array_equal(xs.topk_csr(a, k).toarray(), a.toarray())
    ids, _ = xs.topk(sp.csr_matrix((3, 0), dtype=np.float32), k)
    assert ids.shape == (3, 0)


@pytest.mark.parametrize("k", [0, -1, 2.0, True, "3", None])
def test_topk_rejects_k_that_is_not_a_positive_integer(k: object) -> None:
    a = sp.csr_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="positive integer"):
        xs.topk(a, k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive integer"):
        xs.topk_csr(a, k)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "Y",
    [
        np.array([[1, 0], [0, 1]], dtype=np.complex128),
        [[1 + 0j, 0j], [0j, 1 + 0j]],
        sp.csr_matrix(np.array([[1, 0], [0, 1j]])),
        sp.csr_array(np.array([[1, 0], [0, 1]], dtype=np.complex64)),
    ],
)
def test_complex_targets_are_a_value_error(Y: object) -> None:
    with pytest.raises(ValueError, match="complex"):
        as_indicator(Y, 2)
    X = sp.csr_matrix(np.eye(2, dtype=np.float32))
    with pytest.raises(ValueError, match="complex"):
        XRLinearClassifier(n_jobs=1).fit(X, Y)


def test_complex_relevance_is_a_value_error() -> None:
    X = sp.csr_matrix(np.eye(2, dtype=np.float32))
    Y = sp.csr_matrix(np.eye(2, dtype=np.float32))
    with pytest.raises(ValueError, match="complex"):
        XRLinearClassifier(n_jobs=1).fit(X, Y, relevance=Y.astype(np.complex64))


@pytest.fixture(scope="module")
def fitted() -> tuple[XRLinearClassifier, sp.csr_matrix]:
    X, Y = make_xmc(300, 400, 12, random_state=0)
    return XRLinearClassifier(n_jobs=1, max_leaf_size=4).fit(X, Y), X[:20]


@pytest.mark.parametrize("k", HUGE)
def test_predict_topk_caps_k_and_beam_at_the_number_of_labels(fitted: tuple, k: int) -> None:
    clf, X = fitted
    full_ids, full_scores = clf.predict_topk(X, 12, beam_size=12)
    ids, scores = clf.predict_topk(X, k, beam_size=k)
    assert ids.shape == scores.shape == (20, 12)
    np.testing.assert_array_equal(ids, full_ids)
    np.testing.assert_array_equal(scores, full_scores)
    ids, _ = clf.predict_topk(X, 3, beam_size=k)
    assert ids.shape == (20, 3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            clf.predict_topk(X, bad)
        with pytest.raises(ValueError):
            clf.predict_topk(X, 3, beam_size=bad)


def test_predict_with_a_top_k_beyond_the_labels(fitted: tuple) -> None:
    clf, X = fitted
    big = XRLinearClassifier(**{**clf.get_params(), "top_k": 2**62})
    big.__dict__.update({k: v for k, v in clf.__dict__.items() if k.endswith("_")})
    assert big.predict(X).sum(axis=1).max() <= 12
