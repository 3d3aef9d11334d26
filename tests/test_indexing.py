"""Label indexing: label representations, the cluster tree and hierarchical k-means."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from xmrrs import XRLinearClassifier
from xmrrs.indexing import ClusterTree, HierarchicalKMeans, label_representation, pecos_fanouts


def planted(n_labels: int, k: int, dim: int, seed: int, noise: float = 0.15) -> tuple:
    """Labels drawn around ``k`` well-separated unit directions (dense, rows unit-norm)."""
    rng = np.random.default_rng(seed)
    centers = np.linalg.qr(rng.standard_normal((dim, k)))[0].T  # orthonormal
    truth = np.arange(n_labels) % k
    z = centers[truth] + noise * rng.standard_normal((n_labels, dim)) / math.sqrt(dim)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return z.astype(np.float32), truth


def check_tree(tree: ClusterTree, n_labels: int, branching: int, max_leaf: int, balanced: bool):
    assert tree.n_labels == n_labels
    leaf = tree.leaf_of_label
    assert leaf.shape == (n_labels,)
    # every label in exactly one leaf
    assert np.array_equal(np.sort(tree.labels), np.arange(n_labels))
    sizes = np.diff(tree.leaf_ptr.astype(np.int64))
    assert sizes.min() >= 1 and sizes.max() <= max_leaf
    for t in range(tree.depth):
        fan = np.diff(tree.child_ptrs[t].astype(np.int64))
        assert fan.min() >= 1 and fan.max() <= branching
    assert tree.n_nodes_per_level[0] == 1
    if balanced:
        # sizes of siblings (at every level) differ by at most one
        counts = sizes
        for t in reversed(range(tree.depth)):
            ptr = tree.child_ptrs[t].astype(np.int64)
            for a, b in itertools.pairwise(ptr):
                sib = counts[a:b]
                assert sib.max() - sib.min() <= 1, (t, sib)
            counts = np.add.reduceat(counts, ptr[:-1])
        assert sizes.max() - sizes.min() <= 1
    for i in range(tree.n_leaves):
        labs = tree.labels_of_leaf(i)
        assert np.all(leaf[labs] == i)


# --------------------------------------------------------------------------------------------
# hierarchical k-means: invariants, determinism, quality
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("branching", [2, 3, 16])
@pytest.mark.parametrize("n_labels", [1, 2, 7, 100, 1000])
@pytest.mark.parametrize("balanced", [True, False])
def test_tree_invariants(branching: int, n_labels: int, balanced: bool) -> None:
    z, _ = planted(n_labels, 8, 16, seed=n_labels)
    for max_leaf in (1, 10):
        hk = HierarchicalKMeans(branching, max_leaf, balanced=balanced, max_iter=5, n_jobs=2)
        tree = hk.fit(z).tree_
        check_tree(tree, n_labels, branching, max_leaf, balanced)
        expect_depth = 0
        while branching**expect_depth * max_leaf < n_labels:
            expect_depth += 1
        assert tree.depth == expect_depth


@settings(max_examples=25, deadline=None)
@given(
    n_labels=st.integers(1, 300),
    dim=st.integers(1, 20),
    branching=st.integers(2, 9),
    max_leaf=st.integers(1, 40),
    spherical=st.booleans(),
    balanced=st.booleans(),
    sparse=st.booleans(),
    seed=st.integers(0, 2**64 - 1),
)
def test_tree_invariants_random(
    n_labels: int,
    dim: int,
    branching: int,
    max_leaf: int,
    spherical: bool,
    balanced: bool,
    sparse: bool,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed % 2**32)
    z = rng.standard_normal((n_labels, dim)).astype(np.float32)
    z[rng.random(z.shape) < 0.5] = 0.0  # zero rows and duplicates happen
    zz = sp.csr_matrix(z) if sparse else z
    hk = HierarchicalKMeans(branching, max_leaf, spherical, balanced, 4, seed, n_jobs=2)
    tree = hk.fit(zz).tree_
    check_tree(tree, n_labels, branching, max_leaf, balanced)


def test_deterministic_across_n_jobs_and_runs() -> None:
    z, _ = planted(3000, 8, 32, seed=1)
    zs = sp.csr_matrix(z)
    for data in (z, zs):
        trees = [
            HierarchicalKMeans(4, 20, n_jobs=j, random_state=7).fit(data).tree_ for j in (1, 3, 2)
        ]
        assert trees[0] == trees[1] == trees[2]
        again = HierarchicalKMeans(4, 20, n_jobs=2, random_state=7).fit(data).tree_
        assert again == trees[0]
    other = HierarchicalKMeans(4, 20, random_state=8).fit(z).tree_
    assert other != trees[0]


def test_planted_clusters_are_recovered() -> None:
    z, truth = planted(4000, 8, 64, seed=3, noise=0.5)
    tree = HierarchicalKMeans(branching=8, max_leaf_size=500, n_jobs=2).fit(sp.csr_matrix(z)).tree_
    assert tree.n_nodes_per_level == [1, 8]
    leaf = tree.leaf_of_label
    purity = sum(np.bincount(truth[leaf == c], minlength=8).max() for c in range(8)) / 4000
    assert purity > 0.95


def _mean_cos_to_leaf_centroid(z: np.ndarray, leaf: np.ndarray) -> float:
    total = 0.0
    for c in np.unique(leaf):
        rows = z[leaf == c]
        cen = rows.sum(axis=0)
        cen /= max(np.linalg.norm(cen), 1e-12)
        total += float((rows @ cen).sum())
    return total / z.shape[0]


def test_quality_beats_random_balanced_assignment() -> None:
    z, _ = planted(2000, 8, 32, seed=5, noise=1.0)
    tree = HierarchicalKMeans(branching=4, max_leaf_size=50, n_jobs=2).fit(z).tree_
    ours = _mean_cos_to_leaf_centroid(z, tree.leaf_of_label)
    rng = np.random.default_rng(0)
    rand = _mean_cos_to_leaf_centroid(z, rng.permutation(tree.leaf_of_label))
    assert ours > rand + 0.1, (ours, rand)


def test_euclidean_and_unbalanced_variants_work() -> None:
    z, truth = planted(800, 4, 16, seed=9)
    for spherical in (True, False):
        tree = HierarchicalKMeans(4, 200, spherical=spherical, balanced=False).fit(z).tree_
        leaf = tree.leaf_of_label
        purity = sum(np.bincount(truth[leaf == c], minlength=4).max() for c in range(4)) / 800
        assert purity > 0.95


def test_hkm_bad_inputs() -> None:
    z, _ = planted(50, 4, 8, seed=0)
    for kw in (
        {"branching": 1},
        {"branching": 2.5},
        {"max_leaf_size": 0},
        {"max_iter": -1},
        {"random_state": -1},
        {"spherical": "yes"},
    ):
        with pytest.raises(ValueError):
            HierarchicalKMeans(**kw).fit(z)  # type: ignore[arg-type]
    bad = z.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        HierarchicalKMeans().fit(bad)
    with pytest.raises(ValueError):
        HierarchicalKMeans().fit(sp.csr_matrix(bad))
    with pytest.raises(ValueError):
        HierarchicalKMeans().fit(np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError):
        HierarchicalKMeans().fit(np.zeros(5, np.float32))
    hk = HierarchicalKMeans(branching=3)
    assert hk.get_params()["branching"] == 3
    assert "branching=3" in repr(hk.set_params(max_leaf_size=5))
    with pytest.raises(ValueError):
        hk.set_params(nope=1)


@pytest.mark.parametrize("balanced", [True, False])
def test_explicit_fanouts(balanced: bool) -> None:
    z, _ = planted(301, 6, 8, seed=4)
    hk = HierarchicalKMeans(branching=(2, 4, 3), max_leaf_size=1, balanced=balanced)
    tree = hk.fit(z).tree_
    assert tree.depth == 3
    if balanced:
        assert tree.n_nodes_per_level == [1, 2, 8, 24]
        sizes = np.diff(tree.leaf_ptr.astype(np.int64))
        assert sizes.min() >= 12 and sizes.max() <= 13  # 301 / 24, max_leaf_size ignored
    else:
        assert tree.n_nodes_per_level[1] == 2 and tree.n_nodes_per_level[3] <= 24
    with pytest.raises(ValueError, match="at least one fan-out"):
        HierarchicalKMeans(branching=[]).fit(z)
    with pytest.raises(ValueError, match="at least one fan-out"):
        XRLinearClassifier(branching=[]).fit(z, sp.identity(z.shape[0], format="csr"))
    assert HierarchicalKMeans(branching=2, max_leaf_size=301).fit(z).tree_.n_leaves == 1
    assert HierarchicalKMeans(branching=np.array([3, 2])).fit(z).tree_.n_leaves == 6
    for bad in ([2, 1], [2, 2.5], ["a"], [2, True]):
        with pytest.raises(ValueError, match="fan-out"):
            HierarchicalKMeans(branching=bad).fit(z)  # type: ignore[arg-type]


def test_pecos_fanouts_follow_pecos_rule() -> None:
    # worked examples of notes/pecos.md: binary depth, then nr_splits per level
    assert pecos_fanouts(44677) == [2, 16, 16]  # debian/deps: 512 leaves
    assert pecos_fanouts(30938) == [2, 16, 16]  # Wiki10-31K
    assert pecos_fanouts(3956) == [4, 16]  # Eurlex-4K: 64 leaves
    assert pecos_fanouts(2_810_000) == [8, 16, 16, 16]  # Amazon-3M: 32768 leaves
    assert pecos_fanouts(159) == [2]
    assert pecos_fanouts(100) == []
    assert pecos_fanouts(1000, nr_splits=4, max_leaf_size=10) == [2, 4, 4, 4]
    for n in (101, 1000, 44677, 200_000):
        f = pecos_fanouts(n)
        leaves = math.prod(f)
        assert leaves == 2 ** max(1, math.ceil(math.log2(n / 100)))
        assert all(c <= 16 for c in f)
    with pytest.raises(ValueError, match="power of 2"):
        pecos_fanouts(1000, nr_splits=10)
    with pytest.raises(ValueError):
        pecos_fanouts(0)


def test_binding_validates_directly() -> None:
    from xmrrs import _xmrrs

    z = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="branching"):
        _xmrrs.hierarchical_kmeans(z, 1)
    with pytest.raises(ValueError, match="max_leaf_size"):
        _xmrrs.hierarchical_kmeans(z, 2, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        _xmrrs.hierarchical_kmeans(np.ones((4, 4), np.float32)[:, ::2], 2, 1)


# --------------------------------------------------------------------------------------------
# cluster tree: from_assignments, save/load, errors
# --------------------------------------------------------------------------------------------


def test_from_assignments_round_trip() -> None:
    leaf = np.array([2, 0, 1, 2, 0])
    tree = ClusterTree.from_assignments([np.array([1, 0, 1]), leaf])
    assert tree.depth == 2 and tree.n_nodes_per_level == [1, 2, 3]
    assert list(tree.children(0, 0)) == [0, 1]
    assert list(tree.children(1, 0)) == [0] and list(tree.children(1, 1)) == [1, 2]
    assert tree.labels.tolist() == [2, 1, 4, 0, 3]
    back = ClusterTree.from_assignments(tree.level_assignments())
    assert back == tree
    flat = ClusterTree.from_assignments([leaf])
    assert flat.depth == 1 and flat.n_leaves == 3
    assert ClusterTree.from_assignments(flat.level_assignments()) == flat
    single = ClusterTree.from_assignments([np.zeros(4, np.int64)])
    assert single.depth == 0 and single.n_nodes_per_level == [1]
    z, _ = planted(500, 8, 16, seed=2)
    fitted = HierarchicalKMeans(3, 10).fit(z).tree_
    assert ClusterTree.from_assignments(fitted.level_assignments()) == fitted
    assert ClusterTree(fitted.child_ptrs, fitted.leaf_ptr, fitted.labels) == fitted
    assert "n_labels=500" in repr(fitted)


@pytest.mark.parametrize(
    "levels",
    [
        [],
        [np.array([], np.int64)],
        [np.array([0, 2, 2])],  # id 1 unused
        [np.array([0, 1]), np.array([0, 2])],  # 2 out of range
        [np.array([0, -1])],
        [np.array([0.5, 1.0])],
        [np.array([[0, 1]])],
    ],
)
def test_from_assignments_errors(levels: list) -> None:
    with pytest.raises(ValueError):
        ClusterTree.from_assignments(levels)


def test_from_parts_errors() -> None:
    with pytest.raises(ValueError, match="permutation"):
        ClusterTree([np.array([0, 2])], np.array([0, 2, 3]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="strictly increasing"):
        ClusterTree([np.array([0, 2])], np.array([0, 2, 2]), np.array([0, 1]))
    with pytest.raises(ValueError):
        ClusterTree([], np.array([0]), np.array([], np.int64))
    with pytest.raises(ValueError):
        ClusterTree(np.array([0, 1]), np.array([0, 1]), np.array([0]))  # type: ignore[arg-type]
    t = ClusterTree([], np.array([0, 3]), np.array([2, 0, 1]))
    with pytest.raises(IndexError):
        t.labels_of_leaf(1)
    with pytest.raises(IndexError):
        t.children(0, 0)


def test_save_load_round_trip_and_corruption(tmp_path: Path) -> None:
    z, _ = planted(300, 8, 16, seed=4)
    tree = HierarchicalKMeans(4, 10).fit(z).tree_
    tree.save(tmp_path / "t")
    assert ClusterTree.load(tmp_path / "t") == tree
    single = ClusterTree.from_assignments([np.zeros(3, np.int64)])
    single.save(tmp_path / "s")
    assert ClusterTree.load(tmp_path / "s") == single
    with pytest.raises(FileNotFoundError):
        ClusterTree.load(tmp_path / "missing")
    # corrupt npz
    (tmp_path / "t" / "tree.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt"):
        ClusterTree.load(tmp_path / "t")
    # inconsistent arrays
    tree.save(tmp_path / "u")
    arrays = dict(np.load(tmp_path / "u" / "tree.npz"))
    arrays["labels"] = arrays["labels"][::-1].copy()
    arrays["labels"][0] = arrays["labels"][1]
    np.savez(tmp_path / "u" / "tree.npz", **arrays)
    with pytest.raises(ValueError, match="permutation"):
        ClusterTree.load(tmp_path / "u")
    # bad json
    tree.save(tmp_path / "v")
    (tmp_path / "v" / "tree.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="JSON"):
        ClusterTree.load(tmp_path / "v")
    meta = {"format": "xmrrs.ClusterTree", "version": 1, "depth": 5}
    (tmp_path / "v" / "tree.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError):
        ClusterTree.load(tmp_path / "v")


def test_flipped_bits_in_tree_npz_fail_cleanly(tmp_path: Path) -> None:
    """Seeded bit flips anywhere in ``tree.npz`` (zip headers included): ``load`` raises
    ValueError or gives a valid tree, never zipfile's NotImplementedError or RuntimeError
    ("encrypted"), which a flipped flag or method field of a zip header used to leak."""
    import random
    import shutil

    z, _ = planted(300, 8, 16, seed=4)
    tree = HierarchicalKMeans(4, 10).fit(z).tree_
    tree.save(tmp_path / "base")
    good = (tmp_path / "base" / "tree.npz").read_bytes()
    rng = random.Random(0)
    outcomes = {"refused": 0, "loaded": 0}
    for trial in range(1500):
        d = tmp_path / f"t{trial}"
        shutil.copytree(tmp_path / "base", d)
        b = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        (d / "tree.npz").write_bytes(bytes(b))
        try:
            back = ClusterTree.load(d)
        except ValueError:
            outcomes["refused"] += 1
        else:
            outcomes["loaded"] += 1
            assert back.n_labels == tree.n_labels  # json and arrays agree (checked)
        shutil.rmtree(d)
    assert outcomes["refused"] > 1000, outcomes


# --------------------------------------------------------------------------------------------
# label representations
# --------------------------------------------------------------------------------------------


def _xy(n: int = 60, d: int = 30, n_labels: int = 12, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    Y = (rng.random((n, n_labels)) < 0.15).astype(np.float32)
    Y[:, -1] = 0  # a label without positives
    Y[np.arange(n), rng.integers(0, n_labels - 1, n)] = 1  # every row has a label
    return X, sp.csr_matrix(Y)


def test_pifa_matches_reference() -> None:
    X, Y = _xy()
    Z = label_representation(X, Y, n_jobs=2)
    assert sp.issparse(Z) and Z.shape == (12, 30) and Z.dtype == np.float32
    y = Y.toarray().astype(np.float64)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    ref = y.T @ X.toarray()
    norms = np.linalg.norm(ref, axis=1, keepdims=True)
    ref = np.divide(ref, norms, out=np.zeros_like(ref), where=norms > 0)
    np.testing.assert_allclose(Z.toarray()[:-1], ref[:-1], rtol=1e-5, atol=1e-6)
    # the label without positives gets the (unit) mean direction of the others
    last = Z.toarray()[-1]
    assert np.isclose(np.linalg.norm(last), 1.0, atol=1e-5)
    mean = ref[:-1].sum(axis=0)
    assert float(last @ mean) / np.linalg.norm(mean) > 0.9
    # several labels without positives: identical rows, the mean direction restricted to
    # its ceil(mean row nnz) largest entries
    Y3 = Y.tolil()
    Y3[:, [0, 5]] = 0
    Y3 = sp.csr_matrix(Y3)
    Z3 = label_representation(X, Y3, n_jobs=2).toarray()
    empty = [0, 5, 11]
    full = [j for j in range(12) if j not in empty]
    y3 = Y3.toarray().astype(np.float64)
    y3 /= np.maximum(np.linalg.norm(y3, axis=1, keepdims=True), 1e-300)
    r3 = y3.T @ X.toarray()
    r3 = r3 / np.maximum(np.linalg.norm(r3, axis=1, keepdims=True), 1e-300)
    mean = r3[full].sum(axis=0)
    keep = math.ceil(np.count_nonzero(r3[full]) / len(full))
    nz = np.flatnonzero(mean)
    top = np.sort(nz[np.argsort(-mean[nz], kind="stable")[:keep]])
    want = np.zeros(30)
    want[top] = mean[top] / np.linalg.norm(mean[top])
    for j in empty:
        np.testing.assert_allclose(Z3[j], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Z3[full], r3[full], rtol=1e-5, atol=1e-6)
    # dense X gives the dense equivalent
    Zd = label_representation(X.toarray(), Y)
    assert isinstance(Zd, np.ndarray)
    np.testing.assert_allclose(Zd[:-1], ref[:-1], rtol=1e-5, atol=1e-6)
    assert np.isclose(np.linalg.norm(Zd[-1]), 1.0, atol=1e-5)


def test_column_sums_continue_over_pieces_bit_for_bit() -> None:
    """The fill of all-zero rows is computed from column sums that a distributed fit chains
    over label ranges: continuing the sums piece after piece equals summing the whole, and
    they are float32 sums in row order (what scipy's ``sum(axis=0)`` gives today)."""
    from xmrrs.indexing import _column_sums

    rng = np.random.default_rng(4)
    n, d, k = 3000, 700, 25
    z = sp.csr_matrix(
        (
            (rng.standard_normal(n * k) * 100).astype(np.float32),
            rng.integers(0, d, n * k).astype(np.int32),
            np.arange(0, n * k + 1, k),
        ),
        shape=(n, d),
    )
    z.sum_duplicates()
    whole = _column_sums(z)
    acc = None
    for a, b in ((0, 1000), (1000, 1001), (1001, 3000)):
        acc = _column_sums(z[a:b], acc)
    assert acc is not None and whole.tobytes() == acc.tobytes()
    seq = np.zeros(d, np.float32)
    for i in range(n):
        a, b = z.indptr[i], z.indptr[i + 1]
        for j, v in zip(z.indices[a:b], z.data[a:b], strict=True):
            seq[j] += v
    assert seq.tobytes() == whole.tobytes()


def test_pii_concat_spectral_shapes_no_nan() -> None:
    X, Y = _xy(n=200, n_labels=40, seed=1)
    pii = label_representation(X, Y, "pii")
    assert pii.shape == (40, 200) and np.isfinite(pii.data).all()
    assert np.allclose(np.linalg.norm(pii.toarray(), axis=1), 1.0, atol=1e-5)
    lab_emb = np.random.default_rng(0).standard_normal((40, 5))
    inst_emb = np.random.default_rng(1).standard_normal((200, 5))
    for emb in (lab_emb, inst_emb):
        c = label_representation(X, Y, "pifa_concat", embeddings=emb, embedding_weight=0.5)
        assert c.shape == (40, 35) and np.isfinite(c.toarray()).all()
        assert np.allclose(np.linalg.norm(c.toarray(), axis=1), 1.0, atol=1e-5)
    cd = label_representation(X.toarray(), Y, "pifa_concat", embeddings=lab_emb)
    assert isinstance(cd, np.ndarray) and cd.shape == (40, 35)
    for n_comp in (4, 64):
        s1 = label_representation(X, Y, "spectral", n_components=n_comp, random_state=3)
        assert isinstance(s1, np.ndarray) and s1.shape == (40, n_comp)
        assert np.isfinite(s1).all()
        s2 = label_representation(None, Y, "spectral", n_components=n_comp, random_state=3)
        np.testing.assert_array_equal(s1, s2)
    # a bigger graph goes through ARPACK
    _, Yb = _xy(n=400, n_labels=150, seed=2)
    s = label_representation(None, Yb, "spectral", n_components=8)
    assert s.shape == (150, 8) and np.isfinite(s).all()
    tree = HierarchicalKMeans(4, 10).fit(s).tree_
    assert tree.n_labels == 150


def test_spectral_separates_disconnected_blocks() -> None:
    # two groups of labels that never co-occur
    rng = np.random.default_rng(0)
    y = np.zeros((200, 20), np.float32)
    for i in range(200):
        block = i % 2
        y[i, rng.choice(10, 3, replace=False) + 10 * block] = 1
    s = label_representation(None, sp.csr_matrix(y), "spectral", n_components=2)
    # the rows of the two blocks are orthogonal, the rows within a block are not all so. (The
    # blocks' graph has singular value 1 twice, so one kept component is a within-block
    # vector: a tree cut by the best k-means objective need not follow the blocks.)
    assert np.abs(s[:10] @ s[10:].T).max() < 1e-5
    assert np.abs(s[:10] @ s[:10].T).min() > 0.99


def test_representation_bad_inputs() -> None:
    X, Y = _xy()
    with pytest.raises(ValueError, match="shape mismatch"):
        label_representation(X[:-1], Y)
    with pytest.raises(ValueError, match="no labels"):
        label_representation(X, sp.csr_matrix((60, 0), dtype=np.float32))
    with pytest.raises(ValueError, match="no positive"):
        label_representation(X, sp.csr_matrix((60, 5), dtype=np.float32))
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError):
        label_representation(bad, Y)
    with pytest.raises(ValueError, match="NaN"):
        label_representation(np.full((60, 3), np.nan), Y)
    with pytest.raises(ValueError, match="method"):
        label_representation(X, Y, "nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="embeddings"):
        label_representation(X, Y, "pifa_concat")
    with pytest.raises(ValueError, match="embeddings"):
        label_representation(X, Y, "pifa", embeddings=np.ones((12, 2)))
    with pytest.raises(ValueError, match="shape mismatch"):
        label_representation(X, Y, "pifa_concat", embeddings=np.ones((7, 2)))
    with pytest.raises(ValueError, match="embedding_weight"):
        label_representation(X, Y, "pifa_concat", embeddings=np.ones((12, 2)), embedding_weight=-1)
    with pytest.raises(ValueError, match="n_components"):
        label_representation(X, Y, "spectral", n_components=0)


def test_end_to_end_on_synthetic_data() -> None:
    from xmrrs.datasets import make_xmc

    X, Y = make_xmc(n_samples=500, n_features=200, n_labels=300, random_state=0)[:2]
    Z = label_representation(X, Y, n_jobs=2)
    assert not np.isnan(Z.data).any()
    tree = HierarchicalKMeans(branching=4, max_leaf_size=20, n_jobs=2).fit(Z).tree_
    check_tree(tree, 300, 4, 20, True)


def test_tol_is_a_validated_parameter() -> None:
    rng = np.random.default_rng(3)
    Z = rng.standard_normal((300, 8)).astype(np.float32)
    strict = HierarchicalKMeans(branching=4, max_leaf_size=20, tol=0.0, n_jobs=1).fit(Z)
    loose = HierarchicalKMeans(branching=4, max_leaf_size=20, tol=0.5, n_jobs=1).fit(Z)
    for tree in (strict.tree_, loose.tree_):
        assert tree.n_labels == 300
        sizes = np.bincount(tree.leaf_of_label)
        assert sizes.sum() == 300 and sizes.max() <= 20
    assert HierarchicalKMeans().get_params()["tol"] == 0.01
    for bad in (-0.1, 1.0, float("nan"), "x", True):
        with pytest.raises(ValueError, match="tol"):
            HierarchicalKMeans(tol=bad).fit(Z)  # type: ignore[arg-type]


def test_n_init_keeps_the_best_of_its_runs() -> None:
    # six blobs of unequal sizes in one 2-way balanced split: some seedings end in poor
    # local optima
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((6, 20))
    sizes = [50, 40, 40, 30, 20, 20]
    z = np.vstack(
        [c + 0.6 * rng.standard_normal((s, 20)) for c, s in zip(centers, sizes, strict=True)]
    )
    z = (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)

    def cos(n_init: int | str, seed: int) -> float:
        tree = HierarchicalKMeans(2, 100, n_init=n_init, random_state=seed, n_jobs=1).fit(z).tree_
        return _mean_cos_to_leaf_centroid(z, tree.leaf_of_label)

    seeds = range(16)
    one = np.array([cos(1, s) for s in seeds])
    auto = np.array([cos("auto", s) for s in seeds])
    three = np.array([cos(3, s) for s in seeds])
    # "auto" is 3 runs at a 2-way node; the first run is the one run of n_init=1, so no
    # seed ends worse, and the bad local optima are gone
    assert np.array_equal(auto, three)
    assert (three >= one - 1e-6).all()
    assert three.min() > one.min() + 0.02 and three.mean() > one.mean() + 0.004, (one, three)
    # at a node of more than 8 children (here 10 leaves of 20) "auto" is one run
    trees = {
        (n, s): HierarchicalKMeans(10, 20, n_init=n, random_state=s).fit(z).tree_
        for n in ("auto", 1, 3)
        for s in range(4)
    }
    assert trees["auto", 0].n_nodes_per_level == [1, 10]
    assert all(trees["auto", s] == trees[1, s] for s in range(4))
    assert any(trees[3, s] != trees[1, s] for s in range(4))
    assert HierarchicalKMeans().get_params()["n_init"] == "auto"
    for bad in (0, -1, 1.5, "x", True, None):
        with pytest.raises(ValueError, match="n_init"):
            HierarchicalKMeans(n_init=bad).fit(z)  # type: ignore[arg-type]
    from xmrrs import _xmrrs

    with pytest.raises(ValueError, match="n_init"):
        _xmrrs.hierarchical_kmeans(z, 2, n_init=0)


def test_tree_files_must_be_regular_files(tmp_path: Path) -> None:
    import os

    z, _ = planted(60, 4, 5, seed=1)
    tree = HierarchicalKMeans(branching=4, max_leaf_size=10).fit(z).tree_
    for name in ("tree.json", "tree.npz"):
        d = tmp_path / name
        tree.save(d)
        (d / name).unlink()
        os.mkfifo(d / name)  # an ordinary open would block forever
        with pytest.raises(ValueError, match="not a regular file"):
            ClusterTree.load(d)
