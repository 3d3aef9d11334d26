"""LibMultiLabel (``libmultilabel``, the LIBLINEAR group): its linear methods, no torch.

Two methods of ``libmultilabel.linear``, both with the LIBLINEAR options of
:data:`runners.LML_OPTIONS` (L2-regularised squared hinge, dual CD, bias 1, eps 1e-4):

- ``train_tree(Y, X, options, K, dmax)``: a Bonsai-style label tree (k-means on the
  L2-normalised ``Y^T X`` label representations, up to ``K`` children per node, depth up to
  ``dmax``), one one-vs-rest model per node; prediction by beam search
  (``predict_values(X, beam_width)``), scores are products of ``sigmoid(3 * margin)`` along
  the path (the labels outside the beam score 0);
- ``train_1vsrest(Y, X, options=...)``: one binary model per label, stored as a *dense*
  ``(n_features + 1) x n_labels`` float64 matrix. Its size is computed from the data's shape
  before anything is loaded into LIBLINEAR; above ``max_weights_gib`` the row is skipped
  (:class:`runners.common.Unavailable`, reported as skipped by the suite).

Randomness: the tree's k-means seeds come from numpy's global RNG
(``np.random.randint`` in ``_build_tree``), so ``np.random.seed(seed)`` is called before
training. Threads: training runs ``psutil.cpu_count(logical=False)`` threads, whatever
``n_jobs`` says (LibMultiLabel has no option for it: it drops ``-m`` from the options), and
its k-means (``sparsekmeans``) uses ``os.cpu_count() // 2`` threads; prediction is
single-threaded (a scipy sparse-dense product, and a Python beam search per row for the
tree), so ``set_threads`` does nothing. The process's thread counts are recorded.

``predict_values`` returns *dense* ``rows x labels`` scores (``rows x (labels + meta-labels)``
inside the tree), so the batch is predicted in slices of at most :data:`BATCH_ROWS` rows
(LibMultiLabel's own ``linear_test`` batch) and at most :data:`BATCH_SCORE_BYTES` of scores;
the top k of each slice comes from ``linear.get_topk_labels``. Both the prediction and the
top k are timed. The model is saved and loaded with LibMultiLabel's ``save_pipeline`` /
``load_pipeline`` (a pickle; no preprocessor, the suite's data are already normalised).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from runners.common import DataFiles, Unavailable

#: LibMultiLabel's own evaluation batch (``linear_test(eval_batch_size=256)``)
BATCH_ROWS = 256
#: at most this many bytes of dense float64 scores per predicted slice
BATCH_SCORE_BYTES = 256 * 2**20
#: where ``save_pipeline`` writes the model
PIPELINE_FILE = "linear_pipeline.pickle"


def ovr_weights_bytes(n_features: int, n_labels: int, bias: bool = True) -> int:
    """Bytes of ``train_1vsrest``'s dense float64 weights, ``(n_features + 1) x n_labels``
    (one row more for the bias term)."""
    return (int(n_features) + int(bias)) * int(n_labels) * 8


def _has_bias(options: str) -> bool:
    parts = options.split()
    return "-B" in parts and float(parts[parts.index("-B") + 1]) > 0


def ovr_skip_reason(params: dict[str, Any], n_features: int, n_labels: int) -> str | None:
    """Why the one-vs-rest row cannot run on data of this shape (its weights would exceed
    ``params["max_weights_gib"]``), or ``None`` when it can (and for the tree)."""
    if params.get("method") != "1vsrest":
        return None
    need = ovr_weights_bytes(n_features, n_labels, _has_bias(params["options"]))
    bound = float(params["max_weights_gib"]) * 2**30
    if need <= bound:
        return None
    return (
        f"train_1vsrest's dense weights, ({n_features} + 1) x {n_labels} float64 = "
        f"{need / 2**30:.3g} GiB, exceed the bound of {params['max_weights_gib']} GiB"
    )


def probe(params: dict[str, Any]) -> dict[str, Any]:
    try:
        from importlib.metadata import version

        import libmultilabel.linear  # noqa: F401
        import psutil
    except ImportError as e:
        raise Unavailable(f"libmultilabel is not importable ({e})") from e
    versions = {p: version(p) for p in ("libmultilabel", "liblinear-multicore", "sparsekmeans")}
    return {
        "versions": {**versions, "numpy": np.__version__},
        "params": {
            **params,
            "train_threads": psutil.cpu_count(logical=False),
            "kmeans_threads": max(1, (os.cpu_count() or 1) // 2),
            "predict_threads": 1,
        },
    }


def _warm_up_jit() -> float:
    """liblinear's Python binding converts CSR input with a numba function compiled on its
    first call in the process (about a second): compiled here, outside the timed call, like
    an import. Returns the seconds it took."""
    from liblinear.liblinearutil import problem

    t = time.perf_counter()
    problem(np.ones(2), sp.csr_matrix(np.eye(2)))
    return time.perf_counter() - t


def fit(X: sp.csr_matrix, Y: sp.csr_matrix, params: dict[str, Any]) -> Any:
    """The LibMultiLabel model of ``params`` (``method`` ``tree`` or ``1vsrest``), with
    numpy's global RNG seeded with ``params["seed"]`` first."""
    from libmultilabel import linear

    # the library draws its k-means seeds from the legacy global RNG: that is what to seed
    np.random.seed(int(params["seed"]))  # noqa: NPY002
    if params["method"] == "tree":
        return linear.train_tree(
            Y, X, options=params["options"], K=params["K"], dmax=params["dmax"], verbose=False
        )
    if params["method"] == "1vsrest":
        return linear.train_1vsrest(Y, X, options=params["options"], verbose=False)
    raise ValueError(f"unknown LibMultiLabel method {params['method']!r}")


