"""XRLinearClassifier: fit/predict contract, bad input, determinism, sklearn tooling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import config_context
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from xmrrs import XRLinearClassifier
from xmrrs.baseline import LabelCentroidBaseline
from xmrrs.datasets import make_xmc
from xmrrs.indexing import ClusterTree, HierarchicalKMeans, label_representation
from xmrrs.metrics import precision_at_1_scorer, precision_at_k

SMALL = {"n_jobs": 2, "max_leaf_size": 20, "branching": 8, "n_estimators": 1}


@pytest.fixture(scope="module")
def data() -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    X, Y = make_xmc(3000, 4000, 400, random_state=1)
    return X[:2400], Y[:2400], X[2400:], Y[2400:]


@pytest.fixture(scope="module")
def fitted(data: tuple) -> XRLinearClassifier:
    Xtr, Ytr, _, _ = data
    return XRLinearClassifier(**SMALL).fit(Xtr, Ytr)


def test_beats_the_label_centroid_baseline(data: tuple, fitted: XRLinearClassifier) -> None:
    Xtr, Ytr, Xte, Yte = data
    ids, scores = fitted.predict_topk(Xte, k=5)
    assert ids.shape == scores.shape == (Xte.shape[0], 5)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    base, _ = LabelCentroidBaseline(n_jobs=2).fit(Xtr, Ytr).predict_topk(Xte, k=5)
    p_xr, p_base = precision_at_k(Yte, ids, k=1), precision_at_k(Yte, base, k=1)
    assert p_xr > p_base, (p_xr, p_base)
    assert p_xr > 0.5
    # best first, scores of l3-hinge in (0, 1]
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert np.all((scores > 0) & (scores <= 1))


def test_tree_and_fitted_attributes(data: tuple, fitted: XRLinearClassifier) -> None:
    Xtr, Ytr, _, _ = data
    assert fitted.n_features_in_ == Xtr.shape[1]
    np.testing.assert_array_equal(fitted.classes_, np.arange(Ytr.shape[1]))
    assert isinstance(fitted.tree_, ClusterTree) and fitted.tree_.n_labels == Ytr.shape[1]
    assert len(fitted.models_) == 1


def test_predict_and_decision_function_are_sparse_topk(
    data: tuple, fitted: XRLinearClassifier
) -> None:
    _, Ytr, Xte, _ = data
    ids, scores = fitted.predict_topk(Xte, k=fitted.top_k)
    P = fitted.predict(Xte)
    D = fitted.decision_function(Xte)
    assert sp.issparse(P) and P.shape == (Xte.shape[0], Ytr.shape[1])
    assert np.all(P.getnnz(axis=1) == fitted.top_k)
    for i in (0, 7, 100):
        np.testing.assert_array_equal(np.sort(P[i].indices), np.sort(ids[i]))
        row = D[i].toarray().ravel()
        np.testing.assert_array_equal(row[ids[i]], scores[i])
    with config_context(sparse_interface="sparray"):
        assert isinstance(fitted.predict(Xte[:3]), sp.sparray)
    assert isinstance(fitted.predict(sp.csr_array(Xte[:3])), sp.sparray)


def test_k_beyond_the_reachable_labels_pads(data: tuple) -> None:
    Xtr, Ytr, Xte, _ = data
    clf = XRLinearClassifier(
        n_jobs=1, max_leaf_size=10, branching=4, beam_size=1, n_estimators=1
    ).fit(Xtr[:500], Ytr[:500, :40])
    ids, scores = clf.predict_topk(Xte[:5], k=30)
    # beam 1 reaches one leaf of at most 10 labels
    assert np.all((ids[:, 10:] == -1) & np.isneginf(scores[:, 10:]))
    assert np.all(ids[:, 0] >= 0)
    wide, _ = clf.predict_topk(Xte[:5], k=40, beam_size=100)
    assert np.all(wide >= 0) and all(len(set(r)) == 40 for r in wide)


def test_same_seed_same_model_any_thread_count(data: tuple) -> None:
    Xtr, Ytr, Xte, _ = data
    a = XRLinearClassifier(**{**SMALL, "n_jobs": 1}).fit(Xtr, Ytr).predict_topk(Xte)
    b = XRLinearClassifier(**{**SMALL, "n_jobs": 2}).fit(Xtr, Ytr).predict_topk(Xte)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("n_estimators", [1, 2])
def test_one_row_queries_equal_the_batch(data: tuple, n_estimators: int) -> None:
    # rows are normalised inside the search: one row at a time (no thread pool) and the
    # batch must agree bit for bit, whatever the input's scale, and leave the input alone
    Xtr, Ytr, Xte, _ = data
    clf = XRLinearClassifier(**{**SMALL, "n_estimators": n_estimators}).fit(Xtr, Ytr)
    Q = sp.csr_matrix(Xte[:40] * 3.7)
    before = Q.data.copy()
    ids, scores = clf.predict_topk(Q, k=5)
    for i in range(Q.shape[0]):
        a, b = clf.predict_topk(Q[i], k=5)
        np.testing.assert_array_equal(a[0], ids[i])
        np.testing.assert_array_equal(b[0], scores[i])
    # a few rows (and, at one thread, fewer than 32) are searched on the calling thread too
    for n_jobs, rows in ((2, 3), (1, 3), (1, 20), (1, 31)):
        a, b = clf.set_params(n_jobs=n_jobs).predict_topk(Q[:rows], k=5)
        np.testing.assert_array_equal(a, ids[:rows])
        np.testing.assert_array_equal(b, scores[:rows])
    clf.set_params(n_jobs=SMALL.get("n_jobs"))
    np.testing.assert_array_equal(Q.data, before)
    # same as normalising first and searching without normalisation
    pre = clf.set_params(normalize=False).predict_topk(Normalizer().transform(Q), k=5)
    clf.set_params(normalize=True)
    np.testing.assert_array_equal(pre[0], ids)
    np.testing.assert_allclose(pre[1], scores, rtol=1e-5, atol=1e-6)


def test_dense_input_equals_sparse(data: tuple, fitted: XRLinearClassifier) -> None:
    _, _, Xte, _ = data
    a = fitted.predict_topk(Xte[:20])
    b = fitted.predict_topk(Xte[:20].toarray())
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)


def test_label_lists_give_named_classes() -> None:
    X, Y = make_xmc(800, 1000, 30, random_state=3)
    names = np.array([f"tag{j:02d}" for j in range(30)])
    lists = [list(names[Y[i].indices]) for i in range(Y.shape[0])]
    clf = XRLinearClassifier(n_jobs=1, max_leaf_size=8).fit(X, lists)
    present = np.unique(np.concatenate([Y[i].indices for i in range(Y.shape[0])]))
    np.testing.assert_array_equal(clf.classes_, names[present])
    ids, _ = clf.predict_topk(X[:50], k=1)
    top = clf.classes_[ids[:, 0]]
    hits = np.mean([t in lab for t, lab in zip(top, lists[:50], strict=True)])
    assert hits == pytest.approx(clf.score(X[:50], lists[:50]))
    assert hits > 0.5


def test_bad_input_raises_clear_errors(data: tuple, fitted: XRLinearClassifier) -> None:
    Xtr, Ytr, Xte, _ = data
    clf = XRLinearClassifier(n_jobs=1)
    with pytest.raises(ValueError, match="rows"):
        clf.fit(Xtr, Ytr[:-1])
    with pytest.raises(ValueError, match="0/1"):
        clf.fit(Xtr, Ytr * 2.0)
    with pytest.raises(ValueError, match="continuous"):
        clf.fit(Xtr, np.linspace(0, 1, Xtr.shape[0]))  # a 1-D y holds class labels
    with pytest.raises(ValueError, match="2-D"):
        clf.fit(Xtr, np.zeros((Xtr.shape[0], 2, 2)))
    bad = Xtr.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(bad, Ytr)
    with pytest.raises(ValueError, match="features"):
        fitted.predict_topk(Xte[:, :-1])
    with pytest.raises(ValueError, match="features"):
        fitted.predict(Xte[:, :-1].toarray())
    with pytest.raises(ValueError, match="k must be"):
        fitted.predict_topk(Xte, k=0)
    with pytest.raises(ValueError, match="beam_size"):
        fitted.predict_topk(Xte, beam_size=0)
    nan_q = Xte[:2].copy()
    nan_q.data[0] = np.inf
    with pytest.raises(ValueError):
        fitted.predict_topk(nan_q)
    for params, match in [
        ({"loss": "l2"}, "loss"),
        ({"negatives": "all"}, "negatives"),
        ({"Cp": 0.0}, "Cp"),
        ({"branching": 1}, "branching"),
        ({"beam_size": 0}, "beam_size"),
        ({"post_processor": "l9-hinge"}, "post_processor"),
        ({"representation": "tfidf"}, "representation"),
        ({"threshold": -1.0}, "threshold"),
        ({"top_max_samples": 0.0}, "top_max_samples"),
        ({"top_max_samples": 1.5}, "share of the rows"),
        ({"top_max_samples": 0}, "top_max_samples"),
        ({"top_max_samples": True}, "top_max_samples"),
        ({"top_max_samples": float("nan")}, "top_max_samples"),
        ({"verbose": -1}, "verbose"),
        ({"verbose": 0.5}, "verbose"),
    ]:
        with pytest.raises(ValueError, match=match):
            XRLinearClassifier(**params).fit(Xtr[:50], Ytr[:50])


def test_verbose_takes_a_bool(data: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    """``verbose=True`` (scikit-learn's convention) reports the stages; False is silent."""
    Xtr, Ytr, _, _ = data
    XRLinearClassifier(**SMALL, verbose=False).fit(Xtr, Ytr)
    assert capsys.readouterr().err == ""
    XRLinearClassifier(**SMALL, verbose=True).fit(Xtr, Ytr)
    assert "models of" in capsys.readouterr().err


def test_all_zero_rows_and_unseen_labels_are_handled(data: tuple) -> None:
    Xtr, Ytr, Xte, _ = data
    Y = sp.hstack([Ytr, sp.csr_matrix((Ytr.shape[0], 3))]).tocsr()  # 3 labels never seen
    clf = XRLinearClassifier(**SMALL).fit(Xtr, Y)
    assert clf.classes_.shape == (Y.shape[1],)
    Z = sp.csr_matrix((2, Xte.shape[1]), dtype=np.float32)  # all-zero queries
    ids, scores = clf.predict_topk(Z, k=3)
    assert np.all(ids >= 0) and np.all(np.isfinite(scores))
    np.testing.assert_array_equal(ids[0], ids[1])  # bias-only scores


def test_top_layer_on_a_sample(data: tuple) -> None:
    """``top_max_samples`` changes the top layer alone: a share of 1.0 (or as many rows as
    there are) is every row, a smaller one another top layer that still ranks well."""
    Xtr, Ytr, Xte, Yte = data
    full = XRLinearClassifier(**SMALL).fit(Xtr, Ytr)
    for every in (1.0, Xtr.shape[0], 10 * Xtr.shape[0]):
        same = XRLinearClassifier(**SMALL, top_max_samples=every).fit(Xtr, Ytr)
        assert [m.to_bytes() for m in same.models_] == [m.to_bytes() for m in full.models_]
    p_full = precision_at_k(Yte, full.predict_topk(Xte, k=1)[0], k=1)
    for negatives in ("tfn", "tfn+man"):
        half = XRLinearClassifier(**SMALL, top_max_samples=0.5, negatives=negatives)
        half.fit(Xtr, Ytr)
        assert half.models_[0].to_bytes() != full.models_[0].to_bytes()
        p_half = precision_at_k(Yte, half.predict_topk(Xte, k=1)[0], k=1)
        assert p_half > p_full - 0.1, (negatives, p_half, p_full)


@pytest.mark.parametrize("negatives", ["man", "tfn+man"])
@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_other_losses_and_negatives_train(data: tuple, loss: str, negatives: str) -> None:
    Xtr, Ytr, Xte, Yte = data
    clf = XRLinearClassifier(**SMALL, loss=loss, negatives=negatives).fit(Xtr, Ytr)
    assert precision_at_k(Yte, clf.predict_topk(Xte, k=1)[0], k=1) > 0.4


def test_ensemble_of_trees(data: tuple, fitted: XRLinearClassifier) -> None:
    Xtr, Ytr, Xte, Yte = data
    ens = XRLinearClassifier(**{**SMALL, "n_estimators": 3}).fit(Xtr, Ytr)
    assert len(ens.models_) == 3
    p1 = precision_at_k(Yte, fitted.predict_topk(Xte, k=1)[0], k=1)
    p3 = precision_at_k(Yte, ens.predict_topk(Xte, k=1)[0], k=1)
    assert p3 >= p1 - 0.01


def test_mixed_ensemble_shapes(data: tuple) -> None:
    Xtr, Ytr, Xte, _ = data
    kw = {**SMALL, "n_estimators": 3}
    mixed = XRLinearClassifier(**kw).fit(Xtr, Ytr)
    seeds = XRLinearClassifier(**kw, ensemble="seeds").fit(Xtr, Ytr)
    trees = [ClusterTree._from_core(m.tree_parts()) for m in mixed.models_]
    same = [ClusterTree._from_core(m.tree_parts()) for m in seeds.models_]
    # tree 0 is the balanced default tree in both; "seeds" repeats its shape
    assert trees[0] == same[0] == mixed.tree_
    assert trees[0].n_nodes_per_level == [1, 5, 20]
    assert all(t.n_nodes_per_level == trees[0].n_nodes_per_level for t in same)
    # mixed: same depth, fan-out branching // 2 (tree 1) and branching (tree 2)
    for tree, width in zip(trees[1:], (4, 8), strict=True):
        assert tree.depth == trees[0].depth
        assert [int(np.diff(p).max()) for p in tree.child_ptrs] == [width, width]
    # 4 x 4 leaves of <= 20 cannot hold 400 labels: the caps force 25 each; 8 x 8 can: uneven
    assert set(np.diff(trees[1].leaf_ptr).tolist()) == {25}
    sizes = np.diff(trees[2].leaf_ptr)
    assert sizes.max() <= 20 and sizes.max() - sizes.min() > 1
    # tree 1 is clustered on PIFA (the representation), tree 2 on PII (the second view)
    Xn = Normalizer().fit_transform(Xtr).astype(np.float32)
    for i, width, rep in ((1, 4, "pifa"), (2, 8, "pii")):
        hk = HierarchicalKMeans(
            branching=(width, width), max_leaf_size=20, balanced=False, random_state=i, n_jobs=2
        )
        assert hk.fit(label_representation(Xn, Ytr, rep, n_jobs=2)).tree_ == trees[i], rep
    # another representation: every tree is clustered on it
    pii = XRLinearClassifier(**kw, representation="pii").fit(Xtr, Ytr)
    hk = HierarchicalKMeans(branching=(4, 4), max_leaf_size=20, balanced=False, random_state=1)
    assert hk.fit(label_representation(Xtr, Ytr, "pii")).tree_ == ClusterTree._from_core(
        pii.models_[1].tree_parts()
    )
    assert not np.array_equal(mixed.predict_topk(Xte)[0], seeds.predict_topk(Xte)[0])
    with pytest.raises(ValueError, match="ensemble must be one of"):
        XRLinearClassifier(ensemble="bagged").fit(Xtr, Ytr)


def test_relevance_weights_change_the_model(data: tuple, fitted: XRLinearClassifier) -> None:
    Xtr, Ytr, Xte, _ = data
    R = Ytr.copy()
    R.data = np.linspace(0.1, 3.0, R.nnz).astype(np.float32)
    w = XRLinearClassifier(**SMALL).fit(Xtr, Ytr, relevance=R)
    assert not np.array_equal(w.predict_topk(Xte)[1], fitted.predict_topk(Xte)[1])
    with pytest.raises(ValueError, match="shape"):
        XRLinearClassifier(**SMALL).fit(Xtr, Ytr, relevance=R[:-1])


def test_user_supplied_tree_indexer_and_representation(data: tuple) -> None:
    Xtr, Ytr, Xte, _ = data
    hk = HierarchicalKMeans(branching=4, max_leaf_size=50, random_state=5)
    a = XRLinearClassifier(indexer=hk, n_jobs=1, n_estimators=1).fit(Xtr, Ytr)
    assert a.tree_.n_nodes_per_level[1] <= 4
    b = XRLinearClassifier(indexer=a.tree_, n_jobs=1, n_estimators=1).fit(Xtr, Ytr)
    assert b.tree_ == a.tree_
    np.testing.assert_array_equal(a.predict_topk(Xte)[0], b.predict_topk(Xte)[0])
    calls = []

    def rep(X: sp.csr_matrix, Y: sp.csr_matrix) -> sp.csr_matrix:
        calls.append(X.shape)
        return sp.csr_matrix(Y.T @ X)

    XRLinearClassifier(representation=rep, n_jobs=1, max_leaf_size=50).fit(Xtr, Ytr)
    assert calls == [Xtr.shape]
    with pytest.raises(ValueError, match="labels"):
        XRLinearClassifier(indexer=a.tree_).fit(Xtr, Ytr[:, :-1])


def test_explicit_fanouts_and_model_file_keep_them(data: tuple, tmp_path) -> None:  # type: ignore[no-untyped-def]
    Xtr, Ytr, Xte, _ = data
    clf = XRLinearClassifier(n_jobs=2, branching=[4, 5], max_leaf_size=20).fit(Xtr, Ytr)
    assert clf.tree_.n_nodes_per_level == [1, 4, 20]
    clf.save(tmp_path / "m")
    back = XRLinearClassifier.load(tmp_path / "m")
    assert list(back.get_params()["branching"]) == [4, 5]
    np.testing.assert_array_equal(back.predict_topk(Xte, 5)[0], clf.predict_topk(Xte, 5)[0])
    assert clone(clf).get_params()["branching"] == [4, 5]
    with pytest.raises(ValueError, match="fan-out"):
        XRLinearClassifier(branching=[4, 1]).fit(Xtr, Ytr)


def test_clone_pickle_and_refit(data: tuple, fitted: XRLinearClassifier) -> None:
    _, _, Xte, _ = data
    c = clone(fitted)
    assert not hasattr(c, "models_") and c.get_params() == fitted.get_params()
    p = pickle.loads(pickle.dumps(fitted))
    for a, b in zip(fitted.predict_topk(Xte), p.predict_topk(Xte), strict=True):
        np.testing.assert_array_equal(a, b)


def test_grid_search_and_cross_val_score(data: tuple) -> None:
    Xtr, Ytr, _, _ = data
    X, Y = Xtr[:1200], Ytr[:1200]
    gs = GridSearchCV(
        XRLinearClassifier(n_jobs=1, max_leaf_size=40),
        {"threshold": [0.05, 0.2]},
        scoring=precision_at_1_scorer,
        cv=2,
    ).fit(X, Y)
    assert gs.best_params_["threshold"] in (0.05, 0.2)
    assert 0.3 < gs.best_score_ <= 1.0
    scores = cross_val_score(
        XRLinearClassifier(n_jobs=1, max_leaf_size=40),
        X,
        Y.toarray(),
        scoring=precision_at_1_scorer,
        cv=KFold(2),
    )
    assert scores.shape == (2,) and np.all(scores > 0.3)


def test_pipeline(data: tuple) -> None:
    Xtr, Ytr, Xte, Yte = data
    pipe = Pipeline([("norm", Normalizer()), ("xr", XRLinearClassifier(**SMALL))]).fit(Xtr, Ytr)
    assert pipe.score(Xte, Yte) > 0.5


def test_target_representation_invariance(data: tuple) -> None:
    Xtr, Ytr, Xte, _ = data
    X, Y = Xtr[:600], Ytr[:600, :60]
    keep = np.asarray(Y.sum(axis=0)).ravel() > 0  # label lists only name labels that occur
    X, Y = X, Y[:, keep]
    outs = []
    for target in (Y, Y.toarray(), sp.csc_matrix(Y), [list(Y[i].indices) for i in range(600)]):
        clf = XRLinearClassifier(n_jobs=1, max_leaf_size=10).fit(X, target)
        outs.append(clf.predict(Xte))
    for o in outs[1:]:
        assert (o != outs[0]).nnz == 0


def test_csr_fit_checks_match_the_other_inputs(data: tuple) -> None:
    # scipy CSR skips sklearn's validate_data in fit: same checks, same model
    Xtr, Ytr, Xte, _ = data
    clf = XRLinearClassifier(**SMALL)
    for bad in (Xtr[:0], Xtr[:, :0]):
        with pytest.raises(ValueError, match="minimum of 1 is required"):
            clf.fit(bad, Ytr[: bad.shape[0]])
        with pytest.raises(ValueError, match="minimum of 1 is required"):
            clf.fit(bad.tocsc(), Ytr[: bad.shape[0]])
    for v in (np.nan, np.inf):
        bad = Xtr.copy()
        bad.data[1] = v
        with pytest.raises(ValueError, match="NaN or infinity"):
            clf.fit(bad, Ytr)
        y_bad = Ytr.astype(np.float32)
        y_bad.data[0] = v
        with pytest.raises(ValueError, match="NaN or infinity"):
            clf.fit(Xtr, y_bad)
    a = XRLinearClassifier(**SMALL).fit(Xtr, Ytr)
    b = XRLinearClassifier(**SMALL).fit(Xtr.tocsc(), Ytr)
    c = XRLinearClassifier(**SMALL).fit(sp.csr_array(Xtr.astype(np.float64)), Ytr)
    assert a.n_features_in_ == b.n_features_in_ == c.n_features_in_ == Xtr.shape[1]
    assert not hasattr(a, "feature_names_in_")
    for other in (b, c):
        for x, y in zip(a.predict_topk(Xte), other.predict_topk(Xte), strict=True):
            np.testing.assert_array_equal(x, y)
