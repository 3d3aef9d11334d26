# ruff: noqa: RUF001  (the test text is deliberately confusable Unicode)
"""xmrrs.text.TfidfVectorizer against scikit-learn's on generated text with odd Unicode."""

from __future__ import annotations

import pickle
import sys
from collections import Counter

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.feature_extraction.text import TfidfVectorizer as SkTfidf

from xmrrs import _xmrrs
from xmrrs.text import TfidfVectorizer

PIECES = [
    "the",
    "The",
    "DATA",
    "data_set",
    "x",
    "42",
    "3.14",
    "²³",
    "½",
    "café",
    "CAFÉ",
    "cafe\u0301",
    "naïve",
    "straße",
    "STRASSE",
    "ﬁle",
    "İstanbul",
    "ıi",
    "ΟΔΟΣ",
    "Σ",
    "ΣΑ",
    "όδος",
    "ΑΣ'Β",
    "Ǆemal",
    "ǅ",
    "数据",
    "日本語テキスト",
    "한국어",
    "नमस्ते",
    "मराठी",
    "مرحبا",
    "שלום",
    "emoji😀ok",
    "a\u200db",
    "x\u00adly",
    "tab\tsep",
    "🙂🙂",
    "٣٤٥",
    "Ⅻ",
    "①②",
    "ℌ",
    "ǈ",
    "Ꭰ",
    "\u1e9e",
    "ʰi",
    "a'b",
    "O'Neil",
    "don’t",
]
SPACES = [" ", "  ", "\t", "\n", " \u2003 ", "\u3000", "\x1c", "\x85", ", ", "; ", "-", "/", "."]


def make_docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        k = int(rng.integers(0, 30))
        words = rng.choice(len(PIECES), size=k, p=None)
        seps = rng.choice(len(SPACES), size=k)
        docs.append("".join(PIECES[w] + SPACES[s] for w, s in zip(words, seps, strict=True)))
    return docs


CONFIGS = [
    {},
    {"ngram_range": (1, 2)},
    {"ngram_range": (2, 3), "min_df": 2, "max_df": 0.9},
    {"min_df": 0.05, "max_df": 200},
    {"lowercase": False, "sublinear_tf": True},
    {"binary": True, "norm": None},
    {"use_idf": False, "norm": "l1"},
    {"smooth_idf": False},
    {"analyzer": "char", "ngram_range": (1, 3)},
    {"analyzer": "char", "ngram_range": (3, 5), "lowercase": False},
    {"analyzer": "char_wb", "ngram_range": (2, 4)},
    {"analyzer": "char_wb", "ngram_range": (1, 7), "min_df": 3},
]


def _compare(sk: SkTfidf, ours: TfidfVectorizer, A: object, B: object, rtol: float) -> None:
    assert list(ours.get_feature_names_out()) == list(sk.get_feature_names_out())
    assert ours.vocabulary_ == sk.vocabulary_
    A, B = sp.csr_matrix(A), sp.csr_matrix(B)
    assert A.shape == B.shape
    assert B.dtype == np.dtype(ours.dtype)
    assert B.has_sorted_indices
    diff = abs(A - B)
    assert diff.max() <= rtol * max(1.0, abs(A).max()), diff.max()
    assert (A != 0).nnz == B.nnz
    if sk.use_idf:
        np.testing.assert_allclose(ours.idf_, sk.idf_, rtol=rtol)
        assert ours.idf_.dtype == np.dtype(ours.dtype)


