"""Distributed training and batch inference on a 2-process Dask LocalCluster (issue 20).

The dev extra installs ``dask[distributed]``, so these run in CI; the data are small and the
cluster is shared by the module, so the whole file takes seconds.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed  # the dev extra installs dask[distributed]: these run in CI, no skip
import numpy as np
import pytest
import scipy.sparse as sp

import xmrrs
import xmrrs.distributed as dxm
from xmrrs import XRLinearClassifier
from xmrrs.datasets import make_xmc, save_npz
from xmrrs.hybrid import HybridMatrix
from xmrrs.indexing import ClusterTree, label_representation

N, D, L = 900, 1500, 120
SPLITS = (0, 250, 310, 900)  # uneven blocks


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def data() -> tuple[sp.csr_matrix, sp.csr_matrix]:
    X, Y = make_xmc(N, D, L, random_state=3)
    return X, Y


def blocks(X: Any, Y: Any) -> list[tuple[Any, Any]]:
    return [(X[a:b], Y[a:b]) for a, b in itertools.pairwise(SPLITS)]


def same_models(a: XRLinearClassifier, b: XRLinearClassifier) -> None:
    assert len(a.models_) == len(b.models_)
    for ma, mb in zip(a.models_, b.models_, strict=True):
        assert ma.to_bytes() == mb.to_bytes()
    assert a.tree_ == b.tree_
    np.testing.assert_array_equal(a.classes_, b.classes_)
    assert a.n_features_in_ == b.n_features_in_
    np.testing.assert_allclose(a.n_iter_, b.n_iter_)


def params(**kw: Any) -> dict[str, Any]:
    base = {"branching": 4, "max_leaf_size": 8, "n_jobs": 1, "max_iter": 20}
    base.update(kw)
    return base


def test_import_xmrrs_does_not_import_dask() -> None:
    code = (
        "import sys, xmrrs, xmrrs.estimator, xmrrs.indexing, xmrrs.modelfile, xmrrs.cli\n"
        "assert not any(m == 'dask' or m.startswith(('dask.', 'distributed')) "
        "for m in sys.modules), sorted(m for m in sys.modules if 'dask' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "distributed" not in xmrrs.__all__


def test_pifa_chain_is_bit_identical_and_the_parallel_sum_close(client: Any, data: Any) -> None:
    X, Y = data
    Xn = sp.csr_matrix(X / sp.linalg.norm(X, axis=1)[:, None], dtype=np.float32)
    ref = label_representation(Xn, Y, "pifa", n_jobs=1)
    # one chain per label range (default: 2 per worker), one chain, uneven ranges
    for n_parts in (None, 1, 7):
        exact = dxm.pifa(blocks(Xn, Y), client=client, normalize=False, n_parts=n_parts)
        assert (exact != ref).nnz == 0
        np.testing.assert_array_equal(exact.indptr, ref.indptr)
        np.testing.assert_array_equal(exact.indices, ref.indices)
        assert exact.data.tobytes() == ref.data.tobytes()
    loose = dxm.pifa(blocks(Xn, Y), client=client, exact=False, normalize=False)
    np.testing.assert_allclose(loose.toarray(), ref.toarray(), rtol=1e-5, atol=1e-7)


def test_fit_is_bit_identical_to_one_process(client: Any, data: Any, tmp_path: Path) -> None:
    """3 mixed trees (PIFA, unbalanced, PII: every kind of tree) on uneven blocks."""
    X, Y = data
    one = XRLinearClassifier(**params(n_estimators=3)).fit(X, Y)
    assert one.tree_.depth >= 2
    dist = dxm.fit(
        XRLinearClassifier(**params(n_estimators=3)), blocks(X, Y), client=client, progress=True
    )
    same_models(one, dist)
    # an ordinary model: save, map, serve
    dist.save(tmp_path / "m")
    back = XRLinearClassifier.load(tmp_path / "m", mmap=True)
    ids, scores = one.predict_topk(X[:50], k=5)
    ids2, scores2 = back.predict_topk(X[:50], k=5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_array_equal(scores, scores2)
    # the task names say which part of which tree they trained
    names = [n for n, _ in dist.timings_["tasks"]]
    assert names[0] == "t0-top" and any(n.startswith("t2-part") for n in names)


def test_subtree_rows_of_z_come_from_the_pieces_on_the_workers(
    client: Any, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the chained PIFA, the k-means parts take their rows of ``Z`` from the label-range
    pieces where those live (the client does not send ``Z`` back), including rows filled for
    labels without a training row; the model is still the one-process model."""
    import xmrrs.distributed._kmeans as dk

    X, Y = data
    # two labels without a positive row: their PIFA rows are filled with the mean direction
    Y = sp.hstack([Y, sp.csr_matrix((Y.shape[0], 2), dtype=Y.dtype)], format="csr")
    kw = params(n_estimators=3)
    one = XRLinearClassifier(**kw).fit(X, Y)
    calls: list[str] = []

    def spy(run: Any, name: str, *a: Any, **k: Any) -> Any:
        calls.append(name)
        return zrows_task(run, name, *a, **k)

    zrows_task = dk.zrows_task
    monkeypatch.setattr(dk, "zrows_task", spy)
    # Z reaches the client in slices of a few rows (as a big Z does in slices of 128 MiB)
    monkeypatch.setattr(dxm._representation, "_FETCH_BYTES", 4096)
    dist = dxm.fit(XRLinearClassifier(**kw), blocks(X, Y), client=client, n_parts=3)
    same_models(one, dist)
    # trees 0 and 1 are clustered on PIFA (their parts from the pieces), tree 2 on PII
    assert sorted({c.split("-")[1] for c in calls}) == ["t0", "t1"]


