"""Guarantees of the Rust core under attack: mapped models answer validly or not at all,
input-sized allocations fail as MemoryError (never an abort), only regular files are read,
duplicates do not skip normalisation, and thread pools stay bounded.

Anything that could abort or hang the interpreter runs in a child process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from xmrrs import XRLinearClassifier
from xmrrs.datasets import make_xmc
from xmrrs.modelfile import MANIFEST


def _child(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a fresh interpreter; a signal death shows as a negative returncode."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def data() -> tuple[sp.csr_matrix, sp.csr_matrix]:
    return make_xmc(600, 400, 120, random_state=5)


@pytest.fixture(scope="module")
def three_trees(data: tuple) -> XRLinearClassifier:
    X, Y = data
    return XRLinearClassifier(n_estimators=3, max_leaf_size=10, n_jobs=1).fit(X, Y)


def _estimator_dirs(path: Path) -> list[Path]:
    names = json.loads((path / MANIFEST).read_text())["estimators"]
    return [path / n for n in names]


def _rewrite_array(est_dir: Path, name: str, edit: object) -> None:
    """Applies ``edit(array)`` to array ``name`` of an estimator's array file, in place, and
    fixes the manifest's size and CRC so that only the structure checks can object."""
    man_path = est_dir / "xr_model.json"
    man = json.loads(man_path.read_text())
    data_path = est_dir / man["data_file"]
    raw = bytearray(data_path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    dtype = {"U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64}.get(
        header[name]["dtype"], np.float32
    )
    start, end = (8 + n + o for o in header[name]["data_offsets"])
    arr = np.frombuffer(bytes(raw[start:end]), dtype=dtype).copy()
    edit(arr)  # type: ignore[operator]
    raw[start:end] = arr.tobytes()
    data_path.write_bytes(bytes(raw))
    man["checksum"] = f"crc32:{zlib.crc32(bytes(raw)):08x}"
    man_path.write_text(json.dumps(man))


def _flip_label_bit(a: np.ndarray) -> None:
    a[3] ^= 1 << 28


@pytest.mark.parametrize("tree", [0, 2])
def test_a_corrupt_label_array_of_any_estimator_is_rejected_by_mapped_loads(
    tmp_path: Path, three_trees: XRLinearClassifier, tree: int
) -> None:
    three_trees.save(tmp_path / "m")
    _rewrite_array(_estimator_dirs(tmp_path / "m")[tree], "labels", _flip_label_bit)
    for mmap in (False, True):
        with pytest.raises(ValueError, match="permutation"):
            XRLinearClassifier.load(tmp_path / "m", mmap=mmap)


@pytest.mark.parametrize(
    ("array", "edit"),
    [
        ("layer1.row_ptr", lambda a: a.__setitem__(slice(1, None), a[1:] + 7)),
        ("layer1.row_feat", lambda a: a.__setitem__(slice(None), a[::-1].copy())),
        ("layer1.chunk_rows", lambda a: a.__setitem__(-1, a[-1] + 1)),
        ("layer1.bkt", lambda a: a.__setitem__(slice(None), a + 1)),
        ("layer0.child_ptr", lambda a: a.__setitem__(-1, a[-1] + 1)),
    ],
)
def test_structural_corruption_with_a_valid_checksum_fails_a_mapped_load(
    tmp_path: Path, three_trees: XRLinearClassifier, array: str, edit: object
) -> None:
    three_trees.save(tmp_path / "m")
    _rewrite_array(_estimator_dirs(tmp_path / "m")[2], array, edit)
    for mmap in (False, True):
        with pytest.raises(ValueError):
            XRLinearClassifier.load(tmp_path / "m", mmap=mmap)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 3e38])