def as_inputs(X: Any, Y: Any = None) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """``X`` as float64 CSR (what LibMultiLabel's own readers give), ``Y`` as 0/1 CSR; both
    ``csr_matrix`` (LibMultiLabel multiplies with ``*``, a product only for matrices)."""
    X = sp.csr_matrix(X, dtype=np.float64)
    X.sort_indices()
    return X, (None if Y is None else sp.csr_matrix(Y, dtype=np.float64))


def train(data: DataFiles, params: dict[str, Any], model_dir: Path, n_jobs: int) -> dict[str, Any]:
    from libmultilabel import linear

    X, Y = data.load_train()
    why = ovr_skip_reason(params, X.shape[1], Y.shape[1])
    if why:
        raise Unavailable(why)
    X, Y = as_inputs(X, Y)
    jit_s = _warm_up_jit()
    t = time.perf_counter()
    model = fit(X, Y, params)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    linear.save_pipeline(str(model_dir), None, model)
    info: dict[str, Any] = {"train_s": train_s, "save_s": time.perf_counter() - t}
    info["jit_warmup_s"] = jit_s
    if params["method"] == "1vsrest":
        info["weights_bytes"] = int(model.weights.nbytes)
    else:
        info["n_nodes"] = int(len(model.node_ptr) - 1)
        info["n_outputs"] = int(model.node_ptr[-1])  # labels + meta-labels
        info["weights_nnz"] = int(model.flat_model.weights.nnz)
    return info


def topk_ids(model: Any, X: sp.csr_matrix, k: int, beam_width: int | None) -> np.ndarray:
    """Top-k label ids of every row of ``X``, best first, ``(n, k)`` int64 (``-1`` padded
    when there are fewer than ``k`` labels), by ``predict_values`` and
    ``linear.get_topk_labels`` over slices of rows."""
    from libmultilabel import linear

    tree = beam_width is not None
    n_labels = len(model.root.label_map) if tree else model.weights.shape[1]
    width = int(model.node_ptr[-1]) if tree else n_labels  # dense columns of one slice
    step = max(1, min(BATCH_ROWS, BATCH_SCORE_BYTES // (8 * width)))
    kk = min(k, n_labels)
    mapping = np.arange(n_labels)
    out = np.full((X.shape[0], k), -1, dtype=np.int64)
    for a in range(0, X.shape[0], step):
        xb = X[a : a + step]
        if tree:
            scores = model.predict_values(xb, beam_width=beam_width)
        else:
            scores = model.predict_values(xb)
        out[a : a + xb.shape[0], :kk] = linear.get_topk_labels(scores, mapping, top_k=kk)[0]
    return out


class Predictor:
    """A LibMultiLabel model loaded with ``load_pipeline``; inputs are float64 CSR."""

    def __init__(self, model_dir: Path, params: dict[str, Any], n_jobs: int) -> None:
        from libmultilabel import linear

        _, self.model = linear.load_pipeline(str(model_dir / PIPELINE_FILE))
        self.beam = int(params["beam_width"]) if params["method"] == "tree" else None
        if self.beam is not None:
            # the tree splits its weights per subtree on its first pruned prediction: done
            # here, so that it counts in load_s rather than in the first timed call
            flat = self.model.flat_model
            n_features = flat.weights.shape[0] - (1 if flat.bias > 0 else 0)
            self.model.predict_values(sp.csr_matrix((1, n_features)), beam_width=self.beam)

    def prepare(self, X: sp.csr_matrix) -> sp.csr_matrix:
        return as_inputs(X)[0]

    def prepare_one(self, X: sp.csr_matrix, i: int) -> sp.csr_matrix:
        return as_inputs(X[i : i + 1])[0]

    def predict(self, prepared: sp.csr_matrix, k: int) -> np.ndarray:
        return topk_ids(self.model, prepared, k, self.beam)

    def to_ids(self, out: np.ndarray, n: int, k: int) -> np.ndarray:
        return out

    def set_threads(self, n: int) -> None:
        """Prediction is single-threaded in LibMultiLabel: nothing to set."""


def load(model_dir: Path, params: dict[str, Any], n_jobs: int) -> Predictor:
    return Predictor(model_dir, params, n_jobs)
