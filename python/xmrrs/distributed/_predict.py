"""Batch inference: a saved model mapped over row blocks, loaded once per worker process
with ``mmap=True`` and cached (keyed by path and file modification time)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from xmrrs.distributed._blocks import _load
from xmrrs.distributed._run import _client, _is_delayed, _Run
from xmrrs.distributed._worker import _aligned, _delay, _worker_threads
from xmrrs.estimator import XRLinearClassifier

_MODELS: dict[tuple[str, int, int | None], XRLinearClassifier] = {}
_MODELS_LOCK = threading.Lock()


def _model(path: str) -> XRLinearClassifier:
    """The model at ``path``, loaded once per process with ``mmap=True``."""
    manifest = os.path.join(path, "xmrrs-model.json")
    st = os.stat(manifest)
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_ino)
    with _MODELS_LOCK:
        m = _MODELS.get(key)
        if m is None:
            for old in [k for k in _MODELS if k[0] == key[0]]:
                del _MODELS[old]
            m = XRLinearClassifier.load(path, mmap=True)
            _MODELS[key] = m
    return m


def _predict_block(
    path: str, src: Any, k: int | None, beam_size: int | None, n_jobs: int | None
) -> tuple[np.ndarray, np.ndarray]:
    _delay()
    x = _aligned(_load(src)[0] if isinstance(src, str | os.PathLike | tuple) else src)
    m = _model(path)
    m.n_jobs = _worker_threads(n_jobs)
    return m.predict_topk(x, k, beam_size=beam_size)


def predict_topk(
    path: str | os.PathLike[str],
    blocks: Sequence[Any],
    k: int | None = None,
    *,
    beam_size: int | None = None,
    client: Any = None,
    retries: int = 2,
    n_jobs: int | None = None,
    progress: bool = False,
    gather: bool = True,
) -> Any:
    """Top-``k`` labels of every row of the row blocks, with the model saved at ``path``.

    ``blocks`` are feature matrices, dask delayed objects computing to one, XC file paths
    or ``(x.npz[, dense.npy][, y.npz])`` path tuples (labels ignored; a ``.npy`` dense
    block makes the rows a ``HybridMatrix``). Returns ``(ids, scores)`` stacked in
    block order, as :meth:`XRLinearClassifier.predict_topk` on the stacked blocks would, or
    with ``gather=False`` one future per block (each resolving to ``(ids, scores)``).
    """
    run = _Run(_client(client), retries)
    path = os.fspath(path)
    _model(path)  # fail early on a bad path (and check the model on the client once)
    futs = []
    for i, b in enumerate(blocks):
        src = run.client.compute(b) if _is_delayed(b) else b
        futs.append(
            run.submit(f"predict-block{i}", _predict_block, path, src, k, beam_size, n_jobs)
        )
    if not gather:
        return futs
    out = run.gather(futs, progress)
    return np.vstack([o[0] for o in out]), np.vstack([o[1] for o in out])
