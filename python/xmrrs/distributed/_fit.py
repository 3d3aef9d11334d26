"""Distributed training: the stages of :func:`fit` (blocks, label representation, trees,
models) and the estimator's fitted attributes and timings."""

from __future__ import annotations

import operator
import time
import warnings
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from xmrrs.distributed._blocks import _prepare
from xmrrs.distributed._budget import check_top_memory, top_share, worker_budget
from xmrrs.distributed._kmeans import _cluster_tree
from xmrrs.distributed._representation import ZPieces, _pifa_of
from xmrrs.distributed._run import _client, _Run
from xmrrs.distributed._train import _top_sample, _train_tree
from xmrrs.distributed._worker import _aligned
from xmrrs.estimator import XRLinearClassifier, check_representation, top_fraction
from xmrrs.indexing import ClusterTree, HierarchicalKMeans, label_representation
from xmrrs.sparse import normalize_rows


def _tree_rows(block: tuple[Any, ...], normalize: bool) -> tuple[Any, Any]:
    """``(rows, Y)`` of a HybridMatrix block for the label representation: its sparse block,
    rows renormalised alone when ``normalize`` (fit's tree input with dense_in_tree=False)."""
    x = _aligned(block[0]).sparse
    return (normalize_rows(x, n_jobs=1) if normalize else x), block[1]


def _build_tree(
    run: _Run,
    estimator: XRLinearClassifier,
    Z: Any,
    n_labels: int,
    p: dict[str, Any],
    i: int,
    first: Any,
    n_parts: int | None,
    timings: dict[str, Any],
    source: ZPieces | None = None,
    release: bool = False,
) -> ClusterTree:
    """Tree ``i`` as ``estimator`` builds it; hierarchical k-means below the root's split
    runs in tasks (other indexers on the client; ``source``, ``release``: see
    ``_cluster_tree``)."""
    if Z is None:
        return cast(ClusterTree, estimator._tree(Z, n_labels, p, i, first))
    indexer = estimator._indexer(p, i, first)
    if type(indexer) is not HierarchicalKMeans:
        return cast(ClusterTree, estimator._tree(Z, n_labels, p, i, first))
    tree = _cluster_tree(run, Z, indexer, i, n_parts, estimator.n_jobs, timings, source, release)
    estimator._check_tree(tree, n_labels)
    return tree


