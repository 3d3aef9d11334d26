"""Tests for xmrrs.metrics against a slow, loop-based reference implementation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import xmrrs.metrics as M

# --------------------------------------------------------------------------------------
# Reference implementation: plain Python, one row at a time, sets and sorted().
# --------------------------------------------------------------------------------------

Triplets = list[tuple[int, int, float]]


def ref_sum_triplets(triplets: Triplets, n: int) -> list[dict[int, float]]:
    """Sum duplicate (row, col) entries and drop those that end up zero."""
    rows: list[dict[int, float]] = [{} for _ in range(n)]
    for r, c, v in triplets:
        rows[r][c] = rows[r].get(c, 0.0) + v
    return [{c: v for c, v in row.items() if v != 0} for row in rows]


def ref_truth(triplets: Triplets, n: int) -> list[set[int]]:
    return [set(row) for row in ref_sum_triplets(triplets, n)]


def ref_rank_row(scores: dict[int, float]) -> list[int]:
    """Label ids by score descending, ties by lower id."""
    return sorted(scores, key=lambda c: (-scores[c], c))


def ref_rank_sparse(triplets: Triplets, n: int) -> list[list[int]]:
    return [ref_rank_row(row) for row in ref_sum_triplets(triplets, n)]


def ref_rank_dense(scores: list[list[float]]) -> list[list[int]]:
    return [ref_rank_row(dict(enumerate(row))) for row in scores]


def ref_propensity(y_train: list[set[int]], n_labels: int, a: float, b: float) -> list[float]:
    n = len(y_train)
    c = (math.log(n) - 1.0) * (b + 1.0) ** a
    out = []
    for label in range(n_labels):
        n_l = sum(1 for row in y_train if label in row)
        out.append(1.0 / (1.0 + c * (n_l + b) ** (-a)))
    return out


def ref_metrics(
    truth: list[set[int]],
    ranked: list[list[int]],
    k: int,
    empty_rows: str,
    weights: list[float] | None = None,
) -> dict[str, float]:
    """``ranked`` lists label ids best first; -1 is an empty slot."""
    sums = {"P": 0.0, "R": 0.0, "nDCG": 0.0}
    ps = {"psp_num": 0.0, "psp_den": 0.0, "psn_num": 0.0, "psn_den": 0.0}
    used = 0
    for t, row in zip(truth, ranked, strict=True):
        if not t and empty_rows == "skip":
            continue
        used += 1
        top = row[:k]
        hits = [label for label in top if label != -1 and label in t]
        sums["P"] += len(hits) / k
        if t:
            sums["R"] += len(hits) / len(t)
            dcg = 0.0
            for r, label in enumerate(top):
                if label != -1 and label in t:
                    dcg += 1.0 / math.log2(r + 2)
            idcg = 0.0
            for r in range(min(k, len(t))):
                idcg += 1.0 / math.log2(r + 2)
            sums["nDCG"] += dcg / idcg
        if weights is not None:
            ps["psp_num"] += sum(weights[label] for label in hits) / k
            best = sorted((weights[label] for label in t), reverse=True)[:k]
            ps["psp_den"] += sum(best) / k
            for r, label in enumerate(top):
                if label != -1 and label in t:
                    ps["psn_num"] += weights[label] / math.log2(r + 2)
            for r, g in enumerate(best):
                ps["psn_den"] += g / math.log2(r + 2)
    out = {name: (total / used if used else 0.0) for name, total in sums.items()}
    if weights is not None:
        out["PSP"] = ps["psp_num"] / ps["psp_den"] if ps["psp_den"] > 0 else 0.0
        out["PSnDCG"] = ps["psn_num"] / ps["psn_den"] if ps["psn_den"] > 0 else 0.0
    return out


# --------------------------------------------------------------------------------------
# Builders of the library inputs from the same raw data the reference sees.
# --------------------------------------------------------------------------------------


def noncanonical_csr(triplets: Triplets, n: int, n_labels: int) -> sp.csr_matrix:
    """CSR with rows in order but columns unsorted and duplicates kept."""
    order = sorted(range(len(triplets)), key=lambda i: triplets[i][0])
    counts = np.bincount([triplets[i][0] for i in order], minlength=n)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    indices = np.array([triplets[i][1] for i in order], dtype=np.int32)
    data = np.array([triplets[i][2] for i in order], dtype=np.float64)
    return sp.csr_matrix((data, indices, indptr), shape=(n, n_labels))


def build_sparse(triplets: Triplets, n: int, n_labels: int, fmt: str) -> Any:
    r = np.array([t[0] for t in triplets], dtype=np.int64)
    c = np.array([t[1] for t in triplets], dtype=np.int64)
    v = np.array([t[2] for t in triplets], dtype=np.float64)
    coo = sp.coo_matrix((v, (r, c)), shape=(n, n_labels))
    if fmt == "coo":
        return coo
    if fmt == "csr":
        return coo.tocsr()
    if fmt == "csc":
        return coo.tocsc()
    if fmt == "csr_array":
        return sp.csr_array(coo)
    if fmt == "noncanonical":
        return noncanonical_csr(triplets, n, n_labels)
    dense = np.zeros((n, n_labels))
    for ri, ci, vi in triplets:
        dense[ri, ci] += vi
    return dense


@dataclass
class Case:
    n: int
    n_labels: int
    truth_triplets: Triplets
    truth_fmt: str
    pred_kind: str  # "sparse", "dense" or "ids"
    pred: Any
    ranked: list[list[int]]  # reference ranking, -1 for empty slots
    k: int
    weights: list[float]
    propensity: np.ndarray

    @property
    def y_true(self) -> Any:
        return build_sparse(self.truth_triplets, self.n, self.n_labels, self.truth_fmt)

    @property
    def truth(self) -> list[set[int]]:
        return ref_truth(self.truth_triplets, self.n)


SCORE_VALUES = [-1.5, -1.0, 0.0, 0.5, 1.0, 2.0]  # few values: many ties; exact sums
MODES: tuple[Any, ...] = ("zero", "skip")
SPARSE_FORMATS = ["coo", "csr", "csc", "csr_array", "noncanonical"]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(0, 6))
    n_labels = draw(st.integers(1, 7))
    cell = st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, n_labels - 1))
    truth_triplets: Triplets = []
    if n:
        for r, c in draw(st.lists(cell, max_size=3 * n)):
            truth_triplets.append((r, c, float(draw(st.sampled_from([0, 1, 1, 2])))))
    truth_fmt = draw(st.sampled_from([*SPARSE_FORMATS, "dense"]))
    pred_kind = draw(st.sampled_from(["sparse", "dense", "ids"]))
    pred: Any
    if pred_kind == "sparse":
        pred_triplets: Triplets = []
        if n:
            for r, c in draw(st.lists(cell, max_size=4 * n)):
                pred_triplets.append((r, c, draw(st.sampled_from(SCORE_VALUES))))
        pred = build_sparse(pred_triplets, n, n_labels, draw(st.sampled_from(SPARSE_FORMATS)))
        ranked = ref_rank_sparse(pred_triplets, n)
    elif pred_kind == "dense":
        values = st.sampled_from(SCORE_VALUES)
        scores = [[draw(values) for _ in range(n_labels)] for _ in range(n)]
        dtype = draw(st.sampled_from([np.float64, np.float32]))
        pred = np.array(scores, dtype=dtype).reshape(n, n_labels)
        ranked = ref_rank_dense(scores)
    else:
        width = draw(st.integers(0, n_labels + 2))
        rows = []
        for _ in range(n):
            labels = draw(st.permutations(range(n_labels)))[: draw(st.integers(0, width))]
            row = list(labels) + [-1] * (width - len(labels))
            if draw(st.booleans()):  # sometimes move an empty slot into the middle
                row = draw(st.permutations(row))
            rows.append(row)
        int_dtype = draw(st.sampled_from([np.int64, np.int32, np.int16]))
        pred = np.array(rows, dtype=int_dtype).reshape(n, width)
        ranked = rows
    k = draw(st.integers(1, n_labels + 3))
    weights_src = draw(
        st.lists(st.sampled_from([0.1, 0.25, 0.5, 0.8, 1.0]), min_size=n_labels, max_size=n_labels)
    )
    prop = np.array(weights_src)
    weights = [1.0 / p for p in weights_src]
    return Case(n, n_labels, truth_triplets, truth_fmt, pred_kind, pred, ranked, k, weights, prop)


# --------------------------------------------------------------------------------------
# Property tests against the reference
# --------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(case=cases(), empty_rows=st.sampled_from(["zero", "skip"]))
def test_metrics_match_reference(case: Case, empty_rows: str) -> None:
    ref = ref_metrics(case.truth, case.ranked, case.k, empty_rows, case.weights)
    y_true, pred, k = case.y_true, case.pred, case.k
    er: Any = empty_rows
    assert M.precision_at_k(y_true, pred, k, empty_rows=er) == pytest.approx(ref["P"], abs=1e-9)
    assert M.recall_at_k(y_true, pred, k, empty_rows=er) == pytest.approx(ref["R"], abs=1e-9)
    assert M.ndcg_at_k(y_true, pred, k, empty_rows=er) == pytest.approx(ref["nDCG"], abs=1e-9)
    psp = M.psprecision_at_k(y_true, pred, k, propensity=case.propensity, empty_rows=er)
    assert psp == pytest.approx(ref["PSP"], abs=1e-9)
    psn = M.psndcg_at_k(y_true, pred, k, propensity=case.propensity, empty_rows=er)
    assert psn == pytest.approx(ref["PSnDCG"], abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(
    case=cases(),
    ks=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    empty_rows=st.sampled_from(["zero", "skip"]),
)
def test_ranking_report_matches_reference(case: Case, ks: list[int], empty_rows: str) -> None:
    er: Any = empty_rows
    report = M.ranking_report(case.y_true, case.pred, ks, propensity=case.propensity, empty_rows=er)
    unique = list(dict.fromkeys(ks))
    expected_keys = [f"{m}@{k}" for m in ("P", "R", "nDCG", "PSP", "PSnDCG") for k in unique]
    assert list(report) == expected_keys
    for k in unique:
        ref = ref_metrics(case.truth, case.ranked, k, empty_rows, case.weights)
        for name in ("P", "R", "nDCG", "PSP", "PSnDCG"):
            assert report[f"{name}@{k}"] == pytest.approx(ref[name], abs=1e-9), (name, k)
    no_ps = M.ranking_report(case.y_true, case.pred, ks, empty_rows=er)
    assert list(no_ps) == [key for key in expected_keys if not key.startswith("PS")]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 12),
    n_labels=st.integers(1, 6),
    data=st.data(),
    a=st.sampled_from([0.5, 0.55, 0.6]),
    b=st.sampled_from([0.4, 1.5, 2.6]),
)
def test_propensity_matches_reference(
    n: int, n_labels: int, data: st.DataObject, a: float, b: float
) -> None:
    dense = np.array(
        data.draw(
            st.lists(
                st.lists(st.sampled_from([0, 0, 1, 3]), min_size=n_labels, max_size=n_labels),
                min_size=n,
                max_size=n,
            )
        )
    )
    sets = [set(np.flatnonzero(row).tolist()) for row in dense]
    expected = ref_propensity(sets, n_labels, a, b)
    got = M.propensity(sp.csr_matrix(dense), A=a, B=b)
    assert got.dtype == np.float64
    assert got.shape == (n_labels,)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(M.propensity(dense, A=a, B=b), expected, rtol=1e-12)


def test_blocked_topk_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny blocks force many groups/blocks in the top-k selection."""
    rng = np.random.default_rng(7)
    n, n_labels = 300, 40
    lengths = rng.choice([0, 1, 2, 3, 5, 9, 17, 40], size=n)
    triplets: Triplets = []
    for r, length in enumerate(lengths):
        for c in rng.choice(n_labels, size=length, replace=False):
            triplets.append((r, int(c), float(rng.choice(SCORE_VALUES))))
    truth_triplets: Triplets = [
        (int(r), int(c), 1.0)
        for r, c in zip(*np.nonzero(rng.random((n, n_labels)) < 0.1), strict=True)
    ]
    dense_scores = rng.choice(SCORE_VALUES, size=(n, n_labels))
    y_true = build_sparse(truth_triplets, n, n_labels, "csr")
    truth = ref_truth(truth_triplets, n)
    monkeypatch.setattr(M, "_BLOCK_CELLS", 7)
    for k in (1, 3, 5, 50):
        for pred, ranked in [
            (build_sparse(triplets, n, n_labels, "csr"), ref_rank_sparse(triplets, n)),
            (dense_scores, ref_rank_dense(dense_scores.tolist())),
        ]:
            ref = ref_metrics(truth, ranked, k, "zero")
            assert M.precision_at_k(y_true, pred, k) == pytest.approx(ref["P"], abs=1e-12)
            assert M.ndcg_at_k(y_true, pred, k) == pytest.approx(ref["nDCG"], abs=1e-12)


