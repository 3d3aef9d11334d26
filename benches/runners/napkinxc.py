"""napkinXC Probabilistic Label Trees (``napkinxc.models.PLT``) with the library's defaults.

``PLT.fit`` writes the model into its output folder while training, so ``train_s`` includes
saving (``save_s`` is 0). Prediction uses ``predict_proba(X, top_k=k)``; the default tree
search is exact top-k (no beam), and every call starts its own threads.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from runners.common import DataFiles, Unavailable, pairs_topk_ids


def probe(params: dict[str, Any]) -> dict[str, Any]:
    try:
        from importlib.metadata import version

        from napkinxc.models import PLT
    except ImportError as e:
        raise Unavailable(f"napkinxc is not importable ({e})") from e
    effective = PLT("/nonexistent", **params).get_params()
    effective = {k: v for k, v in effective.items() if k not in ("output", "threads")}
    return {
        "versions": {"napkinxc": version("napkinxc"), "numpy": np.__version__},
        "params": effective,
    }


def train(data: DataFiles, params: dict[str, Any], model_dir: Path, n_jobs: int) -> dict[str, Any]:
    from napkinxc.models import PLT

    X, Y = data.load_train()
    model = PLT(str(model_dir), threads=n_jobs, **params)
    t = time.perf_counter()
    model.fit(X, Y)
    train_s = time.perf_counter() - t
    return {"train_s": train_s, "save_s": 0.0}


class Predictor:
    """A loaded PLT model."""

    def __init__(self, model_dir: Path, params: dict[str, Any], n_jobs: int) -> None:
        from napkinxc.models import PLT

        self.model = PLT(str(model_dir), threads=n_jobs, **params)
        self.model.load()

    def prepare(self, X: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix(X, dtype=np.float32)

    def prepare_one(self, X: sp.csr_matrix, i: int) -> sp.csr_matrix:
        return sp.csr_matrix(X[i : i + 1], dtype=np.float32)

    def predict(self, prepared: sp.csr_matrix, k: int) -> Any:
        return self.model.predict_proba(prepared, top_k=k)

    def to_ids(self, out: Any, n: int, k: int) -> np.ndarray:
        return pairs_topk_ids(out, k)

    def set_threads(self, n: int) -> None:
        self.model.set_params(threads=n)


def load(model_dir: Path, params: dict[str, Any], n_jobs: int) -> Predictor:
    return Predictor(model_dir, params, n_jobs)
