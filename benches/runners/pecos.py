"""PECOS XR-Linear (``libpecos``): PIFA, hierarchical k-means, per-layer linear models.

Training times PIFA + indexing + ``XLinearModel.train`` (data already in memory); the model
is saved with ``XLinearModel.save`` and loaded for prediction with ``is_predict_only=True``
(the C++ inference model, binary-search chunked weights), as in ``anchors-results.md``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from runners.common import DataFiles, Unavailable, csr_topk_ids


def probe(params: dict[str, Any]) -> dict[str, Any]:
    try:
        from importlib.metadata import version

        from pecos.xmc.xlinear.model import XLinearModel  # noqa: F401
    except ImportError as e:
        raise Unavailable(f"libpecos is not importable ({e})") from e
    return {
        "versions": {"libpecos": version("libpecos"), "numpy": np.__version__},
        "params": params,
    }


def fit(X: Any, Y: Any, p: dict[str, Any], n_jobs: int) -> tuple[Any, dict[str, Any]]:
    """PIFA, hierarchical k-means and ``XLinearModel.train`` with the settings ``p`` (the
    names of :data:`runners.PECOS_PARAMS`): the model and the timings of the steps."""
    from pecos.xmc import Indexer, LabelEmbeddingFactory
    from pecos.xmc.xlinear.model import XLinearModel

    t = time.perf_counter()
    Z = LabelEmbeddingFactory.create(Y, X, method=p["label_embedding"], threads=n_jobs)
    emb_s = time.perf_counter() - t
    chain = Indexer.gen(
        Z,
        indexer_type="hierarchicalkmeans",
        nr_splits=p["nr_splits"],
        max_leaf_size=p["max_leaf_size"],
        spherical=p["spherical"],
        kmeans_max_iter=p["kmeans_max_iter"],
        seed=p["seed"],
        threads=n_jobs,
    )
    index_s = time.perf_counter() - t - emb_s
    model = XLinearModel.train(
        X,
        Y,
        C=chain,
        solver_type=p["solver_type"],
        Cp=p["Cp"],
        Cn=p["Cn"],
        max_iter=p["max_iter"],
        eps=p["eps"],
        bias=p["bias"],
        threshold=p["threshold"],
        negative_sampling_scheme=p["negative_sampling_scheme"],
        nr_splits=p["nr_splits"],
        beam_size=p["beam_size"],
        only_topk=10,
        post_processor=p["post_processor"],
        threads=n_jobs,
    )
    info = {
        "train_s": time.perf_counter() - t,
        "embedding_s": emb_s,
        "indexing_s": index_s,
        "depth": len(chain),
        "n_leaves": int(chain[-1].shape[1]),
    }
    return model, info


def train(data: DataFiles, params: dict[str, Any], model_dir: Path, n_jobs: int) -> dict[str, Any]:
    X, Y = data.load_train()
    X = sp.csr_matrix(X, dtype=np.float32)
    Y = sp.csr_matrix(Y, dtype=np.float32)
    model, info = fit(X, Y, params, n_jobs)
    t = time.perf_counter()
    model.save(str(model_dir))
    return {**info, "save_s": time.perf_counter() - t}


class Predictor:
    """A predict-only (C++) XR-Linear model."""

    def __init__(self, model_dir: Path, params: dict[str, Any], n_jobs: int) -> None:
        from pecos.xmc.xlinear.model import XLinearModel

        self.params = params
        self.threads = n_jobs
        self.model = XLinearModel.load(str(model_dir), is_predict_only=params["is_predict_only"])

    def prepare(self, X: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix(X, dtype=np.float32)

    def prepare_one(self, X: sp.csr_matrix, i: int) -> sp.csr_matrix:
        return sp.csr_matrix(X[i : i + 1], dtype=np.float32)

    def predict(self, prepared: sp.csr_matrix, k: int) -> Any:
        return self.model.predict(
            prepared,
            beam_size=self.params["beam_size"],
            only_topk=k,
            post_processor=self.params["post_processor"],
            threads=self.threads,
        )

    def to_ids(self, out: Any, n: int, k: int) -> np.ndarray:
        return csr_topk_ids(out, k)

    def set_threads(self, n: int) -> None:
        self.threads = n


def load(model_dir: Path, params: dict[str, Any], n_jobs: int) -> Predictor:
    return Predictor(model_dir, params, n_jobs)
