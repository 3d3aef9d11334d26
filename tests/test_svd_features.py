"""SVDFeatures: a dense block from the sparse features' singular vectors, as a transformer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

from xmrrs import XRLinearClassifier
from xmrrs.datasets import make_xmc
from xmrrs.hybrid import HybridMatrix
from xmrrs.indexing import label_representation
from xmrrs.svd_features import COMPONENTS_FILE, PARAMS_FILE, SVDFeatures


@pytest.fixture(scope="module")
def data() -> tuple[sp.csr_matrix, sp.csr_matrix]:
    X, Y = make_xmc(700, 400, 60, random_state=1)
    return X, Y


def unit(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(n == 0, 1, n)


@pytest.mark.parametrize("source", ["rows", "labels"])
def test_transform_appends_the_projection(data: tuple, source: str) -> None:
    X, Y = data
    svd = SVDFeatures(8, source=source, n_iter=8).fit(X, Y)  # near-exact vectors
    H = svd.transform(X[:50])
    assert isinstance(H, HybridMatrix) and H.n_dense == 8 and H.n_sparse == X.shape[1]
    Xn = unit(X[:50].toarray())
    np.testing.assert_allclose(H.sparse.toarray(), Xn, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(H.dense, unit(Xn @ svd.components_.T), rtol=1e-5, atol=1e-6)
    # the components are orthonormal right singular vectors of what was decomposed
    c = svd.components_.astype(np.float64)
    np.testing.assert_allclose(c @ c.T, np.eye(8), atol=1e-5)
    a = unit(X.toarray()) if source == "rows" else label_representation(unit(X.toarray()), Y)
    a = a.toarray() if sp.issparse(a) else np.asarray(a)
    top = np.linalg.svd(a, full_matrices=False)[2][:3]
    # the leading directions agree with an exact SVD up to sign
    np.testing.assert_allclose(np.abs(np.sum(top * c[:3], axis=1)), 1.0, atol=1e-3)


def test_a_seed_gives_the_same_bits(data: tuple) -> None:
    # fit holds the BLAS to one thread (threadpoolctl), whatever the caller set; at this size
    # BLAS would not split the work anyway, so this checks the seeding, not the pinning
    X, _ = data
    a = SVDFeatures(8).fit(X).components_
    with threadpool_limits(limits=2):
        b = SVDFeatures(8).fit(X).components_
    assert a.tobytes() == b.tobytes()
    assert SVDFeatures(8, random_state=1).fit(X).components_.tobytes() != a.tobytes()


def test_pipeline_with_xr_linear(data: tuple) -> None:
    X, Y = data
    pipe = make_pipeline(SVDFeatures(8), XRLinearClassifier(n_estimators=1, n_jobs=1))
    pipe.fit(X[:600], Y[:600])
    svd = SVDFeatures(8).fit(X[:600])
    clf = XRLinearClassifier(n_estimators=1, n_jobs=1).fit(svd.transform(X[:600]), Y[:600])
    np.testing.assert_array_equal(
        pipe.predict(X[600:]).toarray(), clf.predict(svd.transform(X[600:])).toarray()
    )
    assert clf.models_[0].n_dense == 8
    assert clone(SVDFeatures(5, source="labels")).get_params()["source"] == "labels"


def test_save_and_load(data: tuple, tmp_path: Path) -> None:
    X, Y = data
    svd = SVDFeatures(6, source="labels", n_iter=3).fit(X, Y)
    svd.save(tmp_path / "s")
    back = SVDFeatures.load(tmp_path / "s")
    assert back.get_params() == svd.get_params()
    a, b = svd.transform(X[:40]), back.transform(X[:40])
    assert a.dense.tobytes() == b.dense.tobytes()
    assert (a.sparse != b.sparse).nnz == 0

    comps = tmp_path / "s" / COMPONENTS_FILE
    good = comps.read_bytes()
    for bad, match in (
        (good[:120], "not a readable .npy array"),  # the header promises more than the file
        (b"garbage", "not a readable .npy array"),
    ):
        comps.write_bytes(bad)
        with pytest.raises(ValueError, match=re.escape(str(comps))) as e:
            SVDFeatures.load(tmp_path / "s")
        assert match in str(e.value)
    np.save(comps, svd.components_[:, :-1])
    with pytest.raises(ValueError, match="expected a float32 array of shape"):
        SVDFeatures.load(tmp_path / "s")
    nan = svd.components_.copy()
    nan[0, 0] = np.nan
    np.save(comps, nan)
    with pytest.raises(ValueError, match="non-finite"):
        SVDFeatures.load(tmp_path / "s")
    comps.unlink()
    with pytest.raises(ValueError, match="missing"):
        SVDFeatures.load(tmp_path / "s")
    params = tmp_path / "s" / PARAMS_FILE
    params.write_text(
        '{"format": "xmrrs-svd-features", "version": 1, "params": {"n_components": -3}}'
    )
    with pytest.raises(ValueError, match="bad SVDFeatures file"):
        SVDFeatures.load(tmp_path / "s")
    params.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt SVDFeatures file"):
        SVDFeatures.load(tmp_path / "s")
    with pytest.raises(ValueError, match="missing SVDFeatures file"):
        SVDFeatures.load(tmp_path / "nothing")


def test_bad_input_is_refused(data: tuple) -> None:
    X, Y = data
    for params, match in (
        ({"n_components": 0}, "n_components"),
        ({"n_components": True}, "n_components"),
        ({"n_iter": -1}, "n_iter"),
        ({"source": "cols"}, "source"),
        ({"normalize": "yes"}, "normalize"),
        ({"n_components": 400}, "below the smaller side"),
        ({"n_components": 60, "source": "labels"}, "below the smaller side"),
    ):
        with pytest.raises(ValueError, match=match):
            SVDFeatures(**params).fit(X, Y)
    with pytest.raises(ValueError, match="needs the labels"):
        SVDFeatures(4, source="labels").fit(X)
    with pytest.raises(TypeError, match="HybridMatrix"):
        SVDFeatures(4).fit(HybridMatrix(X, np.ones((X.shape[0], 2), np.float32)))
    bad = X.copy()
    bad.data[0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        SVDFeatures(4).fit(bad)
    svd = SVDFeatures(4).fit(X)
    with pytest.raises(ValueError, match="expecting 400 features"):
        svd.transform(X[:, :10])
    with pytest.raises(ValueError, match="not fitted"):
        SVDFeatures(4).transform(X)


def test_corrupted_files_fail_cleanly(data: tuple, tmp_path: Path) -> None:
    """Seeded random corruption of either file (flipped, overwritten or cut bytes): ``load``
    raises ValueError or OSError, or the loaded transformer answers with finite values (or
    a ValueError naming non-finite ones); never another exception."""
    import random
    import shutil

    X, _ = data
    base = tmp_path / "base"
    SVDFeatures(6).fit(X).save(base)
    rng = random.Random(0)
    outcomes = {"refused": 0, "loaded": 0}
    for trial in range(300):
        d = tmp_path / f"t{trial}"
        shutil.copytree(base, d)
        f = d / rng.choice([PARAMS_FILE, COMPONENTS_FILE])
        b = bytearray(f.read_bytes())
        what = rng.random()
        if what < 0.4:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif what < 0.7:
            i = rng.randrange(len(b))
            b[i : i + rng.randint(1, 16)] = bytes(rng.randrange(256) for _ in range(8))
        else:
            del b[rng.randrange(len(b)) :]
        f.write_bytes(bytes(b))
        try:
            est = SVDFeatures.load(d)
        except (ValueError, OSError):
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        try:
            H = est.transform(X[:5])
        except ValueError as e:
            assert "NaN or infinite" in str(e), e
            continue
        assert H.dense.shape == (5, 6) and np.isfinite(H.dense).all()
    assert outcomes["refused"] > 100 and outcomes["loaded"] > 10, outcomes
