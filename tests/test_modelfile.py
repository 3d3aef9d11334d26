"""Model directories: bit-identical round trips, mmap, and rejection of damaged files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import scipy.sparse as sp

from xmrrs import XRLinearClassifier
from xmrrs.datasets import make_xmc
from xmrrs.modelfile import MANIFEST


@pytest.fixture(scope="module")
def split() -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    X, Y = make_xmc(1500, 3000, 300, random_state=2)
    return X[:1200], Y[:1200], X[1200:]


@pytest.fixture(scope="module")
def model(split: tuple) -> XRLinearClassifier:
    Xtr, Ytr, _ = split
    return XRLinearClassifier(n_jobs=2, max_leaf_size=20, n_estimators=2).fit(Xtr, Ytr)


def _same(a: XRLinearClassifier, b: XRLinearClassifier, X: sp.csr_matrix) -> None:
    for u, v in zip(a.predict_topk(X), b.predict_topk(X), strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_is_bit_identical(
    tmp_path: Path, split: tuple, model: XRLinearClassifier, mmap: bool
) -> None:
    _, _, Xte = split
    model.save(tmp_path / "m")
    loaded = XRLinearClassifier.load(tmp_path / "m", mmap=mmap)
    _same(model, loaded, Xte)
    assert loaded.get_params() == model.get_params()
    assert loaded.tree_ == model.tree_
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    one = Xte[:1]
    _same(model, loaded, one)


def test_saving_again_replaces_but_never_clobbers_other_dirs(
    tmp_path: Path, model: XRLinearClassifier
) -> None:
    model.save(tmp_path / "m")
    model.save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").read_text() == "x"


def test_pickle_and_joblib_use_the_same_bytes(
    tmp_path: Path, split: tuple, model: XRLinearClassifier
) -> None:
    _, _, Xte = split
    _same(model, pickle.loads(pickle.dumps(model)), Xte)
    joblib.dump(model, tmp_path / "m.joblib")
    _same(model, joblib.load(tmp_path / "m.joblib"), Xte)
    mapped = XRLinearClassifier.load(_saved(tmp_path, model), mmap=True)
    _same(model, pickle.loads(pickle.dumps(mapped)), Xte)


def _saved(tmp_path: Path, model: XRLinearClassifier) -> Path:
    path = tmp_path / "saved"
    model.save(path)
    return path


def _array_files(path: Path) -> list[Path]:
    return sorted(
        p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST and p.suffix != ".json"
    )


def test_truncated_or_flipped_arrays_are_rejected(
    tmp_path: Path, model: XRLinearClassifier
) -> None:
    path = _saved(tmp_path, model)
    files = _array_files(path)
    assert files, "the model directory has no array file"
    target = max(files, key=lambda p: p.stat().st_size)
    raw = target.read_bytes()
    target.write_bytes(raw[: len(raw) // 2])
    for mmap in (False, True):
        with pytest.raises(ValueError):
            XRLinearClassifier.load(path, mmap=mmap)
    flipped = bytearray(raw)
    flipped[len(raw) - 5] ^= 0xFF  # inside the last array's values
    target.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        XRLinearClassifier.load(path, mmap=False)
    loaded = XRLinearClassifier.load(path, mmap=True)  # mmap defers the checksum...
    with pytest.raises(ValueError, match="checksum"):
        loaded.models_[1 if "estimator-1" in str(target) else 0].verify()  # ...to verify()


def test_bad_manifests_are_rejected(tmp_path: Path, model: XRLinearClassifier) -> None:
    path = _saved(tmp_path, model)
    mpath = path / MANIFEST
    good = json.loads(mpath.read_text())
    with pytest.raises(FileNotFoundError):
        XRLinearClassifier.load(tmp_path / "nothing")
    cases = [
        ({**good, "format_version": 99}, "version"),
        ({**good, "format": "pecos"}, "not an"),
        ({**good, "n_features_in": good["n_features_in"] + 1}, "does not match"),
        ({**good, "estimators": ["../x"]}, "estimator name"),
        ({**good, "params": {**good["params"], "no_such_param": 1}}, "parameters"),
    ]
    for manifest, match in cases:
        mpath.write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=match):
            XRLinearClassifier.load(path)
    mpath.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        XRLinearClassifier.load(path)


def test_named_classes_round_trip(tmp_path: Path) -> None:
    X, Y = make_xmc(400, 500, 12, random_state=4)
    lists = [[f"L{j}" for j in Y[i].indices] for i in range(Y.shape[0])]
    clf = XRLinearClassifier(n_jobs=1, max_leaf_size=4).fit(X, lists)
    clf.save(tmp_path / "m")
    back = XRLinearClassifier.load(tmp_path / "m")
    np.testing.assert_array_equal(back.classes_, clf.classes_)
    assert back.score(X, lists) == clf.score(X, lists)