# --------------------------------------------------------------------------------------
# Hand-computed examples
# --------------------------------------------------------------------------------------

# truth: row 0 = {0, 2}, row 1 = {1}
Y_HAND = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]]))
IDS_HAND = np.array([[2, 1, 0], [0, 1, -1]])
L2_3 = math.log2(3)  # discount of rank 2 is 1 / log2(3); rank 3 is 1 / log2(4) = 0.5


def test_precision_hand() -> None:
    assert M.precision_at_k(Y_HAND, IDS_HAND, k=1) == pytest.approx(0.5)  # (1 + 0) / 2
    assert M.precision_at_k(Y_HAND, IDS_HAND, k=3) == pytest.approx(0.5)  # (2/3 + 1/3) / 2
    assert M.precision_at_k(Y_HAND, IDS_HAND, k=5) == pytest.approx(0.3)  # (2/5 + 1/5) / 2
    # k' = 3 < k = 5: missing slots are misses, the denominator stays k


def test_recall_hand() -> None:
    assert M.recall_at_k(Y_HAND, IDS_HAND, k=1) == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert M.recall_at_k(Y_HAND, IDS_HAND, k=2) == pytest.approx(0.75)  # (1/2 + 1) / 2
    assert M.recall_at_k(Y_HAND, IDS_HAND, k=3) == pytest.approx(1.0)