def test_mapped_models_with_bad_weights_answer_with_finite_scores(
    tmp_path: Path, data: tuple, three_trees: XRLinearClassifier, bad: float
) -> None:
    X, _ = data
    three_trees.save(tmp_path / "m")
    for d in _estimator_dirs(tmp_path / "m"):
        for name in ("layer0.vals", "layer1.vals", "layer0.bias"):
            if name.endswith("bias") and not np.isfinite(bad):
                continue  # biases are checked at every load
            _rewrite_array(d, name, lambda a: a.__setitem__(slice(None, None, 3), bad))
    with pytest.raises(ValueError, match="non-finite" if not np.isfinite(bad) else "weights"):
        XRLinearClassifier.load(tmp_path / "m", mmap=False)  # zeros turned non-zero
    m = XRLinearClassifier.load(tmp_path / "m", mmap=True)
    with pytest.raises(ValueError, match="non-finite" if not np.isfinite(bad) else "weights"):
        m.models_[0].verify()
    for pp in ("l3-hinge", "noop", "log-sigmoid", "log-l2-hinge"):
        m.set_params(post_processor=pp)
        for rows in (X[:1], X[:100]):
            ids, scores = m.predict_topk(rows, k=20, beam_size=4)
            assert ((ids >= -1) & (ids < 120)).all()
            assert np.isfinite(scores[ids >= 0]).all(), pp


