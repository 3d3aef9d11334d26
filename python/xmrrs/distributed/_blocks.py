"""The inputs as row blocks: each block (an ``(X, Y)`` pair or ``(X, Y, relevance)`` triple,
``X`` sparse, dense or a :class:`~xmrrs.hybrid.HybridMatrix`,
a dask delayed (pair), an XC file path or an ``(x.npz[, dense.npy], y.npz[, r.npz])`` tuple
of paths, a ``.npy`` dense block making ``X`` a ``HybridMatrix``) is loaded, checked and
normalised by a task, and the blocks' shapes are checked to agree. ``Y`` blocks that are
label lists or class vectors are encoded over the sorted union of their names (the
``classes_`` one-process ``fit`` finds on the stacked blocks)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from xmrrs import _xmrrs
from xmrrs._files import load_npy_mapped
from xmrrs._targets import (
    as_indicator,
    encode_classes,
    encode_label_lists,
    is_class_vector,
    relevance_matrix,
)
from xmrrs._validation import csr_parts, finite_csr_parts, to_scipy
from xmrrs.distributed._run import _is_delayed, _Run
from xmrrs.distributed._worker import _aligned
from xmrrs.hybrid import HybridMatrix


class Blocks(NamedTuple):
    """The prepared blocks: futures of ``(X, Y)`` or ``(X, Y, relevance)`` tuples as ``fit``
    sees them, their rows, the features and labels, the label names (``None``: indicator
    ``Y``), whether ``Y`` was a class vector, the width of the dense block of
    :class:`~xmrrs.hybrid.HybridMatrix` blocks (``None``: sparse or dense ``X``), and the
    bytes of each block's arrays."""

    futs: list[Any]
    rows: list[int]
    n_features: int
    n_labels: int
    classes: np.ndarray | None
    multiclass: bool
    n_dense: int | None
    nbytes: list[int]


def _is_path(v: Any) -> bool:
    return isinstance(v, str | os.PathLike)


def _dense_file(path: Any, n_rows: int) -> np.ndarray:
    """The dense block in the ``.npy`` file ``path``: mapped (no pickles), checked to hold
    ``n_rows`` rows of finite numbers (``HybridMatrix`` checks the values)."""
    d = load_npy_mapped(path)
    if d.ndim != 2 or d.dtype.kind not in "fiu" or d.shape[0] != n_rows:
        raise ValueError(
            f"{os.fspath(path)} holds a {d.dtype} array of shape {d.shape}; the dense block "
            f"must be a 2-D array of numbers with one row per row of X ({n_rows})"
        )
    return d


def _load_paths(paths: Sequence[Any]) -> tuple[Any, ...]:
    """``(X, Y or None, *rest)`` from ``x.npz[, dense.npy][, y.npz[, r.npz]]``."""
    from xmrrs.datasets import load_npz, read_sparse_npz
    from xmrrs.sparse import canonicalize

    x_path, *rest = paths
    d_path = rest.pop(0) if rest and os.fspath(rest[0]).endswith(".npy") else None
    if rest:
        x, y = load_npz(x_path, rest[0])
        tail = [read_sparse_npz(r) for r in rest[1:]]
    else:
        x, y, tail = sp.csr_matrix(canonicalize(read_sparse_npz(x_path))), None, []
    if d_path is not None:
        x = HybridMatrix(x, _dense_file(d_path, x.shape[0]))
    return (x, y, *tail)


def _load(src: Any) -> tuple[Any, ...]:
    if _is_path(src):
        from xmrrs.datasets import load_xc

        return load_xc(src, n_jobs=1)
    if len(src) > 0 and all(_is_path(v) for v in src):
        return _load_paths(src)
    return tuple(src)


def _load_block(src: Any) -> tuple[Any, Any, bool, np.ndarray | None, bool, Any]:
    """``(X, Y, whether every row of X has unit norm, Y's label names or None, whether Y is
    a class vector, relevance or None)``: ``Y`` as a canonical 0/1 indicator, or as given
    when it names its labels (encoded once the names of every block are known)."""
    x, y, *rest = _load(src)
    if y is None:
        raise ValueError("a training block of paths needs a y.npz after x.npz (and dense.npy)")
    x = _aligned(x)
    if isinstance(x, HybridMatrix):
        # (its constructor checked the values)
        if x.n_sparse < 1:
            raise ValueError("the sparse block of a HybridMatrix needs at least 1 column")
        n_rows, unit = len(x), x.rows_are_unit()
    else:
        parts = finite_csr_parts(x, "X")
        n_rows, unit = parts[0], bool(_xmrrs.csr_rows_are_unit(parts, 1))
        x = to_scipy(parts)
    y = _aligned(y)
    ym, names = as_indicator(y, n_rows)
    r = None
    if rest:
        if names is not None:
            raise ValueError(
                "relevance needs Y as an indicator matrix, not label lists or class labels"
            )
        r = relevance_matrix(_aligned(rest[0]), ym.shape)
    if names is None:
        return x, ym, unit, None, False, r
    return x, y, unit, names, is_class_vector(y), r


