"""Sparse kernels against scipy, on matrices with every awkward property."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import dense, raw_csr
from xmrrs import _xmrrs
from xmrrs import sparse as xs

SET = settings(max_examples=60, deadline=None)


def assert_canonical(m: sp.spmatrix) -> None:
    assert m.format == "csr"
    assert m.dtype == np.float32
    for i in range(m.shape[0]):
        row = m.indices[m.indptr[i] : m.indptr[i + 1]]
        assert np.all(np.diff(row) > 0), f"row {i} not strictly increasing: {row}"


@SET
@given(raw_csr(), st.sampled_from([1, 2, 3]))
def test_transpose_and_csc(a: sp.csr_matrix, n_jobs: int) -> None:
    t = xs.transpose(a, n_jobs=n_jobs)
    assert t.shape == (a.shape[1], a.shape[0])
    assert_canonical(t)
    np.testing.assert_allclose(dense(t), dense(a).T, rtol=1e-6, atol=1e-6)
    c = xs.to_csc(a)
    assert c.format == "csc"
    np.testing.assert_allclose(dense(c), dense(a), rtol=1e-6, atol=1e-6)


@SET
@given(raw_csr())
def test_canonicalize(a: sp.csr_matrix) -> None:
    c = xs.canonicalize(a)
    assert_canonical(c)
    np.testing.assert_allclose(dense(c), dense(a), rtol=1e-6, atol=1e-6)


@SET
@given(raw_csr())
def test_normalize_rows(a: sp.csr_matrix) -> None:
    n = xs.normalize_rows(a)
    assert_canonical(n)
    want = dense(a)
    norms = np.linalg.norm(want, axis=1, keepdims=True)
    want = np.divide(want, norms, out=np.zeros_like(want), where=norms > 0)
    np.testing.assert_allclose(dense(n), want, rtol=1e-5, atol=1e-6)


@SET
@given(st.data())
def test_matmul(data: st.DataObject) -> None:
    a = data.draw(raw_csr())
    b = data.draw(raw_csr(rows=a.shape[1]))
    c = xs.matmul(a, b, n_jobs=data.draw(st.sampled_from([1, 2])))
    assert c.shape == (a.shape[0], b.shape[1])
    assert_canonical(c)
    assert not np.any(c.data == 0)
    np.testing.assert_allclose(dense(c), dense(a) @ dense(b), rtol=1e-4, atol=1e-4)


@SET
@given(st.data())
def test_matmul_dense_and_dot_rows(data: st.DataObject) -> None:
    a = data.draw(raw_csr())
    k = data.draw(st.integers(0, 5))
    rng = np.random.default_rng(data.draw(st.integers(0, 100)))
    b = rng.standard_normal((a.shape[1], k)).astype(np.float32)
    np.testing.assert_allclose(xs.matmul_dense(a, b), dense(a) @ b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(xs.dot_dense_rows(a, b.T.copy()), dense(a) @ b, rtol=1e-4, atol=1e-4)


@SET
@given(st.data())
def test_take_rows_and_cols(data: st.DataObject) -> None:
    a = data.draw(raw_csr(min_rows=1, min_cols=1))
    rows = data.draw(st.lists(st.integers(0, a.shape[0] - 1), max_size=8))
    cols = data.draw(st.lists(st.integers(0, a.shape[1] - 1), max_size=8))
    r = xs.take_rows(a, np.array(rows, dtype=np.int64))
    np.testing.assert_allclose(dense(r), dense(a)[rows].reshape(len(rows), a.shape[1]), atol=1e-6)
    c = xs.take_cols(a, np.array(cols, dtype=np.int64))
    assert_canonical(c)
    np.testing.assert_allclose(
        dense(c), dense(a)[:, cols].reshape(a.shape[0], len(cols)), atol=1e-6
    )


def reference_topk(a: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    c = a.copy().astype(np.float32)
    c.sum_duplicates()
    k = min(k, c.shape[1])  # no more columns than the matrix has
    ids = np.full((c.shape[0], k), -1, dtype=np.int64)
    scores = np.full((c.shape[0], k), -np.inf, dtype=np.float32)
    for i in range(c.shape[0]):
        sl = slice(c.indptr[i], c.indptr[i + 1])
        pairs = sorted(
            zip(c.data[sl].tolist(), c.indices[sl].tolist(), strict=True),
            key=lambda p: (-p[0], p[1]),
        )
        for t, (s, j) in enumerate(pairs[:k]):
            ids[i, t] = j
            scores[i, t] = s
    return ids, scores


@SET
@given(raw_csr(), st.integers(1, 6))
def test_topk(a: sp.csr_matrix, k: int) -> None:
    ids, scores = xs.topk(a, k)
    want_ids, want_scores = reference_topk(a, k)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    t = xs.topk_csr(a, k)
    assert_canonical(t)
    for i in range(a.shape[0]):
        got = set(t.indices[t.indptr[i] : t.indptr[i + 1]].tolist())
        assert got == {j for j in want_ids[i] if j >= 0}


@settings(max_examples=20, deadline=None)
@given(raw_csr(max_rows=40, max_cols=40))
def test_results_do_not_depend_on_threads(a: sp.csr_matrix) -> None:
    for f in (xs.transpose, xs.normalize_rows, lambda m, n_jobs: xs.matmul(m, m.T, n_jobs=n_jobs)):
        one, many = f(a, n_jobs=1), f(a, n_jobs=3)
        np.testing.assert_array_equal(one.indptr, many.indptr)
        np.testing.assert_array_equal(one.indices, many.indices)
        assert one.data.tobytes() == many.data.tobytes()


def test_larger_matrices_match_scipy() -> None:
    rng = np.random.default_rng(0)
    a = sp.random(3000, 2000, density=0.01, format="csr", dtype=np.float32, random_state=rng)
    b = sp.random(2000, 500, density=0.02, format="csr", dtype=np.float32, random_state=rng)
    np.testing.assert_allclose(xs.matmul(a, b).toarray(), (a @ b).toarray(), rtol=1e-5, atol=1e-6)
    assert (xs.transpose(a) != a.T).nnz == 0


def test_sparray_in_sparray_out() -> None:
    a = sp.csr_array(np.eye(3, dtype=np.float32))
    assert isinstance(xs.transpose(a), sp.csr_array)
    assert isinstance(xs.transpose(sp.csr_matrix(a)), sp.csr_matrix)


def test_other_formats_and_dense_inputs() -> None:
    d = np.array([[0, 2, 0], [1, 0, 3]], dtype=np.int64)
    for a in (d, sp.coo_matrix(d), sp.csc_matrix(d), sp.lil_matrix(d)):
        np.testing.assert_array_equal(xs.transpose(a).toarray(), d.T)


def bad(indptr: list[int], indices: list[int], data: list[float], shape: tuple[int, int]):
    a = sp.csr_matrix((2, 2), dtype=np.float32)
    a.indptr = np.array(indptr, dtype=np.int32)
    a.indices = np.array(indices, dtype=np.int32)
    a.data = np.array(data, dtype=np.float32)
    a._shape = shape
    return a


@pytest.mark.parametrize(
    ("m", "msg"),
    [
        (bad([0, 1, 2], [0, 5], [1, 1], (2, 2)), "out of range"),
        (bad([0, 1, 2], [0, -1], [1, 1], (2, 2)), "out of range"),
        (bad([0, 2, 1, 2], [0, 1], [1, 1], (3, 2)), "not monotone"),
        (bad([0, 1, 2], [0, 1], [1, np.nan], (2, 2)), "non-finite"),
        (bad([0, 1, 2], [0, 1], [np.inf, 1], (2, 2)), "non-finite"),
        (bad([0, 1, 3], [0, 1], [1, 1], (2, 2)), "stored entries"),
        (bad([1, 1, 2], [0, 1], [1, 1], (2, 2)), r"indptr\[0\] must be 0"),
    ],
)
def test_bad_structure_is_a_value_error(m: sp.csr_matrix, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        xs.transpose(m)


def test_bad_arguments() -> None:
    a = sp.csr_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="cannot multiply"):
        xs.matmul(a, sp.csr_matrix((4, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="shape mismatch"):
        xs.matmul_dense(a, np.ones((4, 2)))
    with pytest.raises(ValueError, match="k must be a positive"):
        xs.topk(a, 0)
    with pytest.raises(ValueError, match="out of range"):
        xs.take_rows(a, [3])
    with pytest.raises(ValueError, match="negative"):
        xs.take_rows(a, [-1])
    with pytest.raises(ValueError, match="out of range"):
        xs.take_cols(a, [7])
    with pytest.raises(TypeError, match="complex"):
        xs.transpose(sp.csr_matrix(np.eye(2, dtype=np.complex64)))
    with pytest.raises(ValueError, match="2-D"):
        xs.transpose(np.ones(3))
    with pytest.raises(ValueError, match="n_jobs"):
        xs.transpose(a, n_jobs=0)
    with pytest.raises(ValueError, match="non-finite"):
        xs.matmul_dense(a, np.full((3, 1), np.nan))


def test_panics_become_runtime_errors() -> None:
    with pytest.raises(RuntimeError, match="internal error in xmrrs"):
        _xmrrs._test_panic()
    # and the library keeps working afterwards
    assert xs.transpose(sp.csr_matrix(np.eye(2, dtype=np.float32))).nnz == 2


def test_unaligned_buffers_are_accepted() -> None:
    from xmrrs import sparse as xs

    a = sp.random(20, 30, density=0.3, format="csr", dtype=np.float32, random_state=1)
    raw = np.zeros(a.nnz * 4 + 1, np.uint8)
    data = raw[1:].view(np.float32)  # a float32 view at an odd address: unaligned
    data[:] = a.data
    b = a.copy()
    b.data = data  # the constructor would copy it into aligned memory
    assert not b.data.flags.aligned
    np.testing.assert_array_equal(xs.transpose(b).toarray(), a.T.toarray())