def test_ndcg_hand() -> None:
    assert M.ndcg_at_k(Y_HAND, IDS_HAND, k=1) == pytest.approx(0.5)
    # row 0: DCG = 1 + 0.5, IDCG = 1 + 1/log2(3); row 1: DCG = 1/log2(3), IDCG = 1
    expected = (1.5 / (1 + 1 / L2_3) + 1 / L2_3) / 2
    assert M.ndcg_at_k(Y_HAND, IDS_HAND, k=3) == pytest.approx(expected, rel=1e-12)
    assert M.ndcg_at_k(Y_HAND, IDS_HAND, k=3) == pytest.approx(0.7753252713598225, rel=1e-12)


def test_ps_metrics_hand() -> None:
    prop = np.array([0.5, 0.25, 1.0])  # weights 1/p = [2, 4, 1]
    # k=1: row 0 predicts 2 (hit, 1), row 1 predicts 0 (miss); best: row 0 -> 2, row 1 -> 4
    assert M.psprecision_at_k(Y_HAND, IDS_HAND, 1, propensity=prop) == pytest.approx(1 / 6)
    # k=3: hits give row 0: 1 + 2 = 3, row 1: 4 -> (3/3 + 4/3); best: (3/3 + 4/3)
    assert M.psprecision_at_k(Y_HAND, IDS_HAND, 3, propensity=prop) == pytest.approx(1.0)
    # PSnDCG@3: row 0 DCG = 1 + 2 * 0.5 = 2, row 1 DCG = 4 / log2(3);
    # ideal: row 0 = 2 + 1 / log2(3), row 1 = 4
    expected = (2 + 4 / L2_3) / (2 + 1 / L2_3 + 4)
    assert M.psndcg_at_k(Y_HAND, IDS_HAND, 3, propensity=prop) == pytest.approx(expected)
    assert M.psndcg_at_k(Y_HAND, IDS_HAND, 3, propensity=prop) == pytest.approx(
        0.682214890279802, rel=1e-12
    )


