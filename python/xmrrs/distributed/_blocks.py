"""The inputs as row blocks: each block (an ``(X, Y)`` pair, a dask delayed (pair), an XC
file path or an ``(x.npz, y.npz)`` pair of paths) is loaded, checked and normalised by a
task, and the blocks' shapes are checked to agree."""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmrrs import _xmrrs
from xmrrs._targets import as_indicator
from xmrrs._validation import csr_parts, to_scipy
from xmrrs.distributed._run import _is_delayed, _Run
from xmrrs.distributed._worker import _aligned
from xmrrs.hybrid import HybridMatrix


def _load(src: Any) -> tuple[Any, Any]:
    if isinstance(src, str | os.PathLike):
        from xmrrs.datasets import load_xc

        return load_xc(src, n_jobs=1)
    x, y = src
    if isinstance(x, str | os.PathLike):
        from xmrrs.datasets import load_npz

        return load_npz(x, y)
    return x, y


def _load_block(src: Any) -> tuple[sp.csr_matrix, sp.csr_matrix, bool]:
    """``(X, Y as a canonical 0/1 indicator, whether every row of X has unit norm)``."""
    x, y = _load(src)
    if isinstance(x, HybridMatrix):
        raise ValueError(
            "distributed training takes sparse or dense X blocks; HybridMatrix (dense + "
            "sparse) blocks are not supported yet: train it with XRLinearClassifier.fit"
        )
    x, y = _aligned(x), _aligned(y)
    if not sp.issparse(x):
        x = sp.csr_matrix(np.asarray(x, dtype=np.float32))
    parts = csr_parts(x, "X")
    if parts[4].dtype.kind == "f" and not np.isfinite(parts[4]).all():
        raise ValueError("Input X contains NaN or infinity.")
    if isinstance(y, list):
        raise ValueError("distributed training needs Y blocks as indicator matrices")
    ym, _ = as_indicator(y, parts[0])
    unit = bool(_xmrrs.csr_rows_are_unit(parts, 1))
    return to_scipy(parts), ym, unit


def _normalized(block: tuple[Any, Any, bool], normalize: bool) -> tuple[Any, Any]:
    """The block as ``fit`` sees it: rows normalised when the global decision says so."""
    x, y, _ = block
    x, y = _aligned(x), _aligned(y)
    if normalize:
        x = to_scipy(_xmrrs.csr_normalize_rows(csr_parts(x, "X"), 1))
    return x, y


def _meta(block: tuple[Any, Any]) -> tuple[int, int, int]:
    x, y = block
    return int(x.shape[0]), int(x.shape[1]), int(y.shape[1])


def _source(client: Any, b: Any) -> Any:
    """A block source for ``_load_block``: dask collections become futures."""
    if _is_delayed(b):
        return client.compute(b)
    if isinstance(b, tuple | list) and len(b) == 2:
        return tuple(client.compute(v) if _is_delayed(v) else v for v in b)
    if isinstance(b, str | os.PathLike):
        return b
    raise ValueError(
        "each block must be an (X, Y) pair, a dask delayed (pair), an XC file path or an "
        f"(x.npz, y.npz) pair of paths; got {type(b).__name__}"
    )


def _prepare(
    run: _Run, blocks: Sequence[Any], normalize: bool
) -> tuple[list[Any], list[int], int, int]:
    """Futures of the (normalised) blocks, the rows of each, and the features and labels."""
    if len(blocks) == 0:
        raise ValueError("no blocks")
    raw = [
        run.submit(f"load-block{i}", _load_block, _source(run.client, b), priority=1)
        for i, b in enumerate(blocks)
    ]
    unit = run.client.gather(
        [run.submit(f"unit{i}", operator.itemgetter(2), r) for i, r in enumerate(raw)]
    )
    scale = normalize and not all(unit)
    futs = [run.submit(f"block{i}", _normalized, r, scale, priority=1) for i, r in enumerate(raw)]
    meta = run.client.gather([run.submit(f"meta{i}", _meta, f) for i, f in enumerate(futs)])
    del raw
    n_features = {m[1] for m in meta}
    n_labels = {m[2] for m in meta}
    if len(n_features) != 1 or len(n_labels) != 1:
        raise ValueError(
            f"blocks disagree on the number of features {sorted(n_features)} or labels "
            f"{sorted(n_labels)}"
        )
    return futs, [m[0] for m in meta], n_features.pop(), n_labels.pop()
