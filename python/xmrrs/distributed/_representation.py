"""The PIFA label representation as a map-reduce over the row blocks: chains of steps
bit-identical to the one-process product (one chain per range of labels, so that no task
holds more than its range's rows of the running sum), or partial products summed
pairwise. With :class:`~xmrrs.hybrid.HybridMatrix` rows, a running sum is a pair (the
sparse block's sums, the dense block's), normalised over both blocks with the one-process
decision (rows scaled unless every row of ``Z`` already has unit norm), then one CSR piece.

The chained pieces are normalised where they live and copied into ``Z`` on the client one
at a time, so the client holds ``Z`` once; they stay on the workers (a :class:`ZPieces`) so
that the sub-tree k-means tasks take their rows of ``Z`` from them, not from the client."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp

from xmrrs import sparse as xs
from xmrrs.distributed._blocks import _prepare
from xmrrs.distributed._run import _client, _Run
from xmrrs.distributed._worker import _aligned
from xmrrs.hybrid import HybridMatrix
from xmrrs.indexing import (
    _NO_POSITIVE,
    Fill,
    _apply_fill,
    _as_csr,
    _column_sums,
    _fill_empty,
    _fill_of,
    _n_empty,
)

#: the running sum of a chain: a CSR matrix, or with HybridMatrix rows a (sparse, dense) pair
Sums: TypeAlias = sp.csr_matrix | tuple[sp.csr_matrix, np.ndarray]


def _pifa_step(
    prev: Sums | None, block: tuple[Any, Any], lo: int = 0, hi: int | None = None
) -> Sums:
    """``prev + Yn_b^T X_b`` for labels ``lo..hi``, summed entry by entry in the order of the
    one-process product (``prev`` enters each label's sum first, multiplied by an exact 1;
    a label's row of the product does not depend on the other labels). The dense block of
    HybridMatrix rows is summed the same way, by the same sparse x dense product."""
    x = _aligned(block[0])
    yt = xs.transpose(xs.normalize_rows(_as_csr(_aligned(block[1]), "Y"), n_jobs=1), n_jobs=1)
    if lo != 0 or hi is not None:
        yt = yt[lo:hi]
    if prev is None:
        if isinstance(x, HybridMatrix):
            return xs.matmul(yt, x.sparse, n_jobs=1), xs.matmul_dense(yt, x.dense, n_jobs=1)
        return xs.matmul(yt, _as_csr(x, "X"), n_jobs=1)
    # [I, yt] against [prev; X_b]: the running sum's row enters each label's sum first
    eye = sp.identity(yt.shape[0], dtype=np.float32, format="csr")
    a = sp.csr_matrix(sp.hstack([eye, yt], format="csr"))
    prev = _aligned(prev)
    if isinstance(x, HybridMatrix):
        ps, pd = prev
        return (
            xs.matmul(a, sp.vstack([ps, x.sparse], format="csr"), n_jobs=1),
            xs.matmul_dense(a, np.vstack([pd, x.dense]), n_jobs=1),
        )
    return xs.matmul(a, sp.vstack([prev, _as_csr(x, "X")], format="csr"), n_jobs=1)


def _pifa_partial(block: tuple[Any, Any]) -> Sums:
    return _pifa_step(None, block)


def _add(a: Sums, b: Sums) -> Sums:
    a, b = _aligned(a), _aligned(b)
    if isinstance(a, tuple):
        return sp.csr_matrix(a[0] + b[0], dtype=np.float32), a[1] + b[1]
    return sp.csr_matrix(a + b, dtype=np.float32)


@dataclass
class ZPieces:
    """The rows of the normalised PIFA ``Z`` on the workers: ``pieces[r]`` (a future) holds
    labels ``edges[r]..edges[r + 1]``; ``fill`` is what :func:`xmrrs.indexing._fill_empty`
    gives ``Z``'s all-zero rows (``None``: nothing to fill)."""

    pieces: list[Any]
    edges: np.ndarray
    fill: Fill | None

    def release(self) -> None:
        """Drops the client's references (the workers free the pieces once the tasks that
        read them are done; the scheduler can still recompute them from the blocks)."""
        self.pieces = []


def _all_unit_rows(z: Sums) -> bool:
    """Whether every row of a hybrid running sum has unit norm over both blocks (or is zero):
    the one-process :meth:`HybridMatrix.normalized` then leaves all of ``Z`` as it is."""
    z = _aligned(z)
    return not isinstance(z, tuple) or HybridMatrix(*z).rows_are_unit()


def _normalized(z: Sums, scale: bool = True) -> sp.csr_matrix:
    """A running sum's rows normalised, as one CSR piece (hybrid: over both blocks, unless
    ``scale`` is False: every row of ``Z`` already had unit norm)."""
    z = _aligned(z)
    if isinstance(z, tuple):
        h = HybridMatrix(*z)
        return (h.scaled_to_unit() if scale else h).tocsr()
    return xs.normalize_rows(z, n_jobs=1)


def _shape(z: sp.csr_matrix) -> tuple[int, int, int]:
    """Stored values, columns and all-zero rows of a piece."""
    z = _aligned(z)
    return int(z.nnz), int(z.shape[1]), _n_empty(z)


def _slice(z: sp.csr_matrix, a: int, b: int) -> sp.csr_matrix:
    return _aligned(z)[a:b]


def _sums_step(acc: np.ndarray | None, z: sp.csr_matrix) -> np.ndarray:
    """The column sums of the pieces so far, continued over this one (see ``_column_sums``)."""
    return _column_sums(_aligned(z), None if acc is None else np.array(acc))


def _zrows(
    ids: np.ndarray,
    starts: Sequence[int],
    fill: Fill | None,
    *pieces: sp.csr_matrix,
) -> sp.csr_matrix:
    """Rows ``ids`` (sorted label ids) of ``Z`` from the pieces starting at labels
    ``starts``, the empty ones filled: ``Z[ids]`` exactly."""
    out = []
    for lo, piece in zip(starts, pieces, strict=True):
        piece = _aligned(piece)
        mine = ids[(ids >= lo) & (ids < lo + piece.shape[0])] - lo
        out.append(piece[mine])
    z = out[0] if len(out) == 1 else sp.vstack(out, format="csr")
    return sp.csr_matrix(_apply_fill(z, fill, 1))


def zrows_task(run: _Run, name: str, source: ZPieces, ids: np.ndarray, **kw: Any) -> Any:
    """A task computing ``Z[ids]`` (``ids`` sorted) on a worker from ``source``'s pieces."""
    hit = np.unique(np.searchsorted(source.edges, ids, side="right") - 1)
    starts = [int(source.edges[r]) for r in hit]
    return run.submit(
        name, _zrows, ids, starts, source.fill, *[source.pieces[r] for r in hit], **kw
    )


def pifa(
    blocks: Sequence[Any],
    *,
    client: Any = None,
    exact: bool = True,
    normalize: bool = True,
    retries: int = 2,
    n_parts: int | None = None,
) -> sp.csr_matrix:
    """PIFA label representation of row blocks (see the module docs; ``exact``: chained,
    bit-identical to :func:`~xmrrs.indexing.label_representation` on the stacked blocks
    with rows normalised as ``XRLinearClassifier(normalize=...)`` does; ``n_parts``: label
    ranges, one chain each, default twice the number of workers)."""
    run = _Run(_client(client), retries)
    b = _prepare(run, blocks, normalize)
    return _pifa_of(run, b.futs, exact, None, b.n_labels, n_parts)[0]


def _pifa_of(
    run: _Run,
    futs: list[Any],
    exact: bool,
    n_jobs: int | None,
    n_labels: int,
    n_parts: int | None,
) -> tuple[sp.csr_matrix, ZPieces | None]:
    """``Z``, and with ``exact`` its pieces on the workers."""
    if exact:
        workers = max(1, len(run.client.scheduler_info(n_workers=-1)["workers"]))
        k = max(1, min(n_labels, n_parts if n_parts is not None else 2 * workers))
        edges = np.linspace(0, n_labels, k + 1).astype(np.int64)
        sums = []
        for r in range(k):
            lo, hi = int(edges[r]), int(edges[r + 1])
            acc = None
            for i, f in enumerate(futs):
                acc = run.submit(f"pifa-labels{lo}_{hi}-step{i}", _pifa_step, acc, f, lo, hi)
            sums.append(acc)
        # hybrid rows: scale every row unless every row of Z already has unit norm, the
        # one-process decision (gathered from the ranges: one bool each)
        unit = run.client.gather(
            [run.submit(f"pifa-unit{r}", _all_unit_rows, a) for r, a in enumerate(sums)]
        )
        scale = not all(unit)
        pieces = [
            run.submit(
                f"pifa-labels{int(edges[r])}_{int(edges[r + 1])}-normalized", _normalized, a, scale
            )
            for r, a in enumerate(sums)
        ]
        del sums
        z, fill = _assemble(run, pieces, edges, n_jobs)
        if not np.any(z.data):
            raise ValueError(_NO_POSITIVE)
        return z, ZPieces(pieces, edges, fill)
    level = [run.submit(f"pifa-partial{i}", _pifa_partial, f) for i, f in enumerate(futs)]
    r = 0
    while len(level) > 1:
        nxt = [
            run.submit(f"pifa-sum{r}-{i}", _add, level[i], level[i + 1])
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level, r = nxt, r + 1
    s = _aligned(run.client.gather(level[0]))
    if isinstance(s, tuple):
        h = HybridMatrix(*s)
        if h.sparse.count_nonzero() == 0 and not np.any(h.dense):
            raise ValueError(_NO_POSITIVE)
        return sp.csr_matrix(_fill_empty(h.normalized().tocsr(), n_jobs)), None
    if s.count_nonzero() == 0:
        raise ValueError(_NO_POSITIVE)
    return sp.csr_matrix(_fill_empty(xs.normalize_rows(s, n_jobs=n_jobs), n_jobs)), None


_FETCH_BYTES = 128 << 20


def _assemble(
    run: _Run, pieces: list[Any], edges: np.ndarray, n_jobs: int | None
) -> tuple[sp.csr_matrix, Fill | None]:
    """The pieces stacked in order, their all-zero rows filled as :func:`_fill_empty` fills
    them in ``Z``, and the fill. The column sums the fill needs are chained over the pieces
    on the workers; the pieces are then fetched in slices of about ``_FETCH_BYTES``, one at
    a time, into arrays allocated once (the client never holds ``Z`` twice, nor more than a
    slice beside it: a message and its deserialised copy)."""
    shapes = run.client.gather(
        [run.submit(f"pifa-shape{r}", _shape, p) for r, p in enumerate(pieces)]
    )
    n_labels = int(edges[-1])
    nnz, n_cols = sum(s[0] for s in shapes), shapes[0][1]
    n_empty = sum(s[2] for s in shapes)
    fill = None
    if 0 < n_empty < n_labels:
        acc = None
        for r, p in enumerate(pieces):
            acc = run.submit(f"pifa-column-sums{r}", _sums_step, acc, p)
        fill = _fill_of(run.client.gather(acc), nnz, n_labels, n_empty)
    total = nnz + (n_empty * len(fill[0]) if fill is not None else 0)
    indptr = np.zeros(n_labels + 1, np.int64)
    indices = np.empty(total, np.int32 if n_cols <= np.iinfo(np.int32).max else np.int64)
    data = np.empty(total, np.float32)
    row = at = 0
    for r, (p, (m_r, _, _)) in enumerate(zip(pieces, shapes, strict=True)):
        n_r = int(edges[r + 1] - edges[r])
        cuts = np.linspace(0, n_r, max(1, -(-m_r * 8 // _FETCH_BYTES)) + 1).astype(np.int64)
        for a, b in itertools.pairwise(cuts.tolist()):
            if a == b:
                continue
            part = p if (a, b) == (0, n_r) else run.submit(f"pifa-slice{r}-{a}", _slice, p, a, b)
            z = _apply_fill(_aligned(run.client.gather(part)), fill, n_jobs)
            n, m = z.shape[0], int(z.nnz)
            indptr[row + 1 : row + n + 1] = z.indptr[1:].astype(np.int64) + at
            indices[at : at + m] = z.indices
            data[at : at + m] = z.data
            row, at = row + n, at + m
            del z, part
    if row != n_labels or at != total:
        raise RuntimeError("internal: the PIFA pieces do not cover the labels")
    z = sp.csr_matrix((data, indices, indptr), shape=(n_labels, n_cols), copy=False)
    return z, fill