def test_propensity_hand() -> None:
    # N = 4 rows; label counts N_l = [2, 0, 4]; A = 0.5, B = 1:
    # C = (ln 4 - 1) * sqrt(2) = 0.5462997..., p_l = 1 / (1 + C / sqrt(N_l + 1))
    y_train = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 1], [0, 0, 1]])
    got = M.propensity(y_train, A=0.5, B=1.0)
    np.testing.assert_allclose(got, [0.76022, 0.64670, 0.80366], atol=1e-5)
    c = (math.log(4) - 1) * math.sqrt(2)
    np.testing.assert_allclose(got, [1 / (1 + c / math.sqrt(n_l + 1)) for n_l in (2, 0, 4)])
    # defaults A = 0.55, B = 1.5
    np.testing.assert_allclose(M.propensity(y_train), [0.75698, 0.66155, 0.79976], atol=1e-5)
    # rarer labels have smaller propensities
    assert got[1] < got[0] < got[2]


def test_scores_ties_break_by_lower_label_id() -> None:
    y_true = np.array([[0, 1, 1, 0]])
    scores = np.array([[1.0, 1.0, 1.0, 0.0]])  # tie between 0, 1, 2: ranked 0, 1, 2
    assert M.precision_at_k(y_true, scores, k=1) == 0.0
    assert M.precision_at_k(y_true, scores, k=2) == 0.5
    assert M.precision_at_k(y_true, sp.csr_matrix(scores), k=1) == 0.0


