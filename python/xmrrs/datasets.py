"""Data sets: the standard XMC file formats and the built-in synthetic generator.

- :func:`load_xc` / :func:`dump_xc`: the Extreme Classification Repository text format
  (header ``n_samples n_features n_labels``, lines ``l1,l2 f:v f:v``, 0-based ids, a sample
  without labels starts with a space), parsed in parallel by the Rust core.
- :func:`load_libsvm` / :func:`dump_libsvm`: LIBSVM multilabel text (no header).
- :func:`load_npz` / :func:`save_npz`: a pair of scipy ``.npz`` files (one:
  :func:`read_sparse_npz`).
- :func:`load_split`: ``train.txt`` and ``test.txt`` of a data folder.
- :func:`make_xmc`: a seeded synthetic XMC data set.

Every loader returns ``(X, Y)``: canonical CSR float32 matrices, ``Y`` a 0/1 indicator.
Malformed files raise ``ValueError`` naming the file and the 1-based line number.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from xmrrs import _xmrrs
from xmrrs._synthetic import make_xmc
from xmrrs._validation import csr_parts, to_scipy

__all__ = [
    "dump_libsvm",
    "dump_xc",
    "load_libsvm",
    "load_npz",
    "load_split",
    "load_xc",
    "make_xmc",
    "read_sparse_npz",
    "save_npz",
]

PathLike = str | os.PathLike[str]
Pair = tuple[sp.csr_matrix, sp.csr_matrix]


def load_xc(path: PathLike, *, n_jobs: int | None = None) -> Pair:
    """Read an Extreme Classification Repository text file.

    Parameters
    ----------
    path : str or path-like
        The file; the header gives the shapes, and the row count is checked against it.
    n_jobs : int, optional
        Threads for parsing (None: all cores).

    Returns
    -------
    X : csr_matrix of float32, shape (n_samples, n_features)
    Y : csr_matrix of float32, shape (n_samples, n_labels)
    """
    x, y = _xmrrs.read_xc(os.fspath(path), True, None, None, None, n_jobs)
    return to_scipy(x), to_scipy(y)


def load_libsvm(
    path: PathLike,
    *,
    zero_based: bool | Literal["auto"] = "auto",
    n_features: int | None = None,
    n_labels: int | None = None,
    n_jobs: int | None = None,
) -> Pair:
    """Read a LIBSVM multilabel text file (``l1,l2 f:v ...`` per line, no header).

    ``zero_based="auto"`` treats feature ids as 1-based unless some id is 0 (the rule of
    scikit-learn's ``load_svmlight_file``). Label ids are taken as given (0-based). Blank
    lines and ``#`` comments are skipped. ``n_features``/``n_labels`` default to the largest
    id seen plus one.
    """
    zb = None if zero_based == "auto" else bool(zero_based)
    x, y = _xmrrs.read_xc(os.fspath(path), False, zb, n_features, n_labels, n_jobs)
    return to_scipy(x), to_scipy(y)


def dump_xc(path: PathLike, X: Any, Y: Any, *, n_jobs: int | None = None) -> None:
    """Write ``X`` and ``Y`` in the XC format; values round-trip exactly as float32.

    The file is written under a temporary name and renamed, so a failure never leaves a
    half-written file at ``path``.
    """
    _xmrrs.write_xc(os.fspath(path), csr_parts(X, "X"), csr_parts(Y, "Y"), True, n_jobs)


def dump_libsvm(path: PathLike, X: Any, Y: Any, *, n_jobs: int | None = None) -> None:
    """Write ``X`` and ``Y`` as LIBSVM multilabel text with 0-based ids (no header)."""
    _xmrrs.write_xc(os.fspath(path), csr_parts(X, "X"), csr_parts(Y, "Y"), False, n_jobs)


def read_sparse_npz(path: PathLike) -> Any:
    """The scipy sparse matrix of an ``.npz`` file written by ``scipy.sparse.save_npz``.

    Every ``.npy`` member's header is checked against the member's stored size before an
    array is allocated (numpy sizes the array of a compressed member by its header alone),
    and a corrupt archive, whatever zipfile or numpy raise for it, is a ``ValueError`` naming
    the file. A missing file is ``FileNotFoundError``.
    """
    import zipfile

    fmt = np.lib.format
    name = os.fspath(path)
    try:
        with zipfile.ZipFile(name) as z:
            for info in z.infolist():
                with z.open(info) as f:
                    version = fmt.read_magic(f)
                    read_header = fmt.read_array_header_1_0
                    if version != (1, 0):
                        read_header = fmt.read_array_header_2_0
                    shape, _, dtype = read_header(f)
                    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if dtype.hasobject or need > info.file_size - f.tell():
                        raise ValueError(
                            f"member {info.filename} promises {need} bytes of {dtype}, the "
                            f"archive holds {info.file_size}"
                        )
        return sp.load_npz(name)
    except (FileNotFoundError, MemoryError):
        raise
    except Exception as e:  # BadZipFile, NotImplementedError, RuntimeError, SyntaxError, ...
        raise ValueError(
            f"{name}: not a readable scipy .npz file ({type(e).__name__}: {e})"
        ) from None


def load_npz(x_path: PathLike, y_path: PathLike) -> Pair:
    """Read a pair of scipy ``.npz`` files, checking that they fit together (and each as
    :func:`read_sparse_npz` does)."""
    X = read_sparse_npz(x_path)
    Y = read_sparse_npz(y_path)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{x_path} has {X.shape[0]} rows but {y_path} has {Y.shape[0]}")
    from xmrrs.sparse import canonicalize

    Xc = canonicalize(X)
    Yc = canonicalize(Y)
    Yc.data[:] = (Yc.data != 0).astype(np.float32)
    Yc.eliminate_zeros()
    return sp.csr_matrix(Xc), sp.csr_matrix(Yc)


def save_npz(x_path: PathLike, y_path: PathLike, X: Any, Y: Any) -> None:
    """Write ``X`` and ``Y`` as uncompressed scipy ``.npz`` files."""
    sp.save_npz(os.fspath(x_path), sp.csr_matrix(X), compressed=False)
    sp.save_npz(os.fspath(y_path), sp.csr_matrix(Y), compressed=False)


def load_split(folder: PathLike, *, n_jobs: int | None = None) -> tuple[Pair, Pair]:
    """Read ``train.txt`` and ``test.txt`` (XC format) of a data folder.

    Returns ``((X_train, Y_train), (X_test, Y_test))``.
    """
    root = Path(folder)
    return load_xc(root / "train.txt", n_jobs=n_jobs), load_xc(root / "test.txt", n_jobs=n_jobs)
