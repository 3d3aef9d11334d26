"""Saving a model is crash-safe: a process killed at any step of ``save`` leaves the path with
either the complete old model or the complete new one, and the next save cleans up."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from xmrrs import XRLinearClassifier, modelfile
from xmrrs.datasets import make_xmc
from xmrrs.modelfile import MANIFEST

pytestmark = pytest.mark.skipif(os.name != "posix", reason="kills child processes")

# The child saves the model of directory SRC to DST. It imports only numpy and the core (no
# scikit-learn: a short start-up), builds a stand-in estimator, and with N > 0 wraps every
# file-system call that the save makes (and the core's per-estimator writer) with a counter
# that kills the process at call number N; with N == 0 it says "ready" and saves unhindered.
# With a TAG, the save also writes an extra directory and an inline JSON extra holding TAG.
CHILD = r"""
import builtins, json, os, shutil, sys
from types import SimpleNamespace

from xmrrs import _xmrrs, modelfile

src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tag = sys.argv[4] if len(sys.argv) > 4 else None
with open(os.path.join(src, modelfile.MANIFEST), encoding="utf-8") as f:
    manifest = json.load(f)
models = [_xmrrs.XrModel.load(os.path.join(src, e)) for e in manifest["estimators"]]
calls = 0


def hit():
    global calls
    calls += 1
    if calls == n:
        os._exit(137)


def wrap(obj, name, counts=lambda *a, **k: True):
    real = getattr(obj, name)

    def f(*args, **kwargs):
        if counts(*args, **kwargs):
            hit()
        return real(*args, **kwargs)

    setattr(obj, name, f)


class Writer:
    def __init__(self, model):
        self.model = model

    def save(self, path):
        hit()
        self.model.save(path)


def writes(file, mode="r", *args, **kwargs):
    return any(c in mode for c in "wxa+")


def creates(path, flags, *args, **kwargs):
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))


est = SimpleNamespace(
    models_=[Writer(m) for m in models],
    classes_=modelfile._classes_from_json(manifest["classes"], src),
    n_features_in_=manifest["n_features_in"],
    get_params=lambda deep=False: dict(manifest["params"]),
)
if n > 0:
    for name in ("replace", "rename", "fsync", "mkdir", "makedirs", "unlink", "remove", "rmdir"):
        wrap(os, name)
    wrap(shutil, "rmtree")
    wrap(builtins, "open", writes)
    wrap(os, "open", creates)
else:
    print("ready", flush=True)


def side_writer(d):
    with open(os.path.join(d, "side.json"), "w", encoding="utf-8") as f:
        json.dump({"tag": tag}, f)
        f.flush()
        os.fsync(f.fileno())


