"""Per-library runners of the comparison benchmark (``benches/suite.py``).

Every runner module (``pecos``, ``omikuji``, ``napkinxc``, ``libmultilabel``, ``xmrrs``) has
the same small interface, driven by :mod:`runners.common` inside a worker process of its own:

- ``probe(params) -> dict``: the library's versions and its effective parameters; raises
  :class:`runners.common.Unavailable` when the library cannot be imported;
- ``train(data, params, model_dir, n_jobs) -> dict``: trains on ``data.load_train()`` (or
  on the XC text file, for omikuji), saves the model into ``model_dir`` and returns at least
  ``train_s`` (the training call only, no file parsing, no saving) and ``save_s``; it
  raises :class:`runners.common.Unavailable` when the row cannot run on this data set
  (the suite reports it as skipped, e.g. LibMultiLabel's one-vs-rest above its memory bound);
- ``load(model_dir, params, n_jobs) -> Predictor``: loads a saved model for prediction.

A ``Predictor`` has ``prepare(X)`` / ``prepare_one(X, i)`` (turn a CSR matrix or one of its
rows into the library's input; not timed), ``predict(prepared, k)`` (the timed call),
``to_ids(output, n, k)`` (the top-k label ids, best first, ``-1`` padded; not timed) and
``set_threads(n)``.

This package imports only the standard library at import time: the peers' runners run
with the python of ``benches/.venv-peers`` (numpy < 2), xmrrs's with xmrrs's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Which virtual environment each runner module needs.
ENV_OF_RUNNER = {
    "pecos": "peers",
    "omikuji": "peers",
    "napkinxc": "peers",
    "libmultilabel": "peers",
    "xmrrs": "xmrrs",
}

#: PECOS XR-Linear as in ``notes/anchors-results.md``: PIFA + hierarchical spherical k-means,
#: L2-loss SVM dual, tfn negatives, threshold 0.1, beam 10, l3-hinge, predict-only load.
PECOS_PARAMS: dict[str, Any] = {
    "label_embedding": "pifa",
    "nr_splits": 16,
    "max_leaf_size": 100,
    "spherical": True,
    "kmeans_max_iter": 20,
    "seed": 0,
    "solver_type": "L2R_L2LOSS_SVC_DUAL",
    "Cp": 1.0,
    "Cn": 1.0,
    "max_iter": 100,
    "eps": 0.1,
    "bias": 1.0,
    "threshold": 0.1,
    "negative_sampling_scheme": "tfn",
    "beam_size": 10,
    "post_processor": "l3-hinge",
    "is_predict_only": True,
}

#: Settings of omikuji's Bonsai mode (its README): unbalanced k-means, k = 100, depth 3.
OMIKUJI_BONSAI: dict[str, Any] = {"cluster_balanced": False, "cluster_k": 100, "max_depth": 3}

#: LIBLINEAR options of LibMultiLabel's rows: -s 1 (L2-regularised squared hinge, dual CD),
#: -B 1 (bias feature 1), -e 0.0001 (stopping tolerance), -q (quiet); C = 1 (the default).
LML_OPTIONS = "-s 1 -B 1 -e 0.0001 -q"

#: LibMultiLabel's tree (``linear.train_tree``; K and dmax are its defaults), beam 10.
LML_TREE: dict[str, Any] = {
    "method": "tree",
    "options": LML_OPTIONS,
    "K": 100,
    "dmax": 10,
    "beam_width": 10,
    "seed": 0,
}

#: LibMultiLabel's one-vs-rest (``linear.train_1vsrest``), whose dense float64 weights of
#: (n_features + 1) x n_labels are bounded: above ``max_weights_gib`` the row is skipped.
LML_1VSREST: dict[str, Any] = {
    "method": "1vsrest",
    "options": LML_OPTIONS,
    "seed": 0,
    "max_weights_gib": 8,
}

#: xmrrs with the settings of :data:`PECOS_PARAMS` (the names of ``XRLinearClassifier``).
XMRRS_PECOS_MATCHED: dict[str, Any] = {
    "representation": "pifa",
    "__pecos_tree__": (16, 100),  # branching = PECOS's fan-outs for the label count
    "max_leaf_size": 100,
    "kmeans_max_iter": 20,
    "loss": "squared_hinge",
    "Cp": 1.0,
    "Cn": 1.0,
    "max_iter": 100,
    "tol": 0.1,
    "bias": 1.0,
    "threshold": 0.1,
    "negatives": "tfn",
    "n_estimators": 1,
    "beam_size": 10,
    "post_processor": "l3-hinge",
}


@dataclass(frozen=True)
class Library:
    """One row of the comparison: a runner module with its parameters.

    Parameters
    ----------
    name : str
        Row label in the tables and plots.
    runner : str
        Runner module (a key of :data:`ENV_OF_RUNNER`).
    params : dict
        Parameters handed to the runner (its library's names).
    note : str
        One line for the table's notes.
    """

    name: str
    runner: str
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""


PEERS: tuple[Library, ...] = (
    Library(
        "pecos-xrlinear",
        "pecos",
        PECOS_PARAMS,
        "PECOS XR-Linear (libpecos): PIFA, nr_splits 16, max_leaf_size 100, L2-loss SVM dual "
        "Cp=Cn=1, threshold 0.1, tfn, beam 10, l3-hinge, predict-only load",
    ),
    Library(
        "omikuji-parabel",
        "omikuji",
        {},
        "omikuji with its defaults (Parabel: 3 trees, balanced 2-means, leaf 100, hinge); "
        "trains from the XC text file; weights densified (0.1) after loading; beam 10; "
        "one row per predict call",
    ),
    Library(
        "omikuji-bonsai",
        "omikuji",
        OMIKUJI_BONSAI,
        "omikuji in Bonsai mode (cluster_balanced=False, cluster_k=100, max_depth=3), "
        "otherwise as omikuji-parabel",
    ),
    Library(
        "napkinxc-plt",
        "napkinxc",
        {},
        "napkinXC PLT with its defaults (hierarchical 2-means, log loss, exact top-k search); "
        "fit() writes the model to disk, so its train_s includes saving",
    ),
    Library(
        "libmultilabel-tree",
        "libmultilabel",
        LML_TREE,
        "LibMultiLabel train_tree (K=100, dmax=10; k-means seeded through numpy's global RNG, "
        "seed 0), LIBLINEAR -s 1 -B 1 -e 0.0001, beam 10; trains on one thread per physical "
        "core whatever n_jobs (no option), predicts on one",
    ),
    Library(
        "libmultilabel-1vsrest",
        "libmultilabel",
        LML_1VSREST,
        "LibMultiLabel train_1vsrest, LIBLINEAR -s 1 -B 1 -e 0.0001: dense float64 weights "
        "(d+1) x L (the row is skipped above 8 GiB); trains on one thread per physical core "
        "whatever n_jobs (no option), predicts on one",
    ),
)

#: The xmrrs configurations compared by default.
XMRRS_CONFIGS: tuple[Library, ...] = (
    Library(
        "xmrrs-pecos-matched",
        "xmrrs",
        XMRRS_PECOS_MATCHED,
        "xmrrs XRLinearClassifier with PECOS's settings and tree shape "
        "(branching=xmrrs.indexing.pecos_fanouts(n_labels, 16, 100), e.g. 2,16,16 on deps)",
    ),
    Library(
        "xmrrs-defaults",
        "xmrrs",
        {},
        "xmrrs XRLinearClassifier with its defaults (2 mixed trees: one balanced of branching "
        "100 and leaves of 100, one unbalanced of fan-out 50 at the same depth; Cp=0.8, "
        "threshold 0.2)",
    ),
    Library(
        "xmrrs-single",
        "xmrrs",
        {"n_estimators": 1},
        "xmrrs XRLinearClassifier(n_estimators=1): its defaults with a single tree",
    ),
)