def fit(
    estimator: XRLinearClassifier,
    blocks: Sequence[Any],
    *,
    client: Any = None,
    retries: int = 2,
    n_parts: int | None = None,
    exact_representation: bool = True,
    progress: bool = False,
    top_memory: int | str | None = "auto",
) -> XRLinearClassifier:
    """Fit ``estimator`` on row blocks with a Dask client (see the module docs).

    Parameters
    ----------
    estimator : XRLinearClassifier
        Its parameters are used as ``fit`` uses them (``negatives`` must be ``"tfn"``); it is
        fitted in place and returned. ``n_jobs`` sets the threads of each task (None: the
        worker's thread count).
    blocks : sequence
        Row blocks, in order: ``(X_i, Y_i)`` pairs or ``(X_i, Y_i, relevance_i)`` triples
        (``X_i`` sparse, dense or a :class:`~xmrrs.hybrid.HybridMatrix`; with hybrid
        blocks the trees come from the sparse block, or with ``dense_in_tree=True`` from
        both, as in ``fit``),
        dask delayed objects (or pairs of them), XC file paths, or ``(x.npz, y.npz)``
        (``, r.npz``) path tuples; ``(x.npz, dense.npy, y.npz[, r.npz])`` makes ``X_i`` a
        ``HybridMatrix`` (the ``.npy`` file is mapped, never unpickled). ``Y_i``:
        indicator, label lists or class vector.
    client : distributed.Client, optional
        Default: the current client (``distributed.get_client()``).
    retries : int, default=2
        Retries of every task (a worker's death is handled by the scheduler as well).
    n_parts : int, optional
        Sub-tree tasks per tree and round, for training and for clustering, and label ranges
        of the PIFA chain (one chain each, so a task holds that share of the running sum);
        default: twice the number of workers.
    exact_representation : bool, default=True
        Chain the PIFA sums so that ``Z`` (hence the tree and the model) is bit-identical to
        one-process ``fit``; ``False`` sums partial products in parallel (tolerance 1e-6).
    progress : bool, default=False
        Show ``distributed.progress`` bars of the training tasks.
    top_memory : "auto", int or None, default="auto"
        Bytes the top layer's task may hold when the estimator's ``top_max_samples`` is
        None: ``"auto"``, half of the smallest worker ``memory_limit``; None, no bound (it
        gathers every row). When the gathered rows would not fit (2 copies of the blocks'
        arrays), the top layer trains on the share of the rows that does, with a warning:
        the model is then one-process ``fit`` with ``top_max_samples`` = that share
        (``timings_["top_share"]``).

    Returns
    -------
    estimator
        With ``models_``, ``tree_``, ``classes_``, ``n_iter_``, ``n_features_in_`` and
        ``timings_`` (seconds of the stages; ``top_share``: the share of the rows the top
        layer trained on; ``tasks``: ``(name, seconds)`` of each training
        task; ``kmeans``: the same for each sub-tree clustering task; ``subtrees``: per tree,
        the cost estimate of each level-1 sub-tree and its part).
    """
    if not isinstance(estimator, XRLinearClassifier):
        raise TypeError("estimator must be an XRLinearClassifier")
    p = estimator._check_params()
    if p["negatives"] != "tfn":
        raise ValueError(
            f"distributed training supports negatives='tfn' only, got {p['negatives']!r}"
        )
    top_memory = check_top_memory(top_memory)
    rep = estimator.representation
    if callable(rep) and not isinstance(rep, str):
        raise ValueError("distributed training needs a named or precomputed representation")
    for attr in (
        "models_",
        "tree_",
        "classes_",
        "n_iter_",
        "n_features_in_",
        "target_type_",
        "timings_",
    ):
        estimator.__dict__.pop(attr, None)
    run = _Run(_client(client), retries)
    timings: dict[str, Any] = {}
    t0 = time.perf_counter()
    prep = _prepare(run, blocks, bool(estimator.normalize))
    futs, block_rows, n_features, n_labels = prep.futs, prep.rows, prep.n_features, prep.n_labels
    timings["blocks"] = time.perf_counter() - t0
    n_rows = sum(block_rows)
    if p["top_max_samples"] is None:
        budget = worker_budget(run.client) if top_memory == "auto" else top_memory
        fraction = top_share(sum(prep.nbytes), cast(int | None, budget))
        if fraction < 1.0:
            warnings.warn(
                f"the top layer trains on a {fraction:.1%} sample of the rows: all "
                f"{sum(prep.nbytes) / 2**20:.0f} MiB of the blocks would not fit its task's "
                f"budget of {cast(int, budget) / 2**20:.0f} MiB; the model is fit's with "
                f"top_max_samples={fraction!r} (set top_max_samples or top_memory to choose)",
                UserWarning,
                stacklevel=2,
            )
    else:
        fraction = top_fraction(p["top_max_samples"], n_rows)
    timings["top_share"] = fraction
    t1 = time.perf_counter()
    y_all: sp.csr_matrix | None = None

    def gathered_y() -> sp.csr_matrix:
        nonlocal y_all
        if y_all is None:
            ys = run.client.gather(
                [run.submit(f"y{b}", operator.itemgetter(1), f) for b, f in enumerate(futs)]
            )
            y_all = sp.vstack([_aligned(y) for y in ys], format="csr")
        return y_all

    Z: Any
    source: ZPieces | None = None
    if isinstance(estimator.indexer, ClusterTree):
        if estimator.indexer.n_labels != n_labels:
            raise ValueError(
                f"the indexer tree has {estimator.indexer.n_labels} labels but Y has {n_labels}"
            )
        Z = None
    elif isinstance(rep, str) and rep == "pifa":
        # the rows PIFA is built from: a hybrid block's sparse block (normalised alone, as
        # fit's dense_in_tree=False does), else the block itself (both blocks of a hybrid one)
        tree_rows = (
            futs
            if prep.n_dense is None or estimator.dense_in_tree
            else [
                run.submit(f"tree-rows{b}", _tree_rows, f, bool(estimator.normalize))
                for b, f in enumerate(futs)
            ]
        )
        Z, source = _pifa_of(
            run, tree_rows, exact_representation, estimator.n_jobs, n_labels, n_parts
        )
        del tree_rows
    elif isinstance(rep, str):
        Z = label_representation(
            None,
            gathered_y(),
            cast(Any, rep),
            n_jobs=estimator.n_jobs,
            random_state=p["seed"],
        )
    else:
        Z = check_representation(rep, n_labels)
    timings["representation"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    n_est = p["n_estimators"]
    trees = [
        _build_tree(run, estimator, Z, n_labels, p, 0, None, n_parts, timings, source, n_est == 1)
    ]
    # with the PII view (more than 2 trees), trees 2, 4, ... are clustered on PII, not Z
    pii_view = n_est > 2 and estimator._pii_view(trees[0])
    Z_pii = (
        label_representation(None, gathered_y(), "pii", n_jobs=estimator.n_jobs)
        if pii_view
        else None
    )
    on_z = [i for i in range(1, n_est) if not (pii_view and i % 2 == 0)]
    for i in range(1, n_est):
        pii = i not in on_z
        trees.append(
            _build_tree(
                run,
                estimator,
                Z_pii if pii else Z,
                n_labels,
                p,
                i,
                trees[0],
                n_parts,
                timings,
                None if pii else source,
                i == on_z[-1],  # the last tree to read Z's pieces releases them
            )
        )
    del Z, Z_pii, y_all, source
    timings["trees"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    models, n_iter = [], []
    n_sparse = n_features - (prep.n_dense or 0)  # the models' sparse columns
    for i, tree in enumerate(trees):
        kw = {
            "loss": p["loss"],
            "cp": p["cp"],
            "cn": p["cn"],
            "max_iter": p["max_iter"],
            "tol": p["tol"],
            "bias": p["bias"],
            "threshold": p["threshold"],
            "negatives": "tfn",
            "seed": p["seed"] + i,
            "n_jobs": estimator.n_jobs,
            "dense_in_ranker": bool(estimator.dense_in_ranker),
        }
        top = _top_sample(run, futs, block_rows, p["seed"] + i, fraction, i)
        model, passes = _train_tree(
            run, futs, top, tree, kw, i, n_sparse, n_parts, progress, timings
        )
        models.append(model)
        n_iter.append(passes)
    timings["models"] = time.perf_counter() - t3
    estimator.n_iter_ = np.asarray(n_iter)
    estimator.models_ = models
    estimator.tree_ = trees[0]
    estimator.classes_ = prep.classes if prep.classes is not None else np.arange(n_labels)
    estimator.target_type_ = "multiclass" if prep.multiclass else "multilabel"
    estimator.n_features_in_ = n_features
    estimator.timings_ = timings
    return estimator
