"""The dense + sparse feature block (HybridMatrix) through XRLinearClassifier."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.model_selection import train_test_split

from xmrrs import XRLinearClassifier, _xmrrs
from xmrrs._validation import csr_parts
from xmrrs.datasets import make_xmc
from xmrrs.hybrid import HybridMatrix
from xmrrs.indexing import label_representation
from xmrrs.modelfile import load, save


def _data(seed: int = 0, n: int = 1200) -> tuple[HybridMatrix, sp.csr_matrix]:
    X, Y = make_xmc(n_samples=n, n_features=800, n_labels=120, random_state=seed)[:2]
    rng = np.random.default_rng(seed)
    D = np.asarray(X @ rng.standard_normal((X.shape[1], 24)), dtype=np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True) + 1e-9
    return HybridMatrix(X, 0.7 * D), sp.csr_matrix(Y)


@pytest.mark.parametrize("zeros", [False, True])
def test_tocsr_equals_scipy_hstack(zeros: bool) -> None:
    """The direct CSR assembly gives scipy's ``hstack`` exactly: the same indptr, column
    indices and values, with the dense block's zeros left out."""
    H, _ = _data(n=60)
    d = H.dense.copy()
    if zeros:
        d[::7, ::3] = 0.0
    h = HybridMatrix(H.sparse, d)
    a = h.tocsr()
    b = sp.csr_matrix(sp.hstack([h.sparse, sp.csr_matrix(d)], format="csr"))
    assert a.shape == b.shape and a.has_sorted_indices
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def test_hybrid_matrix_checks_and_slices() -> None:
    H, _ = _data(n=50)
    assert H.shape == (50, 824) and len(H) == 50 and (H.n_sparse, H.n_dense) == (800, 24)
    sub = H[np.array([3, 1])]
    assert sub.shape == (2, 824)
    np.testing.assert_array_equal(sub.dense, H.dense[[3, 1]])
    assert (sub.sparse != H.sparse[[3, 1]]).nnz == 0
    assert H[5:9].shape[0] == 4 and H[np.arange(50) < 10].shape[0] == 10
    full = H.tocsr()
    assert full.shape == (50, 824)
    np.testing.assert_allclose(full[:, 800:].toarray(), H.dense)
    n = H.normalized()
    np.testing.assert_allclose(n.row_norms(), 1.0, atol=1e-5)
    np.testing.assert_allclose(sp.linalg.norm(n.tocsr(), axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="rows"):
        HybridMatrix(H.sparse, H.dense[:-1])
    with pytest.raises(ValueError, match="NaN"):
        HybridMatrix(H.sparse, np.full((50, 2), np.nan))
    with pytest.raises(TypeError, match="sparse"):
        HybridMatrix(H.dense, H.dense)
    with pytest.raises(ValueError, match="2-D"):
        HybridMatrix(H.sparse, np.zeros(50))
    with pytest.raises(TypeError, match="row indexing"):
        H[1, 2]


def test_hybrid_pifa_equals_the_csr_routes() -> None:
    H, Y = _data(n=300)
    a = label_representation(H, Y, "pifa")
    b = label_representation(H.tocsr(), Y, "pifa")
    np.testing.assert_allclose(a.toarray(), b.toarray(), atol=1e-5)


def test_hybrid_fit_matches_the_csr_route() -> None:
    """Same tree, same seed: the dense block and the same columns as one CSR matrix reach the
    same models (same optimum, different summation order), so the rankings agree. (With the
    default threshold the CSR route also drops its small dense-column weights; the hybrid
    keeps its dense weights whole, so the comparison is made without thresholding.)"""
    H, Y = _data()
    Htr, Hte, Ytr, _ = train_test_split(H, Y, test_size=0.25, random_state=0)
    kw = {"n_estimators": 1, "tol": 1e-4, "max_iter": 2000, "threshold": 0.0}
    hy = XRLinearClassifier(**kw).fit(Htr, Ytr)
    csr = XRLinearClassifier(**kw, indexer=hy.tree_)
    csr.fit(Htr.tocsr(), Ytr)
    assert hy.models_[0].n_dense == 24 and hy.n_features_in_ == 824
    a_ids, a_sc = hy.predict_topk(Hte, 5)
    b_ids, b_sc = csr.predict_topk(Hte.tocsr(), 5)
    assert (a_ids[:, 0] == b_ids[:, 0]).mean() >= 0.97
    np.testing.assert_allclose(a_sc, b_sc, atol=2e-3)
    # and the dense block matters: dropping it changes the answers
    sparse_only = XRLinearClassifier(n_estimators=1, indexer=hy.tree_).fit(Htr.sparse, Ytr)
    c_ids, _ = sparse_only.predict_topk(Hte.sparse, 5)
    assert (c_ids != a_ids).any()


def test_hybrid_is_deterministic_across_n_jobs() -> None:
    H, Y = _data(seed=2, n=600)
    runs = [XRLinearClassifier(n_jobs=j).fit(H, Y).predict_topk(H, 5) for j in (1, 2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_hybrid_one_row_queries_equal_the_batch() -> None:
    # a 2-tree ensemble answers one row on the calling thread: the batch's row, bit for bit
    H, Y = _data(seed=4, n=500)
    clf = XRLinearClassifier(n_estimators=2, n_jobs=2).fit(H, Y)
    Q = HybridMatrix(H.sparse[:30] * 2.5, H.dense[:30])
    ids, scores = clf.predict_topk(Q, 5)
    for i in range(Q.shape[0]):
        a, b = clf.predict_topk(Q[i : i + 1], 5)
        np.testing.assert_array_equal(a[0], ids[i])
        np.testing.assert_array_equal(b[0], scores[i])


def test_hybrid_model_saves_maps_and_pickles(tmp_path: Path) -> None:
    H, Y = _data(seed=1, n=600)
    est = XRLinearClassifier().fit(H, Y)
    ids, scores = est.predict_topk(H[:40], 5)
    one = est.predict_topk(H[:1], 5)
    np.testing.assert_array_equal(one[0], ids[:1])
    save(est, tmp_path / "m")
    for mmap in (False, True):
        back = load(XRLinearClassifier, tmp_path / "m", mmap=mmap)
        got = back.predict_topk(H[:40], 5)
        np.testing.assert_array_equal(got[0], ids)
        np.testing.assert_array_equal(got[1], scores)
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(clone.predict_topk(H[:40], 5)[1], scores)


def test_hybrid_inputs_that_do_not_fit_are_clear_errors() -> None:
    H, Y = _data(seed=3, n=300)
    est = XRLinearClassifier(n_estimators=1).fit(H, Y)
    with pytest.raises(ValueError, match="HybridMatrix"):
        est.predict_topk(H.sparse, 3)
    narrow = HybridMatrix(H.sparse, H.dense[:, :10])
    with pytest.raises(ValueError, match="dense"):
        est.predict_topk(narrow, 3)
    plain = XRLinearClassifier(n_estimators=1).fit(H.sparse, Y)
    with pytest.raises(ValueError, match="sparse or dense"):
        plain.predict_topk(H, 3)
    with pytest.raises(ValueError, match="rows"):
        XRLinearClassifier().fit(H, Y[:-1])
    # the binding checks a dense block's rows against x's on every path: a few rows searched
    # on the calling thread (one and two trees) as well as the batch
    two = XRLinearClassifier(n_estimators=2).fit(H, Y)
    for n in (1, 3, 40):
        parts = csr_parts(H.sparse[:n], "X")
        for rows in (n - 1, n + 1):
            d = np.ascontiguousarray(H.dense[:rows])
            with pytest.raises(ValueError, match="rows"):
                _xmrrs.xr_predict_ensemble(two.models_, parts, 3, 10, "l3-hinge", 1, False, d)
            with pytest.raises(ValueError, match="rows"):
                est.models_[0].predict_topk(parts, 3, 10, "l3-hinge", 1, False, d)


def test_dense_in_ranker_false_leaves_the_label_layer_sparse(tmp_path: Path) -> None:
    H, Y = _data(seed=4, n=600)
    est = XRLinearClassifier(n_estimators=1, dense_in_ranker=False).fit(H, Y)
    full = XRLinearClassifier(n_estimators=1, indexer=est.tree_).fit(H, Y)
    assert est.models_[0].n_dense == 24
    # the label layer holds no dense weights: a smaller model than the full hybrid
    assert est.models_[0].nbytes < full.models_[0].nbytes
    ids, scores = est.predict_topk(H, 5)
    assert ids.shape == (600, 5)
    save(est, tmp_path / "m")
    back = load(XRLinearClassifier, tmp_path / "m", mmap=True)
    assert back.dense_in_ranker is False
    np.testing.assert_array_equal(back.predict_topk(H, 5)[1], scores)
    with pytest.raises(ValueError, match="dense_in_ranker"):
        XRLinearClassifier(dense_in_ranker="no").fit(H, Y)  # type: ignore[arg-type]


def test_dense_in_tree_chooses_the_rows_the_tree_is_clustered_on() -> None:
    """``dense_in_tree=False`` (the default) clusters the labels on the sparse block alone:
    the same tree as fitting the sparse block by itself; ``True`` on both blocks: another."""
    H, Y = _data(seed=5, n=600)
    kw = {"n_estimators": 1, "max_leaf_size": 8, "branching": 4}
    default = XRLinearClassifier(**kw).fit(H, Y).tree_
    sparse = XRLinearClassifier(**kw).fit(H.sparse, Y).tree_
    both = XRLinearClassifier(**kw, dense_in_tree=True).fit(H, Y).tree_
    assert len(default.child_ptrs) == len(sparse.child_ptrs)
    for a, b in zip(default.child_ptrs, sparse.child_ptrs, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(default.leaf_ptr, sparse.leaf_ptr)
    np.testing.assert_array_equal(default.labels, sparse.labels)
    assert not np.array_equal(default.labels, both.labels)
    with pytest.raises(ValueError, match="dense_in_tree"):
        XRLinearClassifier(dense_in_tree=1).fit(H, Y)  # type: ignore[arg-type]
