"""The PIFA label representation as a map-reduce over the row blocks: a chain of steps
bit-identical to the one-process product, or partial products summed pairwise."""

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


def _pifa_step(prev: sp.csr_matrix | None, block: tuple[Any, Any]) -> sp.csr_matrix:
    """``prev + Yn_b^T X_b``, summed entry by entry in the order of the one-process product
    (``prev`` enters each label's sum first, multiplied by an exact 1)."""
    x = _as_csr(_aligned(block[0]), "X")
    yt = xs.transpose(xs.normalize_rows(_as_csr(_aligned(block[1]), "Y"), n_jobs=1), n_jobs=1)
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
) -> sp.csr_matrix:
    """PIFA label representation of row blocks (see the module docs; ``exact``: chained,
    bit-identical to :func:`~xmrrs.indexing.label_representation` on the stacked blocks
    with rows normalised as ``XRLinearClassifier(normalize=...)`` does)."""
    run = _Run(_client(client), retries)
    futs, _, _, _ = _prepare(run, blocks, normalize)
    return _pifa_of(run, futs, exact, None)


def _pifa_of(run: _Run, futs: list[Any], exact: bool, n_jobs: int | None) -> sp.csr_matrix:
    if exact:
        acc = None
        for i, f in enumerate(futs):
            acc = run.submit(f"pifa-step{i}", _pifa_step, acc, f)
        total = acc
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
        total = level[0]
    s = _aligned(run.client.gather(total))
    if s.count_nonzero() == 0:
        raise ValueError("Y has no positive entry: there is nothing to represent labels by")
    return sp.csr_matrix(_fill_empty(xs.normalize_rows(s, n_jobs=n_jobs), n_jobs))