def test_a_fifo_in_place_of_an_array_file_is_an_error_not_a_hang(
    tmp_path: Path, three_trees: XRLinearClassifier
) -> None:
    three_trees.save(tmp_path / "m")
    d = _estimator_dirs(tmp_path / "m")[1]
    data_file = json.loads((d / "xr_model.json").read_text())["data_file"]
    (d / data_file).unlink()
    os.mkfifo(d / data_file)
    r = _child(
        f"""
        from xmrrs import XRLinearClassifier
        for mmap in (False, True):
            try:
                XRLinearClassifier.load({str(tmp_path / "m")!r}, mmap=mmap)
            except ValueError as e:
                assert "regular file" in str(e), e
            else:
                raise SystemExit("loaded")
        """,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr


def test_an_array_file_larger_than_its_manifest_says_is_not_read(
    tmp_path: Path, three_trees: XRLinearClassifier
) -> None:
    three_trees.save(tmp_path / "m")
    d = _estimator_dirs(tmp_path / "m")[0]
    data_file = json.loads((d / "xr_model.json").read_text())["data_file"]
    os.truncate(d / data_file, 8 << 30)  # a sparse 8 GiB file: no disk used
    # under a 2 GiB address space, reading the file before checking its size would abort
    r = _child(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from xmrrs import XRLinearClassifier
        for mmap in (False, True):
            try:
                XRLinearClassifier.load({str(tmp_path / "m")!r}, mmap=mmap)
            except ValueError as e:
                assert "the manifest says" in str(e), e
            else:
                raise SystemExit("loaded")
        """
    )
    assert r.returncode == 0, r.stderr


def test_huge_sizes_become_memory_errors_under_an_address_space_limit() -> None:
    r = _child(
        """
        import resource
        import numpy as np, scipy.sparse as sp
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from xmrrs import XRLinearClassifier, _xmrrs
        from xmrrs import sparse as xs
        from xmrrs.datasets import make_xmc
        from xmrrs._validation import csr_parts

        def memory_error(f):
            try:
                f()
            except MemoryError as e:
                print("ok", e)
            else:
                raise SystemExit("no MemoryError")

        wide = sp.csr_matrix(
            (np.ones(1, np.float32), np.array([0]), np.array([0, 1])), shape=(1, 2**31 + 1)
        )
        memory_error(lambda: xs.transpose(wide))
        memory_error(lambda: xs.matmul(wide.T.tocsr(), wide))
        X, _ = make_xmc(50, 100, 10, random_state=0)
        Y = sp.csr_matrix(
            (np.ones(3), np.array([0, 5, 2**31 - 1]), np.array([0, 1, 2] + [3] * 48)),
            shape=(50, 2**31),
        )
        memory_error(lambda: XRLinearClassifier(n_estimators=1).fit(X, Y))
        tall = sp.csr_matrix((6_000_000, 1000), dtype=np.float32)
        memory_error(lambda: _xmrrs.csr_topk(csr_parts(tall), 1000, 1))
        """,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok ") == 4


def test_direct_core_calls_cap_k_and_beam() -> None:
    r = _child(
        """
        from xmrrs import XRLinearClassifier, _xmrrs
        from xmrrs._validation import csr_parts
        from xmrrs.datasets import make_xmc
        X, Y = make_xmc(300, 400, 120, random_state=5)
        clf = XRLinearClassifier(n_estimators=2, max_leaf_size=10, n_jobs=1).fit(X, Y)
        parts = csr_parts(X[:40])
        ids, _ = _xmrrs.csr_topk(parts, 2**63, 1)
        assert ids.shape == (40, X.shape[1]), ids.shape
        m = clf.models_[0]
        ids, _ = m.predict_topk(parts, 10**12, 10**12, "l3-hinge", 1, True)
        assert ids.shape == (40, 120), ids.shape
        one, _ = m.predict_topk(csr_parts(X[:1]), 10**12, 10**12, "l3-hinge", 1, True)
        assert (one == ids[:1]).all()
        ids, _ = _xmrrs.xr_predict_ensemble(clf.models_, parts, 10**12, 2**40, "l3-hinge", 1, True)
        assert ids.shape == (40, 120), ids.shape
        """
    )
    assert r.returncode == 0, r.stderr


def test_huge_prediction_settings_in_a_manifest_are_capped(
    tmp_path: Path, data: tuple, three_trees: XRLinearClassifier
) -> None:
    X, _ = data
    three_trees.save(tmp_path / "m")
    man = json.loads((tmp_path / "m" / MANIFEST).read_text())
    man["params"].update(top_k=10**12, beam_size=10**12)
    (tmp_path / "m" / MANIFEST).write_text(json.dumps(man))
    m = XRLinearClassifier.load(tmp_path / "m", mmap=True)
    ids, _ = m.predict_topk(X[:30])
    assert ids.shape == (30, 120)
    full = three_trees.predict_topk(X[:30], k=120, beam_size=120)
    np.testing.assert_array_equal(ids, full[0])


def test_fit_normalises_rows_whose_duplicates_sum_to_a_non_unit_norm(data: tuple) -> None:
    X, Y = data
    X = X[:300].astype(np.float32)
    # every stored value halved and stored twice: the stored entries have unit norm only
    # before the duplicates are summed
    X.sum_duplicates()
    scale = np.float32(1 / np.sqrt(2))
    dup = sp.csr_matrix(
        (np.repeat(X.data * scale, 2), np.repeat(X.indices, 2), X.indptr * 2), shape=X.shape
    )
    dup.has_canonical_format = False
    assert not dup.has_canonical_format
    summed = dup.copy()
    summed.sum_duplicates()
    kw = dict(n_estimators=1, max_leaf_size=10, n_jobs=1)
    a = XRLinearClassifier(**kw).fit(dup, Y[:300])
    b = XRLinearClassifier(**kw).fit(summed, Y[:300])
    for u, v in zip(a.predict_topk(X[:50]), b.predict_topk(X[:50]), strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_distinct_n_jobs_do_not_accumulate_thread_pools() -> None:
    r = _child(
        """
        import os, time
        import numpy as np, scipy.sparse as sp
        from xmrrs import sparse as xs
        a = sp.random(50, 40, density=0.2, format="csr", dtype=np.float32, random_state=0)
        for n_jobs in range(3, 40):
            xs.transpose(a, n_jobs=n_jobs)
        time.sleep(1)  # the threads of dropped pools exit asynchronously
        print(len(os.listdir("/proc/self/task")))
        """
    )
    assert r.returncode == 0, r.stderr
    # at most 4 pools are kept (36+37+38+39 threads); each n_jobs kept its own pool before
    # (741 threads)
    assert int(r.stdout) <= 36 + 37 + 38 + 39 + 16, r.stdout