def test_sparse_scores_only_stored_nonzero_entries_are_predictions() -> None:
    y_true = np.array([[1, 1, 0, 0]])
    # label 0 stored as explicit zero: not predicted; only label 1 is predicted
    pred = sp.csr_matrix((np.array([0.0, -3.0]), np.array([0, 1]), np.array([0, 2])), (1, 4))
    assert pred.nnz == 2
    assert M.precision_at_k(y_true, pred, k=2) == 0.5
    assert M.recall_at_k(y_true, pred, k=2) == 0.5
    assert M.recall_at_k(y_true, pred, k=4) == 0.5
    # the dense equivalent ranks every label: 0, 2, 3 (score 0) before 1 (score -3)
    assert M.precision_at_k(y_true, pred.toarray(), k=2) == 0.5
    assert M.recall_at_k(y_true, pred.toarray(), k=4) == 1.0


def test_explicit_zeros_in_truth_are_not_relevant() -> None:
    y_true = sp.csr_matrix((np.array([0, 1]), np.array([0, 1]), np.array([0, 2])), (1, 3))
    ids = np.array([[0, 1]])
    assert M.precision_at_k(y_true, ids, k=1) == 0.0
    assert M.recall_at_k(y_true, ids, k=2) == 1.0


def test_inputs_are_not_modified() -> None:
    triplets: Triplets = [(0, 2, 1.0), (0, 0, 0.0), (0, 2, 1.0), (1, 1, 2.0)]
    y_true = noncanonical_csr(triplets, 2, 3)
    pred = noncanonical_csr(triplets, 2, 3)
    before = (y_true.data.copy(), y_true.indices.copy(), y_true.indptr.copy())
    M.ranking_report(y_true, pred, propensity=np.ones(3))
    for arr_after, arr_before in zip(
        (y_true.data, y_true.indices, y_true.indptr), before, strict=True
    ):
        np.testing.assert_array_equal(arr_after, arr_before)


