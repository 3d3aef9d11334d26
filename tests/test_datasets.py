"""XC / LIBSVM / npz IO: round trips, agreement with scikit-learn, and errors with line numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_svmlight_file

from xmrrs import datasets as xd

SET = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def xy(draw: st.DrawFn) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    n = draw(st.integers(0, 15))
    d = draw(st.integers(1, 20))
    L = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    X = sp.random(
        n, d, density=draw(st.floats(0, 0.6)), format="csr", dtype=np.float32, random_state=rng
    )
    X.data = (X.data * rng.choice([1e-6, 1.0, 1e5], size=X.nnz)).astype(np.float32) * rng.choice(
        [-1, 1], size=X.nnz
    ).astype(np.float32)
    Y = sp.random(
        n, L, density=draw(st.floats(0, 0.5)), format="csr", dtype=np.float32, random_state=rng
    )
    Y.data[:] = 1
    return X, Y


def same(a: sp.spmatrix, b: sp.spmatrix) -> None:
    assert a.shape == b.shape
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    a.sort_indices()
    b.sort_indices()
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data.astype(np.float32), b.data.astype(np.float32))


@SET
@given(xy())
def test_xc_round_trip_is_exact(tmp_path: Path, data: tuple[sp.csr_matrix, sp.csr_matrix]) -> None:
    X, Y = data
    p = tmp_path / "d.txt"
    xd.dump_xc(p, X, Y)
    X2, Y2 = xd.load_xc(p)
    assert X2.dtype == np.float32 and Y2.dtype == np.float32
    same(X2, X)
    same(Y2, Y)


@SET
@given(xy())
def test_libsvm_matches_scikit_learn(
    tmp_path: Path, data: tuple[sp.csr_matrix, sp.csr_matrix]
) -> None:
    X, Y = data
    if X.shape[0] == 0:
        return
    p = tmp_path / "d.svm"
    xd.dump_libsvm(p, X, Y)
    X2, Y2 = xd.load_libsvm(p, zero_based=True, n_features=X.shape[1], n_labels=Y.shape[1])
    Xs, ys = load_svmlight_file(str(p), multilabel=True, zero_based=True, n_features=X.shape[1])
    same(X2, Xs)
    got = [tuple(Y2.indices[Y2.indptr[i] : Y2.indptr[i + 1]].tolist()) for i in range(Y2.shape[0])]
    assert got == [tuple(int(v) for v in row) for row in ys]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "f.txt"
    p.write_text(text)
    return p


def test_rows_without_labels_and_shapes(tmp_path: Path) -> None:
    X, Y = xd.load_xc(write(tmp_path, "3 4 5\n0,4 1:0.5 3:2\n 0:1\n2\n"))
    assert X.shape == (3, 4) and Y.shape == (3, 5)
    np.testing.assert_array_equal(Y.toarray(), [[1, 0, 0, 0, 1], [0] * 5, [0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(X.toarray(), [[0, 0.5, 0, 2], [1, 0, 0, 0], [0] * 4])


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("2 5 4\n0 1:0.5\n1 2:abc\n", 3, "malformed feature"),
        ("2 5 4\n0 1:0.5\n1 7:1\n", 3, "out of range"),
        ("2 5 4\n0 1:0.5\n4 1:1\n", 3, "label id 4"),
        ("3 5 4\n0 1:0.5\n1 2:1\n", 4, "truncated"),
        ("1 5 4\n0 1:0.5\n1 2:1\n", 3, "more lines"),
        ("x 5 4\n0 1:0.5\n", 1, "header"),
        ("1 5 4\n0 1:0.5 1:2\n", 2, "twice"),
        ("1 5 4\n0 1:inf\n", 2, "non-finite"),
        ("1 5 4\n0 2\n", 2, "malformed feature"),
        ("1 5 4\na,b 1:1\n", 2, "malformed label"),
    ],
)
def test_bad_files_name_the_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    with pytest.raises(ValueError, match=rf"f\.txt: line {line}: .*{what}"):
        xd.load_xc(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        xd.load_xc(tmp_path / "nope.txt")


def test_libsvm_zero_based_rules(tmp_path: Path) -> None:
    p = write(tmp_path, "1 1:1 3:2\n\n# a comment\n0,1 2:1\n")
    X, Y = xd.load_libsvm(p)
    assert X.shape == (2, 3) and Y.shape == (2, 2)
    np.testing.assert_array_equal(X.toarray(), [[1, 0, 2], [0, 1, 0]])
    X, _ = xd.load_libsvm(p, zero_based=True)
    assert X.shape == (2, 4)
    with pytest.raises(ValueError, match="1-based"):
        xd.load_libsvm(write(tmp_path, "1 0:1\n"), zero_based=False)


def test_dump_is_atomic_on_bad_input(tmp_path: Path) -> None:
    p = tmp_path / "keep.txt"
    p.write_text("precious")
    X = sp.csr_matrix(np.ones((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="rows"):
        xd.dump_xc(p, X, sp.csr_matrix(np.ones((3, 2), dtype=np.float32)))
    assert p.read_text() == "precious"


def test_npz_pair(tmp_path: Path) -> None:
    X = sp.csr_matrix(np.array([[0, 1.5], [2, 0]], dtype=np.float64))
    Y = sp.csr_matrix(np.array([[1, 0, 3], [0, 0, 0]]))
    xd.save_npz(tmp_path / "X.npz", tmp_path / "Y.npz", X, Y)
    X2, Y2 = xd.load_npz(tmp_path / "X.npz", tmp_path / "Y.npz")
    assert X2.dtype == np.float32 and Y2.dtype == np.float32
    np.testing.assert_array_equal(X2.toarray(), X.toarray())
    np.testing.assert_array_equal(Y2.toarray(), [[1, 0, 1], [0, 0, 0]])
    xd.save_npz(tmp_path / "X.npz", tmp_path / "Y.npz", X, Y[:1])
    with pytest.raises(ValueError, match="rows"):
        xd.load_npz(tmp_path / "X.npz", tmp_path / "Y.npz")


def test_load_split(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("1 3 2\n1 0:1\n")
    (tmp_path / "test.txt").write_text("1 3 2\n0 2:1\n")
    (Xtr, Ytr), (Xte, Yte) = xd.load_split(tmp_path)
    assert Xtr.shape == Xte.shape == (1, 3)
    assert Ytr.indices.tolist() == [1] and Yte.indices.tolist() == [0]


def test_corrupt_sparse_npz_files_fail_cleanly(tmp_path: Path) -> None:
    """``read_sparse_npz`` (and ``load_npz``, the CLI, distributed shards): a corrupt archive
    is a ValueError naming the file, whatever zipfile or numpy raise (BadZipFile,
    NotImplementedError, RuntimeError, tokenize errors...), and a member whose header
    promises more than the archive holds is refused before anything is allocated."""
    import io
    import random
    import zipfile

    from xmrrs.datasets import read_sparse_npz

    X, _ = xd.make_xmc(200, 100, 20, random_state=0)
    for compressed in (False, True):
        sp.save_npz(tmp_path / "x.npz", X, compressed=compressed)
        assert (read_sparse_npz(tmp_path / "x.npz") != X).nnz == 0
        good = (tmp_path / "x.npz").read_bytes()
        rng = random.Random(int(compressed))
        refused = 0
        for _ in range(600):
            b = bytearray(good)
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            (tmp_path / "bad.npz").write_bytes(bytes(b))
            try:
                read_sparse_npz(tmp_path / "bad.npz")
            except ValueError as e:
                assert "bad.npz: not a readable scipy .npz file" in str(e)
                refused += 1
        assert refused > 500
    with zipfile.ZipFile(tmp_path / "huge.npz", "w", zipfile.ZIP_DEFLATED) as z:
        for name, arr in np.load(tmp_path / "x.npz").items():
            h = io.BytesIO()
            if name == "data":  # a header promising 4 TB, then 64 bytes
                header = {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
                np.lib.format.write_array_header_1_0(h, header)
                h.write(b"\0" * 64)
            else:
                np.lib.format.write_array(h, arr)
            z.writestr(name + ".npy", h.getvalue())
    with pytest.raises(ValueError, match="promises 4000000000000 bytes"):
        read_sparse_npz(tmp_path / "huge.npz")
    with pytest.raises(FileNotFoundError):
        read_sparse_npz(tmp_path / "missing.npz")