def test_top_layer_on_a_sample_is_bit_identical_and_gathers_only_the_sample(
    client: Any, data: Any
) -> None:
    """``top_max_samples``: each block sends its sampled rows to the top task, and the
    model is the one-process model with the same setting (which differs from every row's)."""
    X, Y = data
    kw = params(n_estimators=2, top_max_samples=0.4)
    one = XRLinearClassifier(**kw).fit(X, Y)
    full = XRLinearClassifier(**params(n_estimators=2)).fit(X, Y)
    assert one.models_[0].to_bytes() != full.models_[0].to_bytes()
    dist = dxm.fit(XRLinearClassifier(**kw), blocks(X, Y), client=client)
    same_models(one, dist)
    # an int is a number of rows: 360 of 900 is the same share
    dist = dxm.fit(
        XRLinearClassifier(**params(n_estimators=2, top_max_samples=360)),
        blocks(X, Y),
        client=client,
    )
    same_models(one, dist)
    # the sample's rows, picked block by block, are the rows one selection over all keeps
    seed = 0
    whole = xmrrs._xmrrs.xr_top_sample_rows(seed, 0, N, 0.4)
    pieced = np.concatenate(
        [
            a + xmrrs._xmrrs.xr_top_sample_rows(seed, a, b - a, 0.4)
            for a, b in itertools.pairwise(SPLITS)
        ]
    )
    np.testing.assert_array_equal(whole, pieced)
    assert 0.3 * N < len(whole) < 0.5 * N
    for bad in ((0, 10, 0.0), (0, 10, 1.5), (2**64 - 5, 10, 0.5), (0, 2**33, 0.5)):
        with pytest.raises(ValueError):
            xmrrs._xmrrs.xr_top_sample_rows(seed, *bad)