extras = {"extras": {"side": side_writer}, "extras_json": {"tag": tag}} if tag else {}
modelfile.save(est, dst, **extras)
print("calls", calls, flush=True)
"""


@pytest.fixture(scope="module")
def data() -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    X, Y = make_xmc(1500, 3000, 300, random_state=5)
    return X[:1200], Y[:1200], X[1200:]


@pytest.fixture(scope="module")
def models(data: tuple) -> tuple[XRLinearClassifier, XRLinearClassifier]:
    """The old model and the new one (different trees: different predictions)."""
    Xtr, Ytr, _ = data
    old = XRLinearClassifier(n_jobs=2, max_leaf_size=20, n_estimators=2).fit(Xtr, Ytr)
    new = XRLinearClassifier(n_jobs=2, max_leaf_size=30, n_estimators=2, random_state=1)
    return old, new.fit(Xtr, Ytr)


def _predictions(clf: XRLinearClassifier, X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    return clf.predict_topk(X, k=5)


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


def _state(path: Path, X: sp.csr_matrix, expected: dict[str, tuple], extras: bool = False) -> str:
    """Which of ``expected`` the model at ``path`` predicts like, loaded both ways (with
    ``extras``: and whose tag both of its extras hold)."""
    if "none" in expected and not os.path.lexists(path / MANIFEST):
        with pytest.raises(FileNotFoundError):
            XRLinearClassifier.load(path)
        return "none"
    seen = set()
    for mmap in (False, True):
        est, found = modelfile.load_with_extras(XRLinearClassifier, path, mmap=mmap)
        got = _predictions(est, X)
        names = {name for name, pred in expected.items() if pred != "none" and _same(got, pred)}
        if extras:
            side = json.loads((found.dirs["side"] / "side.json").read_text())
            assert names == {side["tag"]} == {found.json["tag"]}, (names, side, found.json)
        else:
            assert not found.dirs and not found.json
        seen |= names
    assert len(seen) == 1, f"{path} predicts like {sorted(seen) or 'neither model'}"
    return seen.pop()


def _save(est: XRLinearClassifier, path: Path, tag: str | None) -> None:
    """Save as the child does (with ``tag``: with the two extras)."""

    def side_writer(d: Path) -> None:
        (d / "side.json").write_text(json.dumps({"tag": tag}))

    if tag is None:
        modelfile.save(est, path)
    else:
        modelfile.save(est, path, extras={"side": side_writer}, extras_json={"tag": tag})


def _only_model_files(work: Path, path: Path) -> None:
    """``work`` holds only ``path``, which holds only the manifest, its estimators and its
    extra directories."""
    assert sorted(p.name for p in work.iterdir()) == [path.name]
    manifest = json.loads((path / MANIFEST).read_text())
    names = manifest["estimators"]
    extras = list(manifest.get("extras", {}).values())
    assert sorted(p.name for p in path.iterdir()) == sorted([MANIFEST, *names, *extras])
    for name in names:
        files = sorted(p.name for p in (path / name).iterdir())
        assert files == ["xr_model.json", "xr_model.safetensors"]
    for name in extras:
        assert [p.name for p in (path / name).iterdir()] == ["side.json"]


def _child(tmp_path: Path, src: Path, dst: Path, n: int, tag: str | None = None) -> list[str]:
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    return [sys.executable, str(script), str(src), str(dst), str(n), *([tag] if tag else [])]


@pytest.mark.parametrize("scenario", ["replace", "new", "replace-with-extras"])
def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_model(
    tmp_path: Path, data: tuple, models: tuple, scenario: str
) -> None:
    _, _, X = data
    old, new = models
    extras = scenario.endswith("-with-extras")
    replace = scenario.startswith("replace")
    expected: dict[str, tuple | str] = {"new": _predictions(new, X)}
    if replace:
        expected["old"] = _predictions(old, X)
        assert not _same(expected["old"], expected["new"])  # type: ignore[arg-type]
        _save(old, tmp_path / "old", "old" if extras else None)
    else:
        expected["none"] = "none"
    new.save(tmp_path / "src")
    states = []
    for n in range(1, 200):
        work = tmp_path / f"run{n}"
        work.mkdir()
        path = work / "m"
        if replace:
            shutil.copytree(tmp_path / "old", path)
        r = subprocess.run(
            _child(tmp_path, tmp_path / "src", path, n, "new" if extras else None),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if r.returncode == 0:  # the save made fewer than n calls: it completed
            assert f"calls {n - 1}" in r.stdout, r.stdout
            assert _state(path, X, expected, extras) == "new"  # type: ignore[arg-type]
            _only_model_files(work, path)
            break
        assert r.returncode == 137, r.stderr
        states.append(_state(path, X, expected, extras))  # type: ignore[arg-type]
        _save(new, path, "new" if extras else None)  # succeeds and removes every leftover
        _only_model_files(work, path)
        assert _state(path, X, expected, extras) == "new"  # type: ignore[arg-type]
        shutil.rmtree(work)
    else:
        pytest.fail("the save never completed")
    before = "old" if replace else "none"
    # killed before the commit: the old state; after it (while cleaning up): the new model
    assert states[0] == before and states[-1] == "new", states
    assert states == sorted(states, key=lambda s: s == "new"), states  # one switch, for good


def test_a_save_killed_by_sigkill_at_random_moments(
    tmp_path: Path, data: tuple, models: tuple
) -> None:
    Xtr, Ytr, X = data
    old, _ = models
    # a larger model (all weights kept) takes longer to write
    big = XRLinearClassifier(n_jobs=2, max_leaf_size=20, n_estimators=3, threshold=0.0)
    big.fit(Xtr, Ytr)
    expected = {"old": _predictions(old, X), "new": _predictions(big, X)}
    old.save(tmp_path / "old")
    big.save(tmp_path / "src")
    t0 = time.perf_counter()
    big.save(tmp_path / "timing")
    span = 2.0 * (time.perf_counter() - t0) + 0.005
    rng = random.Random(0)
    states = []
    for i in range(8):
        work = tmp_path / f"run{i}"
        work.mkdir()
        path = work / "m"
        shutil.copytree(tmp_path / "old", path)
        with subprocess.Popen(
            _child(tmp_path, tmp_path / "src", path, 0),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.0, span))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL)
        states.append(_state(path, X, expected))
        big.save(path)
        _only_model_files(work, path)
        shutil.rmtree(work)
    assert set(states) <= {"old", "new"}
