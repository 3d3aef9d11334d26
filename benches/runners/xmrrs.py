"""xmrrs's ``XRLinearClassifier`` (or any class with its API, for testing the harness).

The estimator class is ``params["__class__"]`` (``"module:Class"``, default
``"xmrrs:XRLinearClassifier"``); the other entries of ``params`` are its constructor
arguments, with ``n_jobs`` and ``random_state=0`` added. The API used::

    est = Cls(n_jobs=2, random_state=0, **params); est.fit(X, Y); est.save(model_dir)
    est = Cls.load(model_dir, mmap=True); est.set_params(n_jobs=1)
    ids, scores = est.predict_topk(X, k=10)    # (n, k) int64 ids padded with -1
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from runners.common import DataFiles, Unavailable

DEFAULT_CLASS = "xmrrs:XRLinearClassifier"


def _split(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kwargs = dict(params)
    kwargs.pop(PECOS_TREE, None)
    return kwargs.pop("__class__", DEFAULT_CLASS), kwargs


#: ``params[PECOS_TREE] = (nr_splits, max_leaf_size)`` trains on PECOS's tree shape for the
#: data's label count (``branching=xmrrs.indexing.pecos_fanouts(...)``).
PECOS_TREE = "__pecos_tree__"


def _estimator_class(path: str) -> Any:
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise Unavailable(f"{name} not available ({type(e).__name__}: {e})") from e


def probe(params: dict[str, Any]) -> dict[str, Any]:
    path, kwargs = _split(params)
    cls = _estimator_class(path)
    import xmrrs

    est = cls(n_jobs=1, random_state=0, **kwargs)  # fails here on an unknown parameter
    effective = est.get_params() if hasattr(est, "get_params") else kwargs
    effective = {k: v for k, v in effective.items() if k not in ("n_jobs",)}
    if PECOS_TREE in params:
        effective["branching"] = "pecos_fanouts(n_labels, {}, {})".format(*params[PECOS_TREE])
    return {
        "versions": {"xmrrs": xmrrs.__version__, "numpy": np.__version__},
        "params": {"estimator": path, **effective},
    }


def estimator_kwargs(params: dict[str, Any], n_labels: int) -> tuple[str, dict[str, Any]]:
    """The estimator class path and its constructor arguments for data with ``n_labels``
    labels (``params[PECOS_TREE]`` resolved into ``branching``)."""
    path, kwargs = _split(params)
    if PECOS_TREE in params:
        from xmrrs.indexing import pecos_fanouts

        # [] is PECOS's one-leaf tree: any integer branching gives it, as the leaf size
        # then covers every label
        kwargs["branching"] = pecos_fanouts(n_labels, *params[PECOS_TREE]) or 2
    return path, kwargs


def train(data: DataFiles, params: dict[str, Any], model_dir: Path, n_jobs: int) -> dict[str, Any]:
    X, Y = data.load_train()
    path, kwargs = estimator_kwargs(params, Y.shape[1])
    est = _estimator_class(path)(n_jobs=n_jobs, random_state=0, **kwargs)
    t = time.perf_counter()
    est.fit(X, Y)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    est.save(model_dir)
    save_s = time.perf_counter() - t
    info: dict[str, Any] = {"train_s": train_s, "save_s": save_s}
    tree = getattr(est, "tree_", None)
    if tree is not None and hasattr(tree, "depth"):
        info["depth"] = int(tree.depth) + 1  # layers of linear models = tree levels below root
        info["nodes_per_level"] = [int(n) for n in tree.n_nodes_per_level]
    return info


class Predictor:
    """A loaded (memory-mapped) estimator."""

    def __init__(self, model_dir: Path, params: dict[str, Any], n_jobs: int) -> None:
        path, _ = _split(params)
        self.est = _estimator_class(path).load(model_dir, mmap=True)
        self.est.set_params(n_jobs=n_jobs)

    def prepare(self, X: sp.csr_matrix) -> sp.csr_matrix:
        return X

    def prepare_one(self, X: sp.csr_matrix, i: int) -> sp.csr_matrix:
        return sp.csr_matrix(X[i : i + 1])

    def predict(self, prepared: sp.csr_matrix, k: int) -> Any:
        return self.est.predict_topk(prepared, k=k)

    def to_ids(self, out: Any, n: int, k: int) -> np.ndarray:
        ids = np.asarray(out[0], dtype=np.int64)
        if ids.shape != (n, k):
            raise ValueError(f"predict_topk returned ids of shape {ids.shape}, expected {(n, k)}")
        return ids

    def set_threads(self, n: int) -> None:
        self.est.set_params(n_jobs=n)


def load(model_dir: Path, params: dict[str, Any], n_jobs: int) -> Predictor:
    return Predictor(model_dir, params, n_jobs)
