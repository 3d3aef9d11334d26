"""Model selection with every target form fit takes: indicator, label lists, 1-D classes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from xmrrs import XRLinearClassifier
from xmrrs.datasets import make_xmc
from xmrrs.metrics import make_ranking_scorer, precision_at_1_scorer

N = 600


@pytest.fixture(scope="module")
def data() -> tuple[sp.csr_matrix, sp.csr_matrix]:
    X, Y = make_xmc(N, 800, 40, random_state=0)
    return X, Y


def _targets(Y: sp.csr_matrix) -> dict[str, object]:
    names = np.array([f"tag{j:02d}" for j in range(Y.shape[1])])
    first = np.array([r.indices[0] if r.nnz else 0 for r in Y])
    return {
        "sparse": Y,
        "dense": Y.toarray(),
        "lists": [list(names[Y[i].indices]) for i in range(Y.shape[0])],
        "classes_int": first * 7,
        "classes_str": names[first],
    }


def _clf() -> XRLinearClassifier:
    return XRLinearClassifier(n_jobs=1, max_leaf_size=8, n_estimators=1)


@pytest.mark.parametrize("kind", ["sparse", "dense", "lists", "classes_int", "classes_str"])
def test_scorers_take_every_target_form(data: tuple, kind: str) -> None:
    X, Y = data
    target = _targets(Y)[kind]
    clf = _clf().fit(X, target)
    p1 = precision_at_1_scorer(clf, X, target)
    assert p1 == pytest.approx(clf.score(X, target))
    assert 0.5 < p1 <= 1.0
    for metric in ("precision", "recall", "ndcg"):
        v = make_ranking_scorer(metric, k=3)(clf, X, target)
        assert np.isfinite(v) and 0 < v <= 1


def test_label_lists_and_indicator_score_alike(data: tuple) -> None:
    X, Y = data
    t = _targets(Y)
    a = _clf().fit(X, Y)
    b = _clf().fit(X, t["lists"])
    keep = np.asarray(Y.sum(axis=0)).ravel() > 0
    assert keep.all()  # every label occurs, so the lists name the same columns
    sc = make_ranking_scorer("ndcg", k=5)
    assert sc(a, X, Y) == pytest.approx(sc(b, X, t["lists"]))


def test_unknown_labels_count_as_misses(data: tuple) -> None:
    X, Y = data
    lists = _targets(Y)["lists"]
    clf = _clf().fit(X[:400], lists[:400])
    held = [[*r, "never-seen"] for r in lists[400:]]
    only_unknown = [["never-seen"] for _ in lists[400:]]
    assert precision_at_1_scorer(clf, X[400:], held) == pytest.approx(
        precision_at_1_scorer(clf, X[400:], lists[400:])
    )
    assert precision_at_1_scorer(clf, X[400:], only_unknown) == 0.0
    y = _targets(Y)["classes_str"]
    clf1 = _clf().fit(X[:400], y[:400])
    unk = np.where(np.arange(200) % 2 == 0, "zzz", y[400:])
    assert 0 < precision_at_1_scorer(clf1, X[400:], unk) < clf1.score(X[400:], y[400:])


def test_scorer_needs_classes_for_label_lists() -> None:
    class Bare:
        def predict_topk(self, X: object, k: int) -> tuple[np.ndarray, np.ndarray]:
            return np.zeros((2, k), np.int64), np.zeros((2, k), np.float32)

    with pytest.raises(ValueError, match="classes_"):
        precision_at_1_scorer(Bare(), None, [["a"], ["b"]])


@pytest.mark.parametrize("error_score", ["raise", np.nan])
@pytest.mark.parametrize("kind", ["sparse", "dense", "lists", "classes_int", "classes_str"])
def test_grid_search_gives_finite_scores(data: tuple, kind: str, error_score: object) -> None:
    X, Y = data
    target = _targets(Y)[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed fold warns (FitFailedWarning): an error here
        gs = GridSearchCV(
            _clf(),
            {"threshold": [0.05, 0.3]},
            scoring=precision_at_1_scorer,
            cv=KFold(3),
            error_score=error_score,
        ).fit(X, target)
    scores = gs.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and np.all(scores > 0.3), scores
    assert gs.best_estimator_.score(X, target) > 0.5


@pytest.mark.parametrize("kind", ["dense", "lists", "classes_str"])
def test_cross_val_score_and_default_scoring(data: tuple, kind: str) -> None:
    X, Y = data
    target = _targets(Y)[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = cross_val_score(_clf(), X, target, cv=KFold(3), scoring=precision_at_1_scorer)
        b = cross_val_score(_clf(), X, target, cv=KFold(3))  # estimator.score: P@1
    assert np.all(np.isfinite(a)) and np.all(a > 0.3)
    np.testing.assert_allclose(a, b)


def test_integer_cv_works_for_classes_and_is_refused_for_label_lists(data: tuple) -> None:
    X, Y = data
    t = _targets(Y)
    y = t["classes_int"]
    cls, counts = np.unique(y, return_counts=True)
    rows = np.isin(y, cls[counts >= 3])  # StratifiedKFold(3) stratifies without a warning
    Xs, y = X[rows], y[rows]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = cross_val_score(_clf(), Xs, y, cv=3, scoring=precision_at_1_scorer)
    assert np.all(s > 0.3)
    # scikit-learn's check_cv: an int cv stratifies and rejects label lists (documented)
    with pytest.raises(ValueError, match="legacy multi-label"):
        GridSearchCV(_clf(), {"threshold": [0.1]}, cv=3).fit(X, t["lists"])


def test_multiclass_predict_score_and_persistence(data: tuple, tmp_path) -> None:  # type: ignore[no-untyped-def]
    X, Y = data
    y = _targets(Y)["classes_str"]
    clf = _clf().fit(X[:400], y[:400])
    assert clf.target_type_ == "multiclass"
    np.testing.assert_array_equal(clf.classes_, np.unique(y[:400]))
    pred = clf.predict(X[400:])
    assert pred.shape == (200,) and pred.dtype == clf.classes_.dtype
    ids, _ = clf.predict_topk(X[400:], k=3)
    np.testing.assert_array_equal(pred, clf.classes_[ids[:, 0]])
    assert clf.score(X[400:], y[400:]) == pytest.approx(np.mean(pred == y[400:]))
    D = clf.decision_function(X[400:])
    assert sp.issparse(D) and D.shape == (200, len(clf.classes_))
    clf.save(tmp_path / "m")
    back = XRLinearClassifier.load(tmp_path / "m")
    assert back.target_type_ == "multiclass"
    np.testing.assert_array_equal(back.predict(X[400:]), pred)
    # a multi-label model keeps its sparse predict
    ml = _clf().fit(X[:400], Y[:400])
    assert ml.target_type_ == "multilabel" and sp.issparse(ml.predict(X[400:]))


def test_column_y_is_raveled_with_a_warning(data: tuple) -> None:
    from sklearn.exceptions import DataConversionWarning

    X, Y = data
    y = _targets(Y)["classes_int"]
    with pytest.warns(DataConversionWarning):
        clf = _clf().fit(X, y[:, None])
    np.testing.assert_array_equal(clf.predict(X[:50]), _clf().fit(X, y).predict(X[:50]))