def test_empty_rows_modes() -> None:
    y_true = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]])
    ids = np.array([[0], [1], [0], [2]])
    # row 0 hit, row 2 miss, rows 1 and 3 have no truth
    assert M.precision_at_k(y_true, ids, 1) == 0.25
    assert M.precision_at_k(y_true, ids, 1, empty_rows="skip") == 0.5
    assert M.recall_at_k(y_true, ids, 1) == 0.25
    assert M.recall_at_k(y_true, ids, 1, empty_rows="skip") == 0.5
    assert M.ndcg_at_k(y_true, ids, 1) == 0.25
    assert M.ndcg_at_k(y_true, ids, 1, empty_rows="skip") == 0.5
    prop = np.array([0.5, 0.25, 1.0])
    # ratio of means: numerator 2, denominator 2 + 4 whichever mode
    for mode in MODES:
        psp = M.psprecision_at_k(y_true, ids, 1, propensity=prop, empty_rows=mode)
        assert psp == pytest.approx(1 / 3)
    # every row empty
    empty = np.zeros((2, 3))
    for mode in MODES:
        assert M.precision_at_k(empty, ids[:2], 1, empty_rows=mode) == 0.0
        assert M.ndcg_at_k(empty, ids[:2], 1, empty_rows=mode) == 0.0
        assert M.psndcg_at_k(empty, ids[:2], 1, propensity=prop, empty_rows=mode) == 0.0


def test_ids_wider_than_k_and_propensity_from_training_matrix() -> None:
    ids = np.array([[2, 1, 0, -1, -1], [0, 1, -1, -1, -1]])
    assert M.precision_at_k(Y_HAND, ids, k=3) == M.precision_at_k(Y_HAND, IDS_HAND, k=3)
    y_train = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 1], [0, 0, 1]])
    via_vector = M.psndcg_at_k(Y_HAND, ids, 3, propensity=M.propensity(y_train, A=0.6, B=2.6))
    via_matrix = M.psndcg_at_k(Y_HAND, ids, 3, propensity=sp.csr_matrix(y_train), A=0.6, B=2.6)
    assert via_vector == via_matrix
    assert via_vector != M.psndcg_at_k(Y_HAND, ids, 3, propensity=y_train)  # default A, B


