"""Tests of the synthetic XMC generator ``xmrrs._synthetic.make_xmc``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from xmrrs._synthetic import XMCTree, make_xmc


def _assert_canonical_csr(m: sp.csr_matrix, shape: tuple[int, int]) -> None:
    assert isinstance(m, sp.csr_matrix)
    assert m.shape == shape
    assert m.dtype == np.float32
    assert m.indptr.shape == (shape[0] + 1,)
    assert m.indptr[0] == 0 and m.indptr[-1] == m.nnz
    assert np.all(np.diff(m.indptr) >= 0)
    assert m.indices.shape == (m.nnz,) and m.data.shape == (m.nnz,)
    if m.nnz:
        assert m.indices.min() >= 0 and m.indices.max() < shape[1]
    # sorted, duplicate-free column indices within each row (checked independently of
    # scipy's cached flags)
    row_of = np.repeat(np.arange(shape[0]), np.diff(m.indptr))
    same_row = row_of[1:] == row_of[:-1]
    assert np.all(np.diff(m.indices.astype(np.int64))[same_row] > 0)
    assert np.all(np.isfinite(m.data))
    assert np.all(m.data != 0), "explicit zeros"
    assert m.has_canonical_format


@pytest.mark.parametrize(
    ("n", "d", "L", "kwargs"),
    [
        (300, 2000, 150, {}),
        (200, 500, 1, {"avg_labels_per_sample": 1.0}),
        (200, 500, 7, {"branching": 8}),
        (250, 400, 100, {"branching": 2, "words_per_label": 3}),
        (100, 24, 50, {"noise": 1.0, "avg_words_per_sample": 1.0}),
        (100, 1000, 64, {"noise": 0.0, "avg_labels_per_sample": 1.0, "label_power": 0.0}),
        (120, 1000, 20, {"avg_labels_per_sample": 20.0}),
    ],
)
def test_shapes_dtypes_and_canonical_csr(n: int, d: int, L: int, kwargs: dict[str, Any]) -> None:
    X, Y = make_xmc(n, d, L, random_state=1, **kwargs)
    _assert_canonical_csr(X, (n, d))
    _assert_canonical_csr(Y, (n, L))
    assert np.all(np.diff(X.indptr) >= 1), "every sample needs a feature"
    assert np.all(np.diff(Y.indptr) >= 1), "every sample needs a label"
    assert np.all(Y.data == 1.0)
    assert np.all(X.data > 0)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    assert np.all(np.diff(Y.indptr) <= L)


def test_default_shapes_and_label_cardinality() -> None:
    X, Y = make_xmc(random_state=0)
    assert X.shape == (10000, 20000) and Y.shape == (10000, 2000)
    assert abs(Y.nnz / Y.shape[0] - 3.0) < 0.15
    assert 20 < X.nnz / X.shape[0] < 45


def _same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and a.indptr.tobytes() == b.indptr.tobytes()
        and a.indices.tobytes() == b.indices.tobytes()
        and a.data.tobytes() == b.data.tobytes()
    )


def test_deterministic_given_seed() -> None:
    X1, Y1 = make_xmc(800, 3000, 300, random_state=42)
    X2, Y2 = make_xmc(800, 3000, 300, random_state=42)
    assert _same(X1, X2) and _same(Y1, Y2)
    # A fresh generator with the same seed is equivalent to the int seed.
    X3, Y3 = make_xmc(800, 3000, 300, random_state=np.random.default_rng(42))
    assert _same(X1, X3) and _same(Y1, Y3)
    # The tree does not change the matrices.
    X4, Y4, _ = make_xmc(800, 3000, 300, random_state=42, return_tree=True)
    assert _same(X1, X4) and _same(Y1, Y4)


def test_different_seeds_and_generator_state_differ() -> None:
    X1, Y1 = make_xmc(800, 3000, 300, random_state=1)
    X2, Y2 = make_xmc(800, 3000, 300, random_state=2)
    assert not _same(X1, X2) and not _same(Y1, Y2)
    rng = np.random.default_rng(7)
    Xa, Ya = make_xmc(800, 3000, 300, random_state=rng)
    Xb, Yb = make_xmc(800, 3000, 300, random_state=rng)
    assert not _same(Xa, Xb) and not _same(Ya, Yb)


def test_label_frequencies_are_heavy_tailed() -> None:
    _, Y = make_xmc(random_state=3)  # n_samples = 5 * n_labels
    freq = np.asarray(Y.sum(axis=0)).ravel()
    median = float(np.median(freq))
    assert freq.max() >= 20 * max(median, 1.0)
    assert freq.max() < 0.5 * Y.shape[0]  # no label is in most samples
    tail = float(np.mean((freq >= 1) & (freq <= 2)))
    assert tail >= 0.3, tail
    assert np.mean(freq == 0) < 0.3
    # the top 10% of the labels hold the majority of the positives
    top = np.sort(freq)[::-1][: len(freq) // 10]
    assert top.sum() > 0.5 * freq.sum()


def test_tree_info_is_consistent() -> None:
    n, L, B = 2000, 1000, 8
    X, Y, tree = make_xmc(n, 5000, L, branching=B, random_state=5, return_tree=True)
    assert isinstance(tree, XMCTree)
    assert tree.branching == B and B ** (tree.depth - 1) < L <= B**tree.depth
    assert tree.ancestors.shape == (L, tree.depth)
    assert np.all(tree.ancestors[:, -1] == 0)
    np.testing.assert_array_equal(tree.label_topic, tree.ancestors[:, 0])
    assert np.bincount(tree.label_topic).max() <= B
    for h in range(1, tree.depth):  # nested: a topic has one parent
        parent_of = np.full(tree.ancestors[:, h - 1].max() + 1, -1)
        parent_of[tree.ancestors[:, h - 1]] = tree.ancestors[:, h]
        np.testing.assert_array_equal(parent_of[tree.ancestors[:, h - 1]], tree.ancestors[:, h])
    np.testing.assert_allclose(tree.label_weights.sum(), 1.0)
    assert np.all(tree.label_weights > 0)
    np.testing.assert_array_equal(tree.sample_topic, tree.label_topic[tree.primary_label])
    assert np.all(Y[np.arange(n), tree.primary_label] == 1.0)
    assert tree.signatures.shape == (L, 12)
    assert tree.signatures.min() >= 0 and tree.signatures.max() < X.shape[1]
    # observed frequencies follow the weights
    freq = np.asarray(Y.sum(axis=0)).ravel()
    assert np.corrcoef(freq, tree.label_weights)[0, 1] > 0.9


def test_hidden_hierarchy_is_real() -> None:
    X, Y, tree = make_xmc(4000, 8000, 800, random_state=11, return_tree=True)
    freq = np.asarray(Y.sum(axis=0)).ravel()
    keep = np.flatnonzero(freq >= 3)
    C = (Y[:, keep].T @ X).toarray().astype(np.float64)
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    sim = C @ C.T
    iu = np.triu_indices(len(keep), k=1)
    pair_sim = sim[iu]
    topic = tree.label_topic[keep]
    same_leaf = topic[iu[0]] == topic[iu[1]]
    assert same_leaf.sum() > 50
    coarse = tree.ancestors[keep, 1]
    same_coarse = (coarse[iu[0]] == coarse[iu[1]]) & ~same_leaf
    random_mean = pair_sim.mean()
    leaf_mean = pair_sim[same_leaf].mean()
    coarse_mean = pair_sim[same_coarse].mean()
    assert leaf_mean > 2.0 * random_mean, (leaf_mean, random_mean)
    assert leaf_mean > coarse_mean > random_mean, (leaf_mean, coarse_mean, random_mean)

    # co-occurrence: a sample's labels mostly share its primary label's leaf cluster
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    other = Y.indices != tree.primary_label[rows]
    share = tree.label_topic[Y.indices[other]] == tree.sample_topic[rows[other]]
    chance = 1.0 / (tree.label_topic.max() + 1)
    assert share.mean() > 0.4 > 10 * chance


def _precision_at_1(scores: np.ndarray, Y: sp.csr_matrix) -> float:
    top = np.asarray(scores).argmax(axis=1)
    return float(np.asarray(Y[np.arange(Y.shape[0]), top]).mean())


def test_hard_but_learnable() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import normalize

    X, Y = make_xmc(3000, 5000, 200, random_state=0)
    n_train = 2100
    Xtr, Xte, Ytr, Yte = X[:n_train], X[n_train:], Y[:n_train], Y[n_train:]
    freq = np.asarray(Ytr.sum(axis=0)).ravel()
    keep = np.flatnonzero((freq > 0) & (freq < n_train))
    majority = _precision_at_1(np.tile(freq, (Xte.shape[0], 1)), Yte)

    # label-centroid scorer
    centroids = normalize(Ytr.T @ Xtr)
    p1_centroid = _precision_at_1((Xte @ centroids.T).toarray(), Yte)

    # one-vs-rest logistic regression
    clf = OneVsRestClassifier(LogisticRegression(C=10.0, solver="liblinear"))
    clf.fit(Xtr, Ytr[:, keep].toarray())
    scores = np.full((Xte.shape[0], Y.shape[1]), -np.inf)
    scores[:, keep] = clf.decision_function(Xte)
    p1_ovr = _precision_at_1(scores, Yte)

    for p1 in (p1_centroid, p1_ovr):
        assert 0.2 < p1 < 0.95, (p1_centroid, p1_ovr, majority)
    assert p1_ovr > majority + 0.1, (p1_ovr, majority)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((0,), {}, "n_samples"),
        ((-5,), {}, "n_samples"),
        ((1.5,), {}, "n_samples must be an integer"),
        ((True,), {}, "n_samples must be an integer"),
        ((10, 0), {}, "n_features"),
        ((10, 100, 0), {}, "n_labels"),
        ((10, 100, 10), {"branching": 1}, "branching"),
        ((10, 100, 10), {"words_per_label": 0}, "words_per_label"),
        ((10, 20, 10), {"words_per_label": 12}, "n_features"),
        ((10, 100, 10), {"avg_labels_per_sample": 0.5}, "avg_labels_per_sample"),
        ((10, 100, 10), {"avg_labels_per_sample": 11.0}, "avg_labels_per_sample"),
        ((10, 100, 10), {"avg_labels_per_sample": float("nan")}, "avg_labels_per_sample"),
        ((10, 100, 10), {"label_power": -1.0}, "label_power"),
        ((10, 100, 10), {"label_power": float("inf")}, "label_power"),
        ((10, 100, 10), {"avg_words_per_sample": 0.0}, "avg_words_per_sample"),
        ((10, 100, 10), {"noise": 1.5}, "noise"),
        ((10, 100, 10), {"noise": -0.1}, "noise"),
        ((10, 100, 10), {"noise": "0.1"}, "noise"),
        ((10, 100, 10), {"random_state": -1}, "random_state"),
        ((10, 100, 10), {"random_state": 1.5}, "random_state"),
        ((10, 100, 10), {"random_state": True}, "random_state"),
    ],
)
def test_argument_validation(args: tuple[Any, ...], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_xmc(*args, **kwargs)