def _normalized(
    block: tuple[Any, ...], normalize: bool, classes: np.ndarray | None
) -> tuple[Any, ...]:
    """The block as ``fit`` sees it: rows normalised when the global decision says so, ``Y``
    over the global label names, and the relevance when given."""
    x, y, _, _, multiclass, r = block
    x = _aligned(x)
    if normalize and isinstance(x, HybridMatrix):
        x = x.scaled_to_unit()
    elif normalize:
        x = to_scipy(_xmrrs.csr_normalize_rows(csr_parts(x, "X"), 1))
    if classes is not None:
        y = (encode_classes if multiclass else encode_label_lists)(y, classes)[0]
    y = _aligned(y)
    return (x, y) if r is None else (x, y, _aligned(r))


def _classes(names: list[Any]) -> tuple[np.ndarray | None, bool]:
    """The label names of the stacked blocks (``None``: indicator blocks) and whether they
    are a class vector's."""
    given = [n for n in names if n[0] is not None]
    if not given:
        return None, False
    if len(given) != len(names):
        raise ValueError("blocks mix indicator Y with label lists or class labels")
    kinds = {bool(n[1]) for n in given}
    if len(kinds) != 1:
        raise ValueError("blocks mix label lists with class vectors")
    multiclass = kinds.pop()
    values = [v for n, _ in given for v in n.tolist()]
    if multiclass:
        return encode_classes(np.asarray(values))[1], True
    return encode_label_lists([values])[1], False


def _info(block: tuple[Any, ...]) -> tuple[bool, np.ndarray | None, bool, bool]:
    """Of a loaded block: unit rows, label names, class vector, relevance given."""
    return block[2], block[3], block[4], block[5] is not None


def _nbytes(m: Any) -> int:
    """Bytes of a block matrix's arrays (sparse, dense or hybrid)."""
    if isinstance(m, HybridMatrix):
        return _nbytes(m.sparse) + int(m.dense.nbytes)
    if sp.issparse(m):
        return sum(int(getattr(m, a).nbytes) for a in ("data", "indices", "indptr"))
    return int(np.asarray(m).nbytes)


def _meta(block: tuple[Any, ...]) -> tuple[int, int, int, int | None, int]:
    x, y = block[0], block[1]
    n_dense = x.n_dense if isinstance(x, HybridMatrix) else None
    nbytes = sum(_nbytes(m) for m in block if m is not None)
    return int(x.shape[0]), int(x.shape[1]), int(y.shape[1]), n_dense, nbytes


def _source(client: Any, b: Any) -> Any:
    """A block source for ``_load_block``: dask collections become futures."""
    if _is_delayed(b):
        return client.compute(b)
    if isinstance(b, tuple | list) and len(b) in (2, 3):
        return tuple(client.compute(v) if _is_delayed(v) else v for v in b)
    if isinstance(b, tuple | list) and len(b) == 4 and all(_is_path(v) for v in b):
        return tuple(b)
    if _is_path(b):
        return b
    raise ValueError(
        "each block must be an (X, Y) pair or (X, Y, relevance) triple, a dask delayed "
        "(pair), an XC file path or an (x.npz[, dense.npy], y.npz[, r.npz]) tuple of paths; "
        f"got {type(b).__name__}"
    )


def _prepare(run: _Run, blocks: Sequence[Any], normalize: bool) -> Blocks:
    """The (normalised) blocks as futures, and what they hold (see :class:`Blocks`)."""
    if len(blocks) == 0:
        raise ValueError("no blocks")
    raw = [
        run.submit(f"load-block{i}", _load_block, _source(run.client, b), priority=1)
        for i, b in enumerate(blocks)
    ]
    info = run.client.gather([run.submit(f"info{i}", _info, r) for i, r in enumerate(raw)])
    if len({has_r for *_, has_r in info}) > 1:
        raise ValueError("either every block or none carries a relevance matrix")
    scale = normalize and not all(u for u, *_ in info)
    classes, multiclass = _classes([(n, m) for _, n, m, _ in info])
    futs = [
        run.submit(f"block{i}", _normalized, r, scale, classes, priority=1)
        for i, r in enumerate(raw)
    ]
    meta = run.client.gather([run.submit(f"meta{i}", _meta, f) for i, f in enumerate(futs)])
    del raw
    n_dense = {m[3] for m in meta}
    if len(n_dense) != 1:
        raise ValueError(
            "blocks mix HybridMatrix and plain X, or dense blocks of different widths "
            f"({sorted(n_dense, key=str)})"
        )
    n_features = {m[1] for m in meta}
    n_labels = {m[2] for m in meta}
    if len(n_features) != 1 or len(n_labels) != 1:
        raise ValueError(
            f"blocks disagree on the number of features {sorted(n_features)} or labels "
            f"{sorted(n_labels)}"
        )
    return Blocks(
        futs,
        [m[0] for m in meta],
        n_features.pop(),
        n_labels.pop(),
        classes,
        multiclass,
        n_dense.pop(),
        [m[4] for m in meta],
    )
