"""Model directories: bit-identical round trips, mmap, and rejection of damaged files."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import stat
import threading
from collections.abc import Callable
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
    assert loaded.get_params() == {**model.get_params(), "n_jobs": None}
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
    # a flipped weight: the full load rejects it by the checksum; a mapped load checks the
    # structure only (a weight can change scores, never validity) and verify() finds it
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    start, end = header["layer0.vals"]["data_offsets"]
    flipped = bytearray(raw)
    flipped[8 + n + (start + end) // 2] ^= 0xFF
    target.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        XRLinearClassifier.load(path, mmap=False)
    loaded = XRLinearClassifier.load(path, mmap=True)
    which = [str(m) for m in _array_files(path)].index(str(target))
    with pytest.raises(ValueError, match="checksum"):
        loaded.models_[which].verify()
    # a flipped index (the last array holds the narrowest ids): both loads reject it
    flipped = bytearray(raw)
    flipped[len(raw) - 5] ^= 0xFF
    target.write_bytes(bytes(flipped))
    for mmap in (False, True):
        with pytest.raises(ValueError):
            XRLinearClassifier.load(path, mmap=mmap)


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


def _tree(path: Path) -> dict[str, bytes | None]:
    """Every entry under ``path`` with the bytes of its regular files (None otherwise)."""
    return {
        str(p.relative_to(path)): p.read_bytes() if p.is_file() and not p.is_fifo() else None
        for p in sorted(path.rglob("*"))
    }


def _only_model_files(path: Path) -> None:
    """``path`` holds the manifest and the estimator directories it names, nothing else."""
    names = json.loads((path / MANIFEST).read_text())["estimators"]
    assert sorted(p.name for p in path.iterdir()) == sorted([MANIFEST, *names])
    for name in names:
        files = sorted(p.name for p in (path / name).iterdir())
        assert files == ["xr_model.json", "xr_model.safetensors"]


def test_save_refuses_a_directory_with_foreign_entries_and_changes_nothing(
    tmp_path: Path, model: XRLinearClassifier
) -> None:
    base = _saved(tmp_path, model)
    est0 = json.loads((base / MANIFEST).read_text())["estimators"][0]
    cases: list[tuple[str, str]] = [
        ("notes.txt", "notes.txt"),  # a file beside a model
        (f"{est0}/keep.txt", "keep.txt"),  # a foreign file inside an estimator
        ("estimator-7/keep.txt", "keep.txt"),  # inside a directory of our naming pattern
        ("data/x.npz", "data"),  # a foreign directory
        ("estimator-3", "estimator-3"),  # a file where our directories go
        (".xmrrs-model.json.tmp-0123", ".xmrrs-model.json.tmp-0123"),  # not our token
    ]
    for i, (extra, named) in enumerate(cases):
        path = tmp_path / f"case{i}"
        shutil.copytree(base, path)
        (path / extra).parent.mkdir(parents=True, exist_ok=True)
        (path / extra).write_text("precious")
        before = _tree(path)
        with pytest.raises(FileExistsError, match=re.escape(named)):
            model.save(path)
        assert _tree(path) == before, extra
    # no manifest at all: a directory of someone else's files
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match=r"keep\.txt"):
        model.save(other)
    assert (other / "keep.txt").read_text() == "x"
    # a file, a FIFO manifest
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        model.save(tmp_path / "file")
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / MANIFEST)
    with pytest.raises(FileExistsError, match=re.escape(MANIFEST)):
        model.save(fifo)
    assert (fifo / MANIFEST).is_fifo()


def test_save_over_old_layout_and_leftovers_keeps_only_the_new_model(
    tmp_path: Path, split: tuple, model: XRLinearClassifier
) -> None:
    _, _, Xte = split
    path = _saved(tmp_path, model)
    # the layout of xmrrs before the token (estimator-0, ...), with n_jobs in the params
    manifest = json.loads((path / MANIFEST).read_text())
    for i, name in enumerate(manifest["estimators"]):
        os.rename(path / name, path / f"estimator-{i}")
    manifest["estimators"] = [f"estimator-{i}" for i in range(len(manifest["estimators"]))]
    manifest["params"]["n_jobs"] = 2
    (path / MANIFEST).write_text(json.dumps(manifest))
    _same(model, XRLinearClassifier.load(path), Xte)
    # leftovers of interrupted saves: a manifest temp file, partial estimator directories,
    # temp files of the core, a half-built new model beside the directory
    token = "0123456789abcdef"
    (path / f".{MANIFEST}.tmp-{token}").write_text("{")
    (path / f"estimator-0-{token}").mkdir()
    (path / f"estimator-0-{token}" / ".xr_model.safetensors.tmp4242").write_bytes(b"x")
    (path / f"estimator-1-{token}").mkdir()
    shutil.copytree(path / "estimator-1", path / "estimator-2")
    new = tmp_path / f".{path.name}.xmrrs-new-{token}"
    shutil.copytree(path, new)
    _same(model, XRLinearClassifier.load(path), Xte)
    model.save(path)
    _only_model_files(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]
    _same(model, XRLinearClassifier.load(path, mmap=True), Xte)


def test_saved_directories_follow_the_umask(tmp_path: Path, model: XRLinearClassifier) -> None:
    old = os.umask(0o022)
    try:
        model.save(tmp_path / "a" / "m")
    finally:
        os.umask(old)
    path = tmp_path / "a" / "m"
    for d in [path, *(p for p in path.iterdir() if p.is_dir())]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, d
    assert stat.S_IMODE((path / MANIFEST).stat().st_mode) == 0o644


def _in_thread(fn: Callable[[], object], timeout: float = 10.0) -> BaseException | None:
    """Run ``fn`` in a daemon thread; the exception it raised (fails if it blocks)."""
    out: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()
            out.append(None)
        except BaseException as e:
            out.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert out, "load blocked"
    return out[0]


def test_a_fifo_manifest_is_an_error_not_a_hang(
    tmp_path: Path, model: XRLinearClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _saved(tmp_path, model)
    (path / MANIFEST).unlink()
    os.mkfifo(path / MANIFEST)
    err = _in_thread(lambda: XRLinearClassifier.load(path))
    assert isinstance(err, ValueError) and "regular file" in str(err)
    # swapped in after the check: the open does not block and fstat catches it
    real_stat = os.stat
    regular = os.stat(__file__)

    def fake_stat(p: object, *args: object, **kwargs: object) -> os.stat_result:
        return regular if str(p) == str(path / MANIFEST) else real_stat(p, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", fake_stat)
    err = _in_thread(lambda: XRLinearClassifier.load(path))
    monkeypatch.undo()
    assert isinstance(err, ValueError) and "regular file" in str(err)


def test_loaded_parameters_are_validated(tmp_path: Path, model: XRLinearClassifier) -> None:
    path = _saved(tmp_path, model)
    mpath = path / MANIFEST
    good = json.loads(mpath.read_text())
    bad_params = [
        {"normalize": "no"},
        {"Cp": "0.8"},
        {"n_estimators": 2.5},
        {"top_k": True},
        {"beam_size": 0},
        {"branching": [2, 1]},
        {"branching": "16"},
        {"loss": ["hinge"]},
        {"random_state": "7"},
        {"post_processor": 3},
        {"representation": 3},
        {"indexer": {"a": 1}},
    ]
    for bad in bad_params:
        mpath.write_text(json.dumps({**good, "params": {**good["params"], **bad}}))
        with pytest.raises(ValueError, match=re.escape(str(mpath))):
            XRLinearClassifier.load(path)
    for key, value in [
        ("n_features_in", str(good["n_features_in"])),
        ("params", [["Cp", 1.0]]),
        ("feature_names_in", ["a"]),
        ("classes", {"kind": "range", "n": "300"}),
        ("estimators", [1]),
    ]:
        mpath.write_text(json.dumps({**good, key: value}))
        with pytest.raises(ValueError, match="corrupt"):
            XRLinearClassifier.load(path)
    est = good["estimators"][0]
    mpath.write_text(json.dumps({**good, "estimators": [MANIFEST]}))
    with pytest.raises(ValueError, match="not a directory"):
        XRLinearClassifier.load(path)
    mpath.write_text(json.dumps({**good, "estimators": [est, "estimator-9"]}))
    with pytest.raises(ValueError, match="missing"):
        XRLinearClassifier.load(path)


def test_n_jobs_comes_from_the_caller_not_the_file(
    tmp_path: Path, model: XRLinearClassifier
) -> None:
    path = _saved(tmp_path, model)
    manifest = json.loads((path / MANIFEST).read_text())
    assert "n_jobs" not in manifest["params"]
    manifest["params"]["n_jobs"] = 4096
    (path / MANIFEST).write_text(json.dumps(manifest))
    assert XRLinearClassifier.load(path).n_jobs is None
    assert XRLinearClassifier.load(path, n_jobs=1, mmap=True).n_jobs == 1
    manifest["params"]["n_jobs"] = "all of them"
    (path / MANIFEST).write_text(json.dumps(manifest))
    assert XRLinearClassifier.load(path, n_jobs=2).n_jobs == 2


def test_extras_round_trip_and_are_checked_before_anything_is_written(
    tmp_path: Path, split: tuple, model: XRLinearClassifier
) -> None:
    from xmrrs.modelfile import Extras, load_with_extras, read_extras, save

    _, _, Xte = split
    path = _saved(tmp_path, model)
    _, found = load_with_extras(XRLinearClassifier, path)
    assert found == Extras() and read_extras(path) == Extras()  # a model without extras

    def writer(d: Path) -> None:
        (d / "part.json").write_text('{"a": 1}')
        (d / "w.npy").write_bytes(b"")

    save(model, path, extras={"side": writer}, extras_json={"meta": {"k": [1, 2.5, None]}})
    loaded, found = load_with_extras(XRLinearClassifier, path, mmap=True)
    _same(model, loaded, Xte)
    assert found.json == {"meta": {"k": [1, 2.5, None]}}
    assert list(found.dirs) == ["side"] and found.dirs["side"].parent == path
    assert sorted(p.name for p in found.dirs["side"].iterdir()) == ["part.json", "w.npy"]
    assert read_extras(path) == found
    _same(model, XRLinearClassifier.load(path), Xte)  # load ignores the extras
    before = _tree(path)

    def foreign(d: Path) -> None:
        (d / "notes.txt").write_text("x")

    def failing(d: Path) -> None:
        (d / "part.json").write_text("{")
        raise OSError("disk full")

    bad: list[tuple[dict, type, str]] = [
        ({"extras": {"Bad-Name": writer}}, ValueError, "bad extra name"),
        ({"extras": {"estimator": writer}}, ValueError, "bad extra name"),
        ({"extras_json": {"": 1}}, ValueError, "bad extra name"),
        ({"extras": {"a": writer}, "extras_json": {"a": 1}}, ValueError, "both"),
        ({"extras": {"a": "not callable"}}, TypeError, "callable"),
        ({"extras_json": {"a": float("nan")}}, ValueError, "not plain JSON"),
        ({"extras_json": {"a": object()}}, ValueError, "not plain JSON"),
        ({"extras": {"a": foreign}}, ValueError, r"notes\.txt"),
        ({"extras": {"a": failing}}, OSError, "disk full"),
    ]
    for kwargs, exc, match in bad:
        with pytest.raises(exc, match=match):
            save(model, path, **kwargs)
        assert _tree(path) == before, kwargs
        new = tmp_path / "new"
        with pytest.raises(exc, match=match):
            save(model, new, **kwargs)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"], kwargs
    # saving without extras drops the old ones
    save(model, path)
    assert read_extras(path) == Extras()
    _only_model_files(path)


def test_damaged_half_precision_dense_weights_are_rejected(tmp_path: Path, split: tuple) -> None:
    """A HybridMatrix model stores its dense weights as float16 with a power-of-two scale
    per child (format version 3). A scale byte out of range is a ValueError at load, mapped
    or not; weights flipped to infinity are refused by the checksum, and by ``verify`` on a
    mapped model, which still answers with finite scores."""
    from xmrrs.hybrid import HybridMatrix

    Xtr, Ytr, Xte = split
    rng = np.random.default_rng(0)
    H = HybridMatrix(Xtr, rng.standard_normal((Xtr.shape[0], 8)).astype(np.float32))
    Hte = HybridMatrix(Xte, rng.standard_normal((Xte.shape[0], 8)).astype(np.float32))
    clf = XRLinearClassifier(n_jobs=1, max_leaf_size=20, n_estimators=1).fit(H, Ytr)
    path = _saved(tmp_path, clf)
    (target,) = [p for p in _array_files(path) if p.suffix == ".safetensors"]
    assert json.loads((target.parent / "xr_model.json").read_text())["version"] == 3
    raw = target.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert header["layer1.dense_w"]["dtype"] == "F16"
    start, _ = header["layer1.dense_unscale"]["data_offsets"]
    bad = bytearray(raw)
    bad[8 + n + start] = 127  # 2^127: outside the range a row's scale may take
    target.write_bytes(bytes(bad))
    for mmap in (False, True):
        with pytest.raises(ValueError):
            XRLinearClassifier.load(path, mmap=mmap)
    start, end = header["layer1.dense_w"]["data_offsets"]
    bad = bytearray(raw)
    bad[8 + n + start : 8 + n + end] = b"\x00\x7c" * ((end - start) // 2)  # +infinity
    target.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="checksum"):
        XRLinearClassifier.load(path, mmap=False)
    mapped = XRLinearClassifier.load(path, mmap=True)
    with pytest.raises(ValueError, match="checksum"):
        mapped.models_[0].verify()
    ids, scores = mapped.predict_topk(Hte, k=3)
    assert np.isfinite(scores).all() and ids.shape == (Xte.shape[0], 3)
