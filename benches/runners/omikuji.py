"""omikuji (Parabel / Bonsai in Rust), through its Python binding.

omikuji trains only from an XC text file: the data set is parsed first (timed apart, as
``parse_s``), then ``train_omikuji_model`` is timed alone: this is what
``omikuji.Model.train_on_data`` does in one call. After loading, the weights are densified
(``densify_weights(0.1)``, as omikuji's own CLI does before testing). The binding predicts
one row per call (a list of ``(feature, value)`` pairs), so the batch prediction is a loop.
"""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from runners.common import DataFiles, Unavailable, pairs_topk_ids

#: Prediction settings (omikuji's CLI defaults).
BEAM_SIZE = 10
DENSIFY = 0.1
HYPER_FIELDS = (
    "n_trees",
    "min_branch_size",
    "max_depth",
    "centroid_threshold",
    "collapse_every_n_layers",
    "linear_loss_type",
    "linear_eps",
    "linear_c",
    "linear_weight_threshold",
    "linear_max_iter",
    "cluster_k",
    "cluster_balanced",
    "cluster_eps",
    "cluster_min_size",
    "tree_structure_only",
    "train_trees_1_by_1",
)


def _hyper_param(params: dict[str, Any]) -> Any:
    import omikuji

    hp = omikuji.Model.default_hyper_param()
    for key, value in params.items():
        if key not in HYPER_FIELDS:
            raise ValueError(f"unknown omikuji hyper-parameter {key!r}")
        setattr(hp, key, value)
    return hp


def _effective(hp: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in HYPER_FIELDS:
        v = getattr(hp, f)
        out[f] = round(v, 6) if isinstance(v, float) else v
    out["linear_loss_type"] = {0: "hinge", 1: "log"}.get(out["linear_loss_type"], "?")
    return {**out, "predict_beam_size": BEAM_SIZE, "densify_weights": DENSIFY}


def probe(params: dict[str, Any]) -> dict[str, Any]:
    try:
        import omikuji
    except ImportError as e:
        raise Unavailable(f"omikuji is not importable ({e})") from e
    return {
        "versions": {"omikuji": omikuji.__version__, "numpy": np.__version__},
        "params": _effective(_hyper_param(params)),
    }


def train(data: DataFiles, params: dict[str, Any], model_dir: Path, n_jobs: int) -> dict[str, Any]:
    import omikuji
    from omikuji import ffi, lib

    pool = omikuji._ThreadPoolHandle(n_jobs, initialize=True)
    hp = _hyper_param(params)
    t = time.perf_counter()
    ds = lib.load_omikuji_data_set(ffi.new("char[]", str(data.train_txt).encode()), pool.ptr)
    if ds == ffi.NULL:
        raise RuntimeError(f"omikuji failed to load {data.train_txt}")
    ds = ffi.gc(ds, lib.free_omikuji_data_set)
    parse_s = time.perf_counter() - t
    t = time.perf_counter()
    ptr = lib.train_omikuji_model(ds, hp, pool.ptr)
    train_s = time.perf_counter() - t
    if ptr == ffi.NULL:
        raise RuntimeError("omikuji training failed")
    model = omikuji.Model(ptr, pool)
    t = time.perf_counter()
    model.save(str(model_dir))
    save_s = time.perf_counter() - t
    return {"train_s": train_s, "parse_s": parse_s, "save_s": save_s, "n_trees": model.n_trees}


class Predictor:
    """A loaded, densified omikuji model; inputs are lists of ``(feature, value)`` lists."""

    def __init__(self, model_dir: Path, params: dict[str, Any], n_jobs: int) -> None:
        import omikuji

        self.model = omikuji.Model.load(str(model_dir))
        self.model.init_prediction_thread_pool(n_jobs)
        self.model.densify_weights(DENSIFY)

    def prepare(self, X: sp.csr_matrix) -> list[list[tuple[int, float]]]:
        ind, val, ptr = X.indices.tolist(), X.data.tolist(), X.indptr.tolist()
        return [list(zip(ind[a:b], val[a:b], strict=True)) for a, b in pairwise(ptr)]

    def prepare_one(self, X: sp.csr_matrix, i: int) -> list[list[tuple[int, float]]]:
        return self.prepare(X[i : i + 1])

    def predict(self, prepared: list[list[tuple[int, float]]], k: int) -> Any:
        m = self.model
        return [m.predict(row, beam_size=BEAM_SIZE, top_k=k) for row in prepared]

    def to_ids(self, out: Any, n: int, k: int) -> np.ndarray:
        return pairs_topk_ids(out, k)

    def set_threads(self, n: int) -> None:
        self.model.init_prediction_thread_pool(n)


def load(model_dir: Path, params: dict[str, Any], n_jobs: int) -> Predictor:
    return Predictor(model_dir, params, n_jobs)
