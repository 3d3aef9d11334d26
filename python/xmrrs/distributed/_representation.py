"""The PIFA label representation as a map-reduce over the row blocks: chains of steps
bit-identical to the one-process product (one chain per range of labels, so that no task
holds more than its range's rows of the running sum), or partial products summed
pairwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmrrs import sparse as xs
from xmrrs.distributed._blocks import _prepare
from xmrrs.distributed._run import _client, _Run
from xmrrs.distributed._worker import _aligned
from xmrrs.indexing import _as_csr, _fill_empty


def _pifa_step(
    prev: sp.csr_matrix | None, block: tuple[Any, Any], lo: int = 0, hi: int | None = None
) -> sp.csr_matrix:
    """``prev + Yn_b^T X_b`` for labels ``lo..hi``, summed entry by entry in the order of the
    one-process product (``prev`` enters each label's sum first, multiplied by an exact 1;
    a label's row of the product does not depend on the other labels)."""
    x = _as_csr(_aligned(block[0]), "X")
    yt = xs.transpose(xs.normalize_rows(_as_csr(_aligned(block[1]), "Y"), n_jobs=1), n_jobs=1)
    if lo != 0 or hi is not None:
        yt = yt[lo:hi]
    if prev is None:
        return xs.matmul(yt, x, n_jobs=1)
    n_labels = yt.shape[0]
    a = sp.hstack([sp.identity(n_labels, dtype=np.float32, format="csr"), yt], format="csr")
    b = sp.vstack([_aligned(prev), x], format="csr")
    return xs.matmul(a, b, n_jobs=1)


def _pifa_partial(block: tuple[Any, Any]) -> sp.csr_matrix:
    return _pifa_step(None, block)


def _add(a: sp.csr_matrix, b: sp.csr_matrix) -> sp.csr_matrix:
    return sp.csr_matrix(_aligned(a) + _aligned(b), dtype=np.float32)


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
    futs, _, _, n_labels = _prepare(run, blocks, normalize)
    return _pifa_of(run, futs, exact, None, n_labels, n_parts)


def _pifa_of(
    run: _Run,
    futs: list[Any],
    exact: bool,
    n_jobs: int | None,
    n_labels: int,
    n_parts: int | None,
) -> sp.csr_matrix:
    if exact:
        workers = max(1, len(run.client.scheduler_info(n_workers=-1)["workers"]))
        k = max(1, min(n_labels, n_parts if n_parts is not None else 2 * workers))
        edges = np.linspace(0, n_labels, k + 1).astype(int)
        chains = []
        for r in range(k):
            lo, hi = int(edges[r]), int(edges[r + 1])
            acc = None
            for i, f in enumerate(futs):
                acc = run.submit(f"pifa-labels{lo}_{hi}-step{i}", _pifa_step, acc, f, lo, hi)
            chains.append(acc)
        pieces = [_aligned(z) for z in run.client.gather(chains)]
        s = pieces[0] if len(pieces) == 1 else sp.vstack(pieces, format="csr")
        del pieces
        return _finish(s, n_jobs)
    else:
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
        return _finish(_aligned(run.client.gather(level[0])), n_jobs)


def _finish(s: sp.csr_matrix, n_jobs: int | None) -> sp.csr_matrix:
    if s.count_nonzero() == 0:
        raise ValueError("Y has no positive entry: there is nothing to represent labels by")
    return sp.csr_matrix(_fill_empty(xs.normalize_rows(s, n_jobs=n_jobs), n_jobs))