def test_perfect_prediction_scores_one() -> None:
    y_true = sp.random(50, 30, density=0.1, format="csr", random_state=3)
    y_true.data[:] = 1
    prop = M.propensity(y_true[:40])
    # truth first (small noise to break ties): nDCG and recall@L are 1 on non-empty rows
    scores = y_true.toarray() + 0.01 * np.random.default_rng(0).random((50, 30))
    assert M.ndcg_at_k(y_true, scores, 3, empty_rows="skip") == pytest.approx(1.0)
    assert M.recall_at_k(y_true, scores, 30, empty_rows="skip") == pytest.approx(1.0)
    # truth ranked by 1/p: the PS metrics are exactly 1
    ideal = y_true.multiply(1.0 / prop[None, :]).tocsr()
    assert M.psprecision_at_k(y_true, ideal, 3, propensity=prop) == pytest.approx(1.0)
    assert M.psndcg_at_k(y_true, ideal, 3, propensity=prop) == pytest.approx(1.0)
    # the reverse order within the truth is worse for PSnDCG but not for PSP@L
    worst = y_true.multiply(prop[None, :]).tocsr()
    assert M.psndcg_at_k(y_true, worst, 3, propensity=prop) < 1.0
    assert M.psprecision_at_k(y_true, worst, 30, propensity=prop) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y_pred", "match"),
    [
        (np.array([[0, 1]]), "rows"),  # 1 row vs 2
        (np.array([[0, 3], [1, 0]]), "out of range"),
        (np.array([[0, -2], [1, 0]]), ">= -1"),
        (np.array([[0, 0], [1, 2]]), "duplicate label id 0 in row 0"),
        (np.array([[0, 1], [2, -1], [1, 2]]), "rows"),
        (np.zeros((2, 4)), "shape"),  # float scores with the wrong number of labels
        (sp.csr_matrix((2, 4)), "shape"),
        (np.array([[np.nan, 0, 0], [0, 0, 0]]), "NaN"),
        (sp.csr_matrix(np.array([[np.nan, 0, 0], [0, 0, 1.0]])), "NaN"),
        (np.array([0, 1]), "2-D"),
        (np.array([["a", "b", "c"], ["a", "b", "c"]]), "dtype"),
    ],
)
def test_invalid_predictions(y_pred: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        M.precision_at_k(Y_HAND, y_pred, k=2)


def test_duplicate_ids_are_rejected_with_padding_allowed() -> None:
    M.precision_at_k(Y_HAND, np.array([[-1, -1, 0], [1, -1, -1]]), k=2)  # repeated -1 is fine
    with pytest.raises(ValueError, match="duplicate label id 1 in row 1"):
        M.recall_at_k(Y_HAND, np.array([[-1, -1, 0], [1, -1, 1]]), k=1)


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3", None])
def test_invalid_k(k: Any) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        M.ndcg_at_k(Y_HAND, IDS_HAND, k=k)
    with pytest.raises(ValueError, match="positive integer"):
        M.ranking_report(Y_HAND, IDS_HAND, ks=(1, k))


def test_other_validation_errors() -> None:
    with pytest.raises(ValueError, match="empty_rows"):
        M.precision_at_k(Y_HAND, IDS_HAND, empty_rows="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"propensity=xmrrs\.metrics\.propensity\(Y_train\)"):
        M.psprecision_at_k(Y_HAND, IDS_HAND, 1)
    with pytest.raises(ValueError, match=r"propensity=xmrrs\.metrics\.propensity\(Y_train\)"):
        M.psndcg_at_k(Y_HAND, IDS_HAND, 1)
    with pytest.raises(ValueError, match="length L=3"):
        M.psndcg_at_k(Y_HAND, IDS_HAND, 1, propensity=np.ones(4))
    with pytest.raises(ValueError, match="> 0"):
        M.psndcg_at_k(Y_HAND, IDS_HAND, 1, propensity=np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="4 labels"):
        M.psndcg_at_k(Y_HAND, IDS_HAND, 1, propensity=np.ones((5, 4)))
    with pytest.raises(ValueError, match="at least one"):
        M.ranking_report(Y_HAND, IDS_HAND, ks=())
    assert M.ranking_report(Y_HAND, IDS_HAND, ks=3) == M.ranking_report(Y_HAND, IDS_HAND, [3, 3])
    with pytest.raises(ValueError, match="2-D"):
        M.precision_at_k(np.array([1, 0, 1]), IDS_HAND)
    with pytest.raises(ValueError, match="at least 3 training rows"):
        M.propensity(np.ones((2, 3)))
    with pytest.raises(ValueError, match="A must be"):
        M.propensity(np.ones((5, 3)), A=0.0)
    with pytest.raises(ValueError, match="B must be"):
        M.propensity(np.ones((5, 3)), B=-1.0)


# --------------------------------------------------------------------------------------
# scikit-learn scorers
# --------------------------------------------------------------------------------------


class TopkEstimator:
    """Fake estimator: the features are the label scores; exposes predict_topk."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_topk(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(k)
        ids = np.argsort(-X, axis=1, kind="stable")[:, :k]
        return ids, np.take_along_axis(X, ids, axis=1)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        raise AssertionError("predict_topk must be preferred")


class ScoreEstimator:
    """Fake estimator exposing only decision_function (sparse score matrix)."""

    def decision_function(self, X: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix(X)


def _scorer_data() -> tuple[np.ndarray, sp.csr_matrix]:
    rng = np.random.default_rng(11)
    X = rng.choice([0.0, 0.5, 1.0, 2.0], size=(40, 6))
    Y = sp.csr_matrix((rng.random((40, 6)) < 0.3).astype(np.float64))
    return X, Y


def test_scorer_uses_predict_topk() -> None:
    X, Y = _scorer_data()
    est = TopkEstimator()
    for k in (1, 3, 5):
        scorer = M.make_ranking_scorer("precision", k=k)
        assert scorer(est, X, Y) == pytest.approx(M.precision_at_k(Y, X, k))
    assert est.calls == [1, 3, 5]
    assert M.precision_at_3_scorer(est, X, Y) == pytest.approx(M.precision_at_k(Y, X, 3))
    assert M.ndcg_at_5_scorer(est, X, Y) == pytest.approx(M.ndcg_at_k(Y, X, 5))


def test_scorer_uses_decision_function() -> None:
    X, Y = _scorer_data()
    est = ScoreEstimator()
    S = sp.csr_matrix(X)  # what decision_function returns: zero scores are not predicted
    assert M.precision_at_1_scorer(est, X, Y) == pytest.approx(M.precision_at_k(Y, S, 1))
    p5 = M.precision_at_5_scorer(est, X, Y)
    assert p5 == pytest.approx(M.precision_at_k(Y, S, 5))
    assert p5 != pytest.approx(M.precision_at_k(Y, X, 5))  # dense X would rank the zeros
    prop = M.propensity(Y)
    scorer = M.make_ranking_scorer("psndcg", k=3, propensity=prop, empty_rows="skip")
    assert scorer(est, X, Y) == pytest.approx(M.psndcg_at_k(Y, S, 3, propensity=prop))
    recall = M.make_ranking_scorer("recall", k=2, empty_rows="skip")
    assert recall(est, X, Y) == pytest.approx(M.recall_at_k(Y, S, 2, empty_rows="skip"))
    with pytest.raises(TypeError, match="neither predict_topk"):
        M.precision_at_1_scorer(object(), X, Y)


def test_scorer_repr_and_validation() -> None:
    assert repr(M.precision_at_1_scorer) == "make_ranking_scorer(metric='precision', k=1)"
    assert repr(M.ndcg_at_5_scorer) == "make_ranking_scorer(metric='ndcg', k=5)"
    scorer = M.make_ranking_scorer("psprecision", k=3, propensity=np.ones(7), A=0.6)
    assert repr(scorer) == (
        "make_ranking_scorer(metric='psprecision', k=3, propensity=<ndarray of shape (7,)>, A=0.6)"
    )
    with pytest.raises(ValueError, match="unknown metric"):
        M.make_ranking_scorer("map")
    with pytest.raises(ValueError, match="propensity"):
        M.make_ranking_scorer("psndcg", k=5)
    with pytest.raises(ValueError, match="unexpected keyword"):
        M.make_ranking_scorer("precision", k=5, propensity=np.ones(3))
    with pytest.raises(ValueError, match="positive integer"):
        M.make_ranking_scorer("ndcg", k=0)


def test_scorer_in_sklearn_model_selection() -> None:
    from sklearn.base import BaseEstimator
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

    class Model(BaseEstimator):  # type: ignore[misc]
        def __init__(self, flip: bool = False) -> None:
            self.flip = flip

        def fit(self, X: np.ndarray, Y: Any) -> Model:
            self.fitted_ = True
            return self

        def predict_topk(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            scores = -X if self.flip else X
            ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            return ids, np.take_along_axis(scores, ids, axis=1)

    X, Y_sparse = _scorer_data()
    Y = Y_sparse.toarray()  # cross_val_score (scikit-learn 1.9) rejects a sparse y
    cv = KFold(n_splits=2)
    got = cross_val_score(Model(), X, Y, scoring=M.precision_at_1_scorer, cv=cv)
    expected = [M.precision_at_k(Y[test], X[test], 1) for _, test in cv.split(X)]
    np.testing.assert_allclose(got, expected)
    search = GridSearchCV(Model(), {"flip": [True, False]}, scoring=M.ndcg_at_5_scorer, cv=cv)
    search.fit(X, Y_sparse)  # GridSearchCV passes a sparse Y through
    assert search.best_params_ == {"flip": False}
    folds = [M.ndcg_at_k(Y_sparse[test], X[test], 5) for _, test in cv.split(X)]
    assert search.best_score_ == pytest.approx(np.mean(folds))


def test_complex_truth_is_rejected() -> None:
    from xmrrs.metrics import precision_at_k

    ids = np.array([[0, 1]])
    for y in (np.array([[1j, 0]]), sp.csr_matrix(np.array([[1 + 0j, 0]]))):
        with pytest.raises(ValueError, match="complex"):
            precision_at_k(y, ids, k=1)