@pytest.mark.parametrize("params", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_equals_sklearn_on_odd_unicode(params: dict) -> None:
    docs = make_docs(300, seed=len(str(params)))
    sk = SkTfidf(dtype=np.float32, **params)
    A = sk.fit_transform(docs)
    ours = TfidfVectorizer(n_jobs=2, **params)
    B = ours.fit_transform(docs)
    _compare(sk, ours, A, B, 1e-6)
    test = make_docs(50, seed=99)
    _compare(sk, ours, sk.transform(test), ours.transform(test), 1e-6)


def test_float64_output_equals_sklearn_default() -> None:
    docs = make_docs(200)
    sk = SkTfidf(ngram_range=(1, 2))
    ours = TfidfVectorizer(ngram_range=(1, 2), dtype=np.float64)
    _compare(sk, ours, sk.fit_transform(docs), ours.fit_transform(docs), 1e-12)


def test_max_features_keeps_the_most_frequent_terms() -> None:
    docs = make_docs(400, seed=3)
    ours = TfidfVectorizer(max_features=10).fit(docs)
    full = TfidfVectorizer(norm=None, use_idf=False).fit(docs)
    tf = np.asarray(full.transform(docs).sum(axis=0)).ravel()
    order = sorted(range(len(tf)), key=lambda i: (-tf[i], i))  # ties: the first term sorted
    names = full.get_feature_names_out()
    assert list(ours.get_feature_names_out()) == sorted(names[i] for i in order[:10])
    if tf[order[9]] != tf[order[10]]:  # no tie at the cut: scikit-learn agrees
        sk = SkTfidf(max_features=10).fit(docs)
        assert list(sk.get_feature_names_out()) == list(ours.get_feature_names_out())


def _chunks_of_all_code_points(size: int = 512) -> list[str]:
    cps = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    return ["".join(map(chr, cps[i : i + size])) for i in range(0, len(cps), size)]


@pytest.mark.parametrize(
    ("analyzer", "ngram_range", "lowercase"),
    [("word", (1, 2), True), ("word", (1, 1), False), ("char", (1, 2), True)],
)
def test_analyzer_matches_sklearn_on_every_code_point(
    analyzer: str, ngram_range: tuple[int, int], lowercase: bool
) -> None:
    import unicodedata

    if unicodedata.unidata_version != _xmrrs.TEXT_UNICODE_VERSION:
        pytest.skip("this Python's Unicode database is not the one the tables came from")
    docs = _chunks_of_all_code_points()
    # also the final-sigma contexts and runs of each kind of white space
    docs += ["AΣ Σ ΑΣ'Β Σa aΣ", "a\x1c\x1db c\u2003\u2003d", "x\u0301y z\u0345Σ"]
    sk = SkTfidf(analyzer=analyzer, ngram_range=ngram_range, lowercase=lowercase)
    sk_an = sk.build_analyzer()
    ours = _xmrrs.text_analyze(docs, analyzer, ngram_range, lowercase)
    for i, doc in enumerate(docs):
        assert Counter(ours[i]) == Counter(sk_an(doc)), i


def test_same_output_at_any_thread_count() -> None:
    docs = make_docs(2000, seed=5)
    outs = [TfidfVectorizer(ngram_range=(1, 2), n_jobs=j).fit_transform(docs) for j in (1, 2, 3)]
    for o in outs[1:]:
        assert np.array_equal(o.indptr, outs[0].indptr)
        assert np.array_equal(o.indices, outs[0].indices)
        assert np.array_equal(o.data, outs[0].data)


def test_bytes_documents_are_utf8() -> None:
    docs = make_docs(50)
    a = TfidfVectorizer().fit_transform(docs)
    b = TfidfVectorizer().fit_transform([d.encode("utf-8") for d in docs])
    assert (a != b).nnz == 0


@pytest.mark.parametrize(
    ("docs", "exc", "match"),
    [
        ("just one string", ValueError, "Iterable over raw text"),
        (b"bytes", ValueError, "Iterable over raw text"),
        (42, TypeError, "iterable of str"),
        (["ok doc", None], TypeError, "document 1 is NoneType"),
        (["ok doc", 3.5], TypeError, "document 1 is float"),
        (["ok doc", b"\xff\xfe bad"], ValueError, "document 1 is bytes but not UTF-8"),
        (["ok doc", "lone \ud800 surrogate"], ValueError, "document 1 is not valid Unicode"),
        (["a b c", ""], ValueError, "empty vocabulary"),
        ([], ValueError, "empty vocabulary"),
    ],
)
def test_bad_documents(docs: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        TfidfVectorizer().fit(docs)


@pytest.mark.parametrize(
    ("params", "exc", "match"),
    [
        ({"analyzer": "chars"}, ValueError, "analyzer"),
        ({"analyzer": len}, ValueError, "analyzer"),
        ({"ngram_range": (2, 1)}, ValueError, "ngram_range"),
        ({"ngram_range": (0, 1)}, ValueError, "ngram_range"),
        ({"ngram_range": (-1, 2)}, ValueError, "ngram_range"),
        ({"ngram_range": "12"}, TypeError, "ngram_range"),
        ({"min_df": 0}, ValueError, "min_df"),
        ({"min_df": 1.5}, ValueError, "min_df"),
        ({"min_df": "2"}, TypeError, "min_df"),
        ({"max_df": True}, TypeError, "max_df"),
        ({"max_df": -0.1}, ValueError, "max_df"),
        ({"min_df": 5, "max_df": 2}, ValueError, "max_df corresponds to < documents"),
        ({"max_features": 0}, ValueError, "max_features"),
        ({"max_features": 2.5}, ValueError, "max_features"),
        ({"norm": "l3"}, ValueError, "norm"),
        ({"dtype": np.int32}, ValueError, "dtype"),
        ({"min_df": 50}, ValueError, "max_df corresponds to < documents"),
        ({"n_jobs": 0}, ValueError, "n_jobs"),
    ],
)
def test_bad_params(params: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        TfidfVectorizer(**params).fit(make_docs(20))


def test_pruning_everything_is_an_error() -> None:
    with pytest.raises(ValueError, match="no terms remain"):
        TfidfVectorizer(min_df=2).fit(["aa bb", "cc dd"])


def test_huge_ngram_range_is_capped() -> None:
    docs = make_docs(30)
    a = TfidfVectorizer(ngram_range=(1, 2**70)).fit_transform(docs)
    b = SkTfidf(ngram_range=(1, 10**6), dtype=np.float32).fit_transform(docs)
    assert a.shape == b.shape


def test_not_fitted() -> None:
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TfidfVectorizer().transform(["a doc"])
    with pytest.raises(NotFittedError):
        _ = TfidfVectorizer().vocabulary_


def test_save_load_and_pickle_round_trip(tmp_path: object) -> None:
    docs = make_docs(200)
    v = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3), min_df=2, sublinear_tf=True)
    X = v.fit_transform(docs)
    v.save(tmp_path / "vec")  # type: ignore[operator]
    w = TfidfVectorizer.load(tmp_path / "vec")  # type: ignore[operator]
    assert w.get_params() == {**v.get_params(), "n_jobs": None}
    assert (w.transform(docs) != X).nnz == 0
    np.testing.assert_array_equal(w.idf_, v.idf_)
    u = pickle.loads(pickle.dumps(v))
    assert (u.transform(docs) != X).nnz == 0
    assert u.vocabulary_ == v.vocabulary_
    c = clone(v)
    assert not hasattr(c, "_tfidf")


def test_corrupt_saved_vectorizer_is_a_value_error(tmp_path: object) -> None:
    import json

    v = TfidfVectorizer().fit(make_docs(50))
    d = tmp_path / "vec"  # type: ignore[operator]
    v.save(d)
    doc = json.loads((d / "tfidf.json").read_text("utf-8"))
    for bad in (
        {**doc, "terms": doc["terms"][::-1]},  # unsorted
        {**doc, "idf": doc["idf"][:-1]},
        {**doc, "idf": [0.5] * len(doc["idf"])},
        {**doc, "params": {**doc["params"], "ngram_range": [3, 1]}},
        {**doc, "format_version": 99},
    ):
        (d / "tfidf.json").write_text(json.dumps(bad), "utf-8")
        with pytest.raises(ValueError):
            TfidfVectorizer.load(d)
    (d / "tfidf.json").write_bytes(b"\xff{")
    with pytest.raises(ValueError, match="corrupt"):
        TfidfVectorizer.load(d)


def test_in_a_pipeline_with_the_classifier() -> None:
    from sklearn.pipeline import make_pipeline

    from xmrrs import XRLinearClassifier

    docs = make_docs(300, seed=1)
    labels = [[w for w in ("the", "data", "café") if w in d.lower()] or ["none"] for d in docs]
    pipe = make_pipeline(TfidfVectorizer(), XRLinearClassifier(n_estimators=1, n_jobs=1))
    pipe.fit(docs, labels)
    assert pipe.score(docs, labels) > 0.5
