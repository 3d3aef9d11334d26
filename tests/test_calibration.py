"""CalibratedRanker: held-out calibration, probabilities, threshold mode, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.model_selection import KFold

from xmrrs import XRLinearClassifier
from xmrrs.calibration import (
    CalibratedRanker,
    expected_calibration_error,
    reliability_curve,
    topk_hits,
)
from xmrrs.datasets import make_xmc
from xmrrs.modelfile import MANIFEST


@pytest.fixture(scope="module")
def data() -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    X, Y = make_xmc(3000, 3000, 200, random_state=0)
    return X[:2000], Y[:2000], X[2000:], Y[2000:]


def _ranker() -> XRLinearClassifier:
    return XRLinearClassifier(n_jobs=2, n_estimators=1)


@pytest.fixture(scope="module")
def fitted(data: tuple) -> CalibratedRanker:
    Xtr, Ytr, _, _ = data
    return CalibratedRanker(_ranker(), k=5).fit(Xtr, Ytr)


def test_metrics_helpers() -> None:
    Y = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]]))
    ids = np.array([[2, 1], [0, -1]])
    np.testing.assert_array_equal(topk_hits(Y, ids), [[True, False], [False, False]])
    hits = np.array([1, 0, 1, 1], bool)
    assert expected_calibration_error(hits, hits.astype(float)) == 0.0
    assert expected_calibration_error(hits, np.full(4, 0.75)) == pytest.approx(0.0)
    assert expected_calibration_error(hits, np.full(4, 0.25)) == pytest.approx(0.5)
    _mean_p, freq, count = reliability_curve(hits, [0.05, 0.05, 0.95, 0.95], n_bins=10)
    assert count.tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert freq[0] == 0.5 and freq[9] == 1.0 and np.isnan(freq[1])


def test_calibration_lowers_the_ece_on_test_data(data: tuple, fitted: CalibratedRanker) -> None:
    _, _, Xte, Yte = data
    ids, probs = fitted.predict_topk(Xte)
    raw_ids, raw = fitted.estimator_.predict_topk(Xte, 5)
    np.testing.assert_array_equal(ids, raw_ids)  # the ranking is the ranker's
    hits = topk_hits(Yte, ids)
    before = expected_calibration_error(hits, raw)
    after = expected_calibration_error(hits, probs)
    assert after < 0.05 and after < before / 2, (before, after)
    assert np.all((probs >= 0) & (probs <= 1))
    assert fitted.n_calibration_pairs_ == 2000 * 5


def test_isotonic_map_is_monotone_in_the_score(fitted: CalibratedRanker) -> None:
    s = np.linspace(-1, 2, 301)[None, :]
    p = fitted.calibrate(s).ravel()
    assert np.all(np.diff(p) >= 0)
    assert fitted.calibrate(np.array([[-np.inf]]))[0, 0] == 0.0


def test_predict_proba_and_predict_above(data: tuple, fitted: CalibratedRanker) -> None:
    _, _, Xte, Yte = data
    P = fitted.predict_proba(Xte[:50])
    assert sp.issparse(P) and P.shape == (50, 200) and np.all(P.getnnz(axis=1) == 5)
    _ids, probs = fitted.predict_topk(Xte[:50])
    for t in (0.0, 0.3, 0.7, 1.0):
        A = fitted.predict_above(Xte[:50], t)
        assert A.shape == (50, 200) and A.dtype == np.int32
        np.testing.assert_array_equal(A.getnnz(axis=1), (probs >= t).sum(axis=1))
        lists = fitted.predict_above(Xte[:50], t, return_lists=True)
        assert [len(r) for r in lists] == A.getnnz(axis=1).tolist()
    assert all(len(r) <= 2 for r in fitted.predict_above(Xte[:50], 0.0, k=2, return_lists=True))
    # precision of the confident labels is high
    A = fitted.predict_above(Xte, 0.8)
    assert A.nnz > 0 and A.multiply(Yte).sum() / A.nnz > 0.7
    with pytest.raises(ValueError, match="threshold"):
        fitted.predict_above(Xte[:2], 1.5)


def test_sigmoid_label_lists_and_1d_targets(data: tuple) -> None:
    Xtr, Ytr, Xte, _Yte = data
    names = np.array([f"L{j:03d}" for j in range(Ytr.shape[1])])
    lists = [list(names[Ytr[i].indices]) for i in range(Ytr.shape[0])]
    cal = CalibratedRanker(_ranker(), method="sigmoid", k=3, cv=KFold(2)).fit(Xtr, lists)
    assert set(cal.calibrator_) == {"coef", "intercept"}
    out = cal.predict_above(Xte[:5], 0.2, return_lists=True)
    assert all(isinstance(lab, str) for r in out for lab in r)
    y = np.array([names[r.indices[0]] if r.nnz else "none" for r in Ytr])
    cal1 = CalibratedRanker(_ranker(), k=3).fit(Xtr, y)
    assert cal1.estimator_.target_type_ == "multiclass"
    assert cal1.predict_proba(Xte[:4]).shape == (4, len(cal1.classes_))


def test_save_load_is_json_and_exact(data: tuple, fitted: CalibratedRanker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, _, Xte, _ = data
    path = tmp_path / "m"
    fitted.save(path)
    manifest = json.loads((path / MANIFEST).read_text())
    doc = manifest["extras_json"]["calibration"]
    assert doc["format"] == "xmrrs.CalibratedRanker" and "x" in doc["calibrator"]
    assert not list(path.rglob("*.pkl")) and not list(path.rglob("*.pickle"))
    back = CalibratedRanker.load(path, mmap=True)
    for a, b in zip(fitted.predict_topk(Xte), back.predict_topk(Xte), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.get_params()["k"] == fitted.k and back.method == fitted.method
    # the ranker alone loads from the same directory
    XRLinearClassifier.load(path).predict_topk(Xte[:2])
    fitted.save(path)  # replacing a saved model works: one manifest, only the new estimators
    manifest = json.loads((path / MANIFEST).read_text())
    assert sorted(p.name for p in path.iterdir()) == sorted([MANIFEST, *manifest["estimators"]])
    manifest["extras_json"]["calibration"]["calibrator"]["y"][0] = 7.0
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="corrupt calibration"):
        CalibratedRanker.load(path)
    del manifest["extras_json"]
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"not a xmrrs\.CalibratedRanker"):
        CalibratedRanker.load(path)


def test_the_unreleased_layout_is_refused_with_a_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "ranker").mkdir()
    (tmp_path / "calibration.json").write_text("{}")
    with pytest.raises(ValueError, match="unreleased layout"):
        CalibratedRanker.load(tmp_path)


def test_save_needs_an_xr_ranker(fitted: CalibratedRanker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = clone(fitted)
    for name in ("calibrator_", "n_calibration_pairs_", "classes_"):
        setattr(other, name, getattr(fitted, name))
    other.estimator_ = object()
    with pytest.raises(TypeError, match="XRLinearClassifier"):
        other.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_bad_parameters_and_clone(data: tuple) -> None:
    Xtr, Ytr, _, _ = data
    for kw, match in (({"method": "beta"}, "method"), ({"k": 0}, "k must"), ({"cv": 1}, "cv")):
        with pytest.raises(ValueError, match=match):
            CalibratedRanker(_ranker(), **kw).fit(Xtr[:100], Ytr[:100])  # type: ignore[arg-type]
    c = clone(CalibratedRanker(_ranker(), k=4))
    assert c.get_params()["k"] == 4 and not hasattr(c, "calibrator_")