def _unaligned(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` at an odd byte offset (as Dask may deserialise it)."""
    buf = bytearray(a.nbytes + 1)
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def test_a_hybrid_running_sum_deserialised_unaligned_is_realigned(data: Any) -> None:
    """The PIFA chain of HybridMatrix blocks passes a (sparse, dense) pair between tasks;
    arrays of both members that arrive unaligned are copied before the core reads them."""
    from xmrrs.distributed._representation import _pifa_step
    from xmrrs.distributed._worker import _aligned

    X, Y = data
    D = np.random.default_rng(2).standard_normal((N, 4)).astype(np.float32)
    H = HybridMatrix(X, D)
    first = _pifa_step(None, (H[:300], Y[:300]))
    zs, zd = first
    odd = (
        sp.csr_matrix(
            (_unaligned(zs.data), _unaligned(zs.indices), _unaligned(zs.indptr)), shape=zs.shape
        ),
        _unaligned(zd),
    )
    fixed = _aligned(odd)
    assert fixed[0].data.flags.aligned and fixed[1].flags.aligned
    a = _pifa_step(odd, (H[300:], Y[300:]))
    b = _pifa_step(first, (H[300:], Y[300:]))
    assert a[0].data.tobytes() == b[0].data.tobytes() and a[1].tobytes() == b[1].tobytes()
    whole = _pifa_step(None, (H, Y))
    assert whole[1].tobytes() == b[1].tobytes()  # the chain sums as the whole product does


def test_top_task_trains_on_the_share_of_rows_that_fits_its_budget(client: Any, data: Any) -> None:
    """``top_memory``: when the gathered blocks would not fit, the top layer trains on the
    share that does (a warning says so), and the model is the one-process model with
    ``top_max_samples`` set to that share; "auto" on this cluster (GiBs per worker) gathers
    every row; a budget too small for 1% of the rows is an error before any training."""
    from xmrrs.distributed import _budget

    X, Y = data
    kw = params(n_estimators=2)
    auto = dxm.fit(XRLinearClassifier(**kw), blocks(X, Y), client=client)
    assert auto.timings_["top_share"] == 1.0
    limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
    assert _budget.worker_budget(client) == min(limits) // 2
    # the blocks as the tasks hold them: float32 values, int32 indices
    Xn = sp.csr_matrix(X / sp.linalg.norm(X, axis=1)[:, None], dtype=np.float32)
    size = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in (Xn, Y.tocsr()))
    budget = int(_budget.TOP_COPIES * size * 0.5)
    with pytest.warns(UserWarning, match="sample of the rows"):
        dist = dxm.fit(XRLinearClassifier(**kw), blocks(X, Y), client=client, top_memory=budget)
    share = dist.timings_["top_share"]
    assert 0.3 < share < 0.7, share
    one = XRLinearClassifier(**params(n_estimators=2, top_max_samples=share)).fit(X, Y)
    same_models(one, dist)
    assert auto.models_[0].to_bytes() != dist.models_[0].to_bytes()
    # the estimator's own top_max_samples wins over the budget, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        own = dxm.fit(
            XRLinearClassifier(**params(n_estimators=2, top_max_samples=0.4)),
            blocks(X, Y),
            client=client,
            top_memory=budget,
        )
    assert own.timings_["top_share"] == 0.4
    with pytest.raises(ValueError, match="top_memory"):
        dxm.fit(XRLinearClassifier(**kw), blocks(X, Y), client=client, top_memory=size // 100)
    for bad in (0, -5, 1.5, "all", True):
        with pytest.raises(ValueError, match="top_memory"):
            dxm.fit(XRLinearClassifier(**kw), blocks(X, Y), client=client, top_memory=bad)
    assert _budget.top_share(10, None) == 1.0
    assert _budget.top_share(10, 20) == 1.0
    assert _budget.top_share(100, 50) == 0.25


def test_subtree_kmeans_runs_in_tasks(
    client: Any, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the root's split the hierarchical k-means runs in the tasks, and the trees (so
    the models) are those of one-process fit: deep balanced trees (every level in one round),
    deep unbalanced ones (two levels a round: the mixed ensemble's trees 1 and 2), dense Z."""
    X, Y = data
    for kw, rounds in (
        # depth 5: tree 0 balanced, levels 1-4 in one round; trees 1 and 2 unbalanced
        (
            params(branching=2, max_leaf_size=4, n_estimators=3),
            ["t0-l1_4", "t1-l1_2", "t1-l3_4", "t2-l3_4"],
        ),
        (params(branching=3, max_leaf_size=5, n_estimators=1, representation="spectral"), []),
    ):
        one = XRLinearClassifier(**kw).fit(X, Y)
        assert one.tree_.depth >= 3
        client.run(lambda: dxm._SPLITS.clear())
        assert not any(client.run(lambda: len(dxm._SPLITS)).values())
        dxm._SPLITS.clear()
        with monkeypatch.context() as m, distributed.get_task_stream(client=client) as ts:

            def no_whole_tree(*a: Any, **k: Any) -> None:
                raise AssertionError("the client ran the whole hierarchical k-means")

            m.setattr(xmrrs._xmrrs, "hierarchical_kmeans", no_whole_tree)
            dist = dxm.fit(XRLinearClassifier(**kw), blocks(X, Y), client=client, n_parts=3)
        same_models(one, dist)
        # the client split each tree's root only; the tasks every level below
        assert dxm._SPLITS == [(0, 1, 1)] * len(one.models_)
        on_workers = [s for v in client.run(lambda: list(dxm._SPLITS)).values() for s in v]
        assert all(a >= 1 for a, _, _ in on_workers)
        for lvl in range(1, one.tree_.depth):
            assert any(a <= lvl < a + n for a, n, _ in on_workers), lvl
        # task keys name the tree, the levels and the level-1 nodes of their part
        keys = [str(t["key"]) for t in ts.data if str(t["key"]).startswith("xmrrs-kmeans-")]
        assert keys and all(
            re.match(r"xmrrs-kmeans-t\d+-l\d+_\d+-n\d+_\d+-part\d+-", k) for k in keys
        )
        for r in rounds:
            assert any(k.startswith(f"xmrrs-kmeans-{r}-") for k in keys), (r, keys)
        assert len(dist.timings_["kmeans"]) == len(keys)


def test_given_tree_one_leaf_tree_and_other_losses(client: Any, data: Any) -> None:
    X, Y = data
    tree = XRLinearClassifier(**params(n_estimators=1)).fit(X, Y).tree_
    for kw in (
        {"indexer": tree, "n_estimators": 1, "loss": "logistic"},
        {"max_leaf_size": L, "n_estimators": 1},  # a single leaf: one task, every row
        {"n_estimators": 2, "ensemble": "seeds", "normalize": False, "representation": "pii"},
    ):
        one = XRLinearClassifier(**params(**kw)).fit(X, Y)
        empty = [(X[:0], Y[:0])]  # an empty block changes nothing
        dist = dxm.fit(
            XRLinearClassifier(**params(**kw)), blocks(X, Y) + empty, client=client, n_parts=3
        )
        same_models(one, dist)
    assert isinstance(tree, ClusterTree)


def test_delayed_blocks_and_shard_files(client: Any, data: Any, tmp_path: Path) -> None:
    import dask

    X, Y = data
    kw = params(n_estimators=1)
    one = XRLinearClassifier(**kw).fit(X, Y)
    delayed = [
        dask.delayed(lambda a, b: (X[a:b], Y[a:b]))(a, b) for a, b in itertools.pairwise(SPLITS)
    ]
    same_models(one, dxm.fit(XRLinearClassifier(**kw), delayed, client=client))
    shards = []
    for i, (xb, yb) in enumerate(blocks(X, Y)):
        xp, yp = tmp_path / f"x{i}.npz", tmp_path / f"y{i}.npz"
        save_npz(xp, yp, xb, yb)
        shards.append((str(xp), str(yp)))
    same_models(one, dxm.fit(XRLinearClassifier(**kw), shards, client=client))


def test_label_lists_class_vectors_and_relevance_as_in_one_process(
    client: Any, data: Any, tmp_path: Path
) -> None:
    """Label-list and class-vector ``Y`` blocks are encoded over the union of their names
    (each block sees only some of them), and relevance travels with the rows: the models,
    ``classes_`` and predictions are those of one-process ``fit``."""
    X, Y = data
    kw = params(n_estimators=2)
    names = np.array([f"tag{j:03d}" for j in range(Y.shape[1])])
    lists = [list(names[Y[i].indices]) for i in range(Y.shape[0])]
    one = XRLinearClassifier(**kw).fit(X, lists)
    pieces = [(X[a:b], lists[a:b]) for a, b in itertools.pairwise(SPLITS)]
    assert len({n for _, ls in pieces[:1] for r in ls for n in r}) < len(one.classes_)
    dist = dxm.fit(XRLinearClassifier(**kw), pieces, client=client)
    same_models(one, dist)
    assert dist.target_type_ == "multilabel"
    np.testing.assert_array_equal(dist.predict(X[:20]).toarray(), one.predict(X[:20]).toarray())

    y = np.array([f"c{int(np.argmax(Y[i].toarray())) % 9}" for i in range(Y.shape[0])])
    one = XRLinearClassifier(**kw).fit(X, y)
    dist = dxm.fit(
        XRLinearClassifier(**kw),
        [(X[a:b], y[a:b]) for a, b in itertools.pairwise(SPLITS)],
        client=client,
    )
    same_models(one, dist)
    assert dist.target_type_ == "multiclass"
    np.testing.assert_array_equal(dist.predict(X[:20]), one.predict(X[:20]))

    rng = np.random.default_rng(0)
    R = Y.copy().astype(np.float32)
    R.data = rng.uniform(0.2, 3.0, R.nnz).astype(np.float32)
    for extra in ({}, {"top_max_samples": 0.5}):
        one = XRLinearClassifier(**kw, **extra).fit(X, Y, relevance=R)
        plain = XRLinearClassifier(**kw, **extra).fit(X, Y)
        assert one.models_[0].to_bytes() != plain.models_[0].to_bytes()
        triples = [(X[a:b], Y[a:b], R[a:b]) for a, b in itertools.pairwise(SPLITS)]
        same_models(one, dxm.fit(XRLinearClassifier(**kw, **extra), triples, client=client))
    shards = []
    for i, (xb, yb, rb) in enumerate(triples):
        xp, yp, rp = (tmp_path / f"{c}{i}.npz" for c in "xyr")
        save_npz(xp, yp, xb, yb)
        sp.save_npz(rp, rb)
        shards.append((str(xp), str(yp), str(rp)))
    one = XRLinearClassifier(**kw).fit(X, Y, relevance=R)
    same_models(one, dxm.fit(XRLinearClassifier(**kw), shards, client=client))

    bad = (
        ([triples[0], (X[250:], Y[250:])], "every block or none"),
        ([(X[:400], lists[:400]), (X[400:], Y[400:])], "mix indicator"),
        ([(X[:400], lists[:400]), (X[400:], y[400:])], "mix label lists"),
        ([(X[:400], lists[:400], R[:400])], "relevance needs Y as an indicator"),
        ([(X[:400], Y[:400], R[:400, :5])], "relevance has shape"),
    )
    for b, match in bad:
        with pytest.raises(ValueError, match=match):
            dxm.fit(XRLinearClassifier(**kw), b, client=client)


def test_hybrid_blocks_train_the_one_process_model(client: Any, data: Any, tmp_path: Path) -> None:
    """HybridMatrix blocks (a sparse and a dense block): the model is byte-identical to
    ``fit`` on the whole HybridMatrix (two mixed trees; the ranker with and without the
    dense block, the top layer on all rows and on a sample), and batch inference over
    hybrid blocks answers as ``predict_topk``."""
    X, Y = data
    D = np.random.default_rng(0).standard_normal((N, 6)).astype(np.float32) * 0.3
    H = HybridMatrix(X, D)  # rows not of unit norm: fit normalises both blocks together
    assert not H.rows_are_unit()
    hblocks = [(H[a:b], Y[a:b]) for a, b in itertools.pairwise(SPLITS)]
    for kw in (
        params(n_estimators=2),
        params(n_estimators=2, dense_in_ranker=False, top_max_samples=0.5),
    ):
        one = XRLinearClassifier(**kw).fit(H, Y)
        dist = dxm.fit(XRLinearClassifier(**kw), hblocks, client=client)
        same_models(one, dist)
        assert [m.n_dense for m in dist.models_] == [6, 6]
    # with a relevance matrix and an empty block
    R = Y.copy()
    R.data = np.random.default_rng(1).uniform(0.5, 2.0, R.nnz).astype(np.float32)
    kw = params(n_estimators=1)
    rblocks = [(H[:0], Y[:0], R[:0])] + [
        (H[a:b], Y[a:b], R[a:b]) for a, b in itertools.pairwise(SPLITS)
    ]
    same_models(
        XRLinearClassifier(**kw).fit(H, Y, relevance=R),
        dxm.fit(XRLinearClassifier(**kw), rblocks, client=client),
    )
    one.save(tmp_path / "h")
    ids, scores = dxm.predict_topk(tmp_path / "h", [H[:300], H[300:]], k=5, client=client)
    want_ids, want_scores = one.predict_topk(H, k=5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    with pytest.raises(ValueError, match="mix HybridMatrix"):
        dxm.fit(XRLinearClassifier(**params()), [hblocks[0], (X[250:], Y[250:])], client=client)
    # the trees from both blocks (dense_in_tree=True): PIFA chained over the pair of sums
    # (the second time behind an empty first block)
    for kw, bl in (
        (params(n_estimators=2, dense_in_tree=True), hblocks),
        (params(dense_in_tree=True), [(H[:0], Y[:0]), *hblocks]),
    ):
        one = XRLinearClassifier(**kw).fit(H, Y)
        dist = dxm.fit(XRLinearClassifier(**kw), bl, client=client)
        same_models(one, dist)
        sparse_tree = XRLinearClassifier(**params(n_estimators=2)).fit(H, Y).tree_
        assert one.tree_ != sparse_tree, "the dense block must change the tree"
    Hn = H.scaled_to_unit()
    for n_parts in (None, 1, 5):
        z = dxm.pifa(hblocks, client=client, n_parts=n_parts)
        ref = label_representation(Hn, Y, "pifa", n_jobs=1)
        np.testing.assert_array_equal(z.indptr, ref.indptr)
        np.testing.assert_array_equal(z.indices, ref.indices)
        assert z.data.tobytes() == ref.data.tobytes()
    loose = dxm.pifa(hblocks, client=client, exact=False)
    np.testing.assert_allclose(loose.toarray(), ref.toarray(), rtol=1e-5, atol=1e-6)
    # the scaling decision is Z's as a whole, as HybridMatrix.normalized takes it: label
    # rows of norm 1 + 5e-5 (one positive row each) stay as they are, unless one label
    # anywhere is not of unit norm; then every range scales every row, its own all-unit
    # rows too
    m = 120
    Hu = HybridMatrix(Hn.sparse[:m] * (1 + 5e-5), Hn.dense[:m] * np.float32(1 + 5e-5))
    ub = [(Hu[a:b], sp.identity(m, format="csr")[a:b]) for a, b in ((0, 50), (50, 90), (90, m))]
    Yu = sp.identity(m, dtype=np.float32, format="lil")
    Yu[0, 1] = 1.0  # label 1 has two rows: its sum is not of unit norm
    mixed = [(Hu[a:b], Yu.tocsr()[a:b]) for a, b in ((0, 50), (50, 90), (90, m))]
    for bl, y in ((ub, sp.identity(m, format="csr")), (mixed, Yu.tocsr())):
        ref = label_representation(Hu, y, "pifa", n_jobs=1)
        z = dxm.pifa(bl, client=client, normalize=False, n_parts=6)
        np.testing.assert_array_equal(z.indices, ref.indices)
        assert z.data.tobytes() == ref.data.tobytes()
    unit = label_representation(Hu, sp.identity(m, format="csr"), "pifa", n_jobs=1)
    assert unit.data.tobytes() != ref.data.tobytes()  # the two decisions differ here


def test_hybrid_shard_files(client: Any, data: Any, tmp_path: Path) -> None:
    """``(x.npz, dense.npy, y.npz[, r.npz])`` shards train the model of ``fit`` on the whole
    ``HybridMatrix``, ``(x.npz, dense.npy)`` blocks predict as ``predict_topk``, and a bad
    ``.npy`` file (pickled objects, wrong rows, 1-D, a header larger than the file, an
    archive) is refused with an error naming it."""
    X, Y = data
    D = np.random.default_rng(5).standard_normal((N, 4))  # float64: converted to float32
    H = HybridMatrix(X, D)
    R = Y.copy()
    R.data = np.random.default_rng(6).uniform(0.5, 2.0, R.nnz).astype(np.float32)
    kw = params(n_estimators=2)
    shards, triples, pred = [], [], []
    for i, (a, b) in enumerate(itertools.pairwise(SPLITS)):
        xp, dp = tmp_path / f"x{i}.npz", tmp_path / f"d{i}.npy"
        yp, rp = tmp_path / f"y{i}.npz", tmp_path / f"r{i}.npz"
        save_npz(xp, yp, X[a:b], Y[a:b])
        np.save(dp, D[a:b])
        sp.save_npz(rp, R[a:b])
        shards.append((str(xp), str(dp), str(yp)))
        triples.append((str(xp), str(dp), str(yp), str(rp)))
        pred.append((str(xp), str(dp)))
    one = XRLinearClassifier(**kw).fit(H, Y)
    dist = dxm.fit(XRLinearClassifier(**kw), shards, client=client)
    same_models(one, dist)
    assert [m.n_dense for m in dist.models_] == [4, 4]
    same_models(
        XRLinearClassifier(**kw).fit(H, Y, relevance=R),
        dxm.fit(XRLinearClassifier(**kw), triples, client=client),
    )
    one.save(tmp_path / "hm")
    ids, scores = dxm.predict_topk(tmp_path / "hm", pred, k=5, client=client)
    want_ids, want_scores = one.predict_topk(H, k=5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)

    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * SPLITS[1], dtype=object))
    np.save(tmp_path / "short.npy", D[:10])
    np.save(tmp_path / "flat.npy", D[: SPLITS[1], 0])
    big = tmp_path / "big.npy"
    np.save(big, D[: SPLITS[1]])
    big.write_bytes(big.read_bytes()[:200])  # the header promises more rows than the file
    with open(tmp_path / "arch.npy", "wb") as f:
        np.savez(f, d=D[: SPLITS[1]])  # an .npz archive under a .npy name
    for name, match in (
        ("obj.npy", "obj.npy: not a readable"),
        ("short.npy", "short.npy holds a float64 array of shape"),
        ("flat.npy", "flat.npy holds"),
        ("big.npy", "big.npy: not a readable"),
        ("arch.npy", "arch.npy: not a readable"),
    ):
        bad = [(shards[0][0], str(tmp_path / name), shards[0][2])]
        with pytest.raises(ValueError, match=re.escape(match)):
            dxm.fit(XRLinearClassifier(**kw), bad, client=client, retries=0)
    with pytest.raises(ValueError, match=re.escape("needs a y.npz")):
        dxm.fit(XRLinearClassifier(**kw), [pred[0]], client=client, retries=0)


def test_batch_inference_over_blocks(client: Any, data: Any, tmp_path: Path) -> None:
    X, Y = data
    clf = XRLinearClassifier(**params(n_estimators=2)).fit(X[:700], Y[:700])
    clf.save(tmp_path / "m")
    Xt = X[700:]
    parts = [Xt[:80], Xt[80:81], Xt[81:]]
    ids, scores = dxm.predict_topk(tmp_path / "m", parts, k=7, client=client)
    ref_ids, ref_scores = clf.predict_topk(Xt, k=7)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)
    # the model is loaded once per worker process, mapped
    # (other tests' models may be in a worker's cache too)
    loaded = client.run(lambda: [m.models_[0].is_mmap for m in dxm._MODELS.values()])
    assert any(loaded.values()) and all(all(v) for v in loaded.values())


def test_bad_settings_are_rejected(client: Any, data: Any) -> None:
    X, Y = data
    with pytest.raises(ValueError, match="tfn"):
        dxm.fit(XRLinearClassifier(negatives="man"), blocks(X, Y), client=client)
    with pytest.raises(ValueError, match="disagree"):
        dxm.fit(
            XRLinearClassifier(**params()),
            [(X[:10], Y[:10]), (X[10:20], Y[10:20, :5])],
            client=client,
        )
    with pytest.raises(ValueError, match="block"):
        dxm.fit(XRLinearClassifier(**params()), [X], client=client)


def kill_a_busy_worker(client: Any, prefix: str, timeout: float = 30.0) -> None:
    """SIGKILL the process of a worker while it runs a task whose key starts with prefix."""
    pids = client.run(os.getpid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for addr, keys in client.processing().items():
            if any(str(k).startswith(prefix) for k in keys) and addr in pids:
                time.sleep(0.2)  # let it start
                os.kill(pids[addr], signal.SIGKILL)
                return
        time.sleep(0.02)
    raise AssertionError(f"no task {prefix}* ran")


def test_a_worker_killed_mid_job_changes_nothing(client: Any, data: Any, tmp_path: Path) -> None:
    X, Y = data
    kw = params(n_estimators=1)
    one = XRLinearClassifier(**kw).fit(X, Y)
    one.save(tmp_path / "m")
    client.run(dxm._set_task_delay, 1.0)
    try:
        out: dict[str, Any] = {}
        job = threading.Thread(
            target=lambda: out.update(
                m=dxm.fit(XRLinearClassifier(**kw), blocks(X, Y), client=client, retries=2)
            )
        )
        job.start()
        kill_a_busy_worker(client, "xmrrs-subtrees")
        job.join(120)
        same_models(one, out["m"])
        client.wait_for_workers(2, timeout=60)
        client.run(dxm._set_task_delay, 1.0)
        job = threading.Thread(
            target=lambda: out.update(
                p=dxm.predict_topk(
                    tmp_path / "m", [X[:300], X[300:600], X[600:]], k=5, client=client
                )
            )
        )
        job.start()
        kill_a_busy_worker(client, "xmrrs-predict")
        job.join(120)
        ids, scores = one.predict_topk(X, k=5)
        np.testing.assert_array_equal(out["p"][0], ids)
        np.testing.assert_array_equal(out["p"][1], scores)
    finally:
        client.wait_for_workers(2, timeout=60)
        client.run(dxm._set_task_delay, 0.0)
