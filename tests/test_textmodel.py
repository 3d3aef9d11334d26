"""TextXRClassifier (texts and label names in, one crash-safe model directory out) and the
jsonl/tsv reader of xmrrs.text."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from xmrrs import XRLinearClassifier
from xmrrs.modelfile import MANIFEST
from xmrrs.text import TfidfVectorizer, is_text_model_dir, read_text_file
from xmrrs.textmodel import TextXRClassifier

N_TOPICS = 24


def make_corpus(n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Texts whose words come from the vocabularies of their 1-3 topics, plus noise."""
    rng = np.random.default_rng(seed)
    vocab = {f"topic_{t}": [f"w{t}x{j}" for j in range(12)] for t in range(N_TOPICS)}
    noise = [f"common{j}" for j in range(30)]
    names = sorted(vocab)
    texts, labels = [], []
    for _ in range(n):
        topics = sorted(rng.choice(names, size=rng.integers(1, 4), replace=False).tolist())
        words = [w for t in topics for w in rng.choice(vocab[t], 6).tolist()]
        words += rng.choice(noise, 5).tolist()
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(topics)
    return texts, labels


def _clf() -> TextXRClassifier:
    return TextXRClassifier(ranker=XRLinearClassifier(n_jobs=2, n_estimators=1, max_leaf_size=8))


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    texts, labels = make_corpus(700)
    return texts[:600], labels[:600], texts[600:], labels[600:]


@pytest.fixture(scope="module")
def fitted(corpus: tuple) -> TextXRClassifier:
    tr, ytr, _, _ = corpus
    return _clf().fit(tr, ytr)


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _same(a: TextXRClassifier, b: TextXRClassifier, texts: list[str]) -> None:
    for u, v in zip(a.predict_topk(texts, 5), b.predict_topk(texts, 5), strict=True):
        np.testing.assert_array_equal(u, v)
    assert a.predict_labels(texts, 3) == b.predict_labels(texts, 3)
    assert (a.predict(texts) != b.predict(texts)).nnz == 0


# ---------------------------------------------------------------------------- fit / predict


def test_fit_on_label_names_predicts_label_names(corpus: tuple, fitted: TextXRClassifier) -> None:
    _, _, te, yte = corpus
    assert fitted.classes_.tolist() == sorted({f"topic_{t}" for t in range(N_TOPICS)})
    ids, scores = fitted.predict_topk(te, 3)
    assert ids.shape == scores.shape == (len(te), 3)
    got = fitted.predict_labels(te, 3)
    assert len(got) == len(te) and all(isinstance(name, str) for row in got for name in row)
    assert got[0] == fitted.classes_[ids[0][ids[0] >= 0]].tolist()
    assert fitted.score(te, yte) > 0.9
    P = fitted.predict(te)
    assert sp.issparse(P) and P.shape == (len(te), N_TOPICS)
    assert isinstance(fitted.vectorizer_, TfidfVectorizer)
    assert fitted.vectorizer_.sublinear_tf and fitted.vectorizer_.min_df == 2  # the defaults
    assert fitted.transform(te[:2]).shape == (2, fitted.ranker_.n_features_in_)


def test_defaults_and_clone() -> None:
    clf = TextXRClassifier()
    assert clf.get_params(deep=False) == {"vectorizer": None, "ranker": None}
    texts, labels = make_corpus(200, seed=3)
    fitted = clone(clf).fit(texts, labels)
    assert isinstance(fitted.ranker_, XRLinearClassifier)
    assert fitted.predict_labels(texts[:2], 2)[0][0] in labels[0]
    assert not hasattr(clone(fitted), "ranker_")


def test_other_targets_work(corpus: tuple) -> None:
    tr, ytr, te, _ = corpus
    y1 = [row[0] for row in ytr]  # one class per text
    clf = _clf().fit(tr, y1)
    assert clf.ranker_.target_type_ == "multiclass"
    assert clf.predict(te[:3]).shape == (3,)
    Yind = sp.random(len(tr), 7, density=0.3, format="csr", random_state=0)
    Yind.data[:] = 1
    clf = _clf().fit(tr, Yind)
    assert clf.classes_.tolist() == list(range(7))


def test_pickle_round_trip(corpus: tuple, fitted: TextXRClassifier) -> None:
    _same(fitted, pickle.loads(pickle.dumps(fitted)), corpus[2])


@pytest.mark.parametrize(
    ("texts", "Y", "exc", "match"),
    [
        ("one text", [["a"]], ValueError, "string object received"),
        (42, [["a"]], TypeError, "iterable of str"),
        (["a b", "c d"], None, ValueError, "needs the labels"),
        (["alpha beta", "alpha gamma", "beta gamma"], [["a"], ["b"]], ValueError, "3 rows"),
        (["alpha beta", "alpha gamma"], ["a", ["b"]], ValueError, "not a collection"),
        ([1, 2], [["a"], ["b"]], TypeError, "document 0 is int"),
    ],
)
def test_bad_fit_input(texts: object, Y: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        _clf().fit(texts, Y)


def test_bad_predict_input(fitted: TextXRClassifier) -> None:
    with pytest.raises(NotFittedError):
        _clf().predict_topk(["a text"], 3)
    with pytest.raises(NotFittedError):
        _clf().save("never-written")
    assert not os.path.exists("never-written")
    with pytest.raises(ValueError, match="string object received"):
        fitted.predict_labels("one text", 3)
    with pytest.raises(ValueError, match="not UTF-8"):
        fitted.predict_topk([b"\xff\xfe not utf-8", "fine"], 3)


# ---------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip_without_pickle(
    tmp_path: Path, corpus: tuple, fitted: TextXRClassifier, mmap: bool
) -> None:
    _, _, te, _ = corpus
    path = tmp_path / "m"
    fitted.save(path)
    back = TextXRClassifier.load(path, mmap=mmap, n_jobs=3)
    _same(fitted, back, te)
    np.testing.assert_array_equal(back.classes_, fitted.classes_)
    assert back.vectorizer_.n_jobs == 3 and back.ranker_.n_jobs == 3
    assert back.get_params()["vectorizer"].get_params()["min_df"] == 2
    _same(back, TextXRClassifier.load(path), te)  # and back again: the other load mode
    # the layout: manifest, estimators, one vectorizer extra of plain JSON; no pickle
    manifest = json.loads((path / MANIFEST).read_text())
    vec = manifest["extras"]["vectorizer"]
    assert re.fullmatch(r"vectorizer-[0-9a-f]{16}", vec)
    assert manifest["extras_json"]["text_model"]["format"] == "xmrrs.TextXRClassifier"
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [MANIFEST, vec, *manifest["estimators"]]
    )
    assert [p.name for p in (path / vec).iterdir()] == ["tfidf.json"]
    for p in path.rglob("*"):
        if p.is_file():
            assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"
            assert p.suffix in (".json", ".safetensors"), p
    assert is_text_model_dir(path)
    # the ranker alone loads from the same directory (features from the same vectorizer)
    ranker = XRLinearClassifier.load(path)
    for u, v in zip(
        ranker.predict_topk(back.transform(te), 5), fitted.predict_topk(te, 5), strict=True
    ):
        np.testing.assert_array_equal(u, v)


def test_a_second_save_replaces_the_vectorizer(tmp_path: Path, corpus: tuple) -> None:
    tr, ytr, te, _ = corpus
    path = tmp_path / "m"
    first = _clf().fit(tr[:300], ytr[:300])
    first.save(path)
    old = json.loads((path / MANIFEST).read_text())["extras"]["vectorizer"]
    second = TextXRClassifier(
        TfidfVectorizer(ngram_range=(1, 2)), XRLinearClassifier(n_jobs=2, n_estimators=2)
    ).fit(tr, ytr)
    second.save(path)
    manifest = json.loads((path / MANIFEST).read_text())
    new = manifest["extras"]["vectorizer"]
    assert new != old and not (path / old).exists()
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [MANIFEST, new, *manifest["estimators"]]
    )
    back = TextXRClassifier.load(path)
    _same(second, back, te)
    assert back.vectorizer_.ngram_range == (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    # a plain ranker saved over the text model drops the vectorizer too
    second.ranker_.save(path)
    assert not is_text_model_dir(path)
    assert not any(p.name.startswith("vectorizer-") for p in path.iterdir())


def test_foreign_files_are_refused_and_leftovers_removed(
    tmp_path: Path, corpus: tuple, fitted: TextXRClassifier
) -> None:
    _, _, te, _ = corpus
    base = tmp_path / "base"
    fitted.save(base)
    vec = json.loads((base / MANIFEST).read_text())["extras"]["vectorizer"]
    token = "0123456789abcdef"
    cases = [
        (f"{vec}/notes.txt", "notes.txt"),  # a foreign file inside the vectorizer extra
        (f"{vec}/sub/tfidf.json", "sub"),  # a directory inside it
        (f"vectorizer-{token}/keep.txt", "keep.txt"),  # inside a dir of our naming pattern
        ("notes.txt", "notes.txt"),  # beside the model
    ]
    for i, (extra, named) in enumerate(cases):
        path = tmp_path / f"case{i}"
        shutil.copytree(base, path)
        (path / extra).parent.mkdir(parents=True, exist_ok=True)
        (path / extra).write_text("precious")
        before = _tree(path)
        with pytest.raises(FileExistsError, match=re.escape(named)):
            fitted.save(path)
        assert _tree(path) == before, extra
    # a file where our extra directory goes
    path = tmp_path / "file"
    shutil.copytree(base, path)
    (path / f"vectorizer-{token}").write_text("x")
    with pytest.raises(FileExistsError, match=f"vectorizer-{token}"):
        fitted.save(path)
    # leftovers of an interrupted save (a partial extra dir, a temp file) are ours: replaced
    path = tmp_path / "left"
    shutil.copytree(base, path)
    (path / f"vectorizer-{token}").mkdir()
    (path / f"vectorizer-{token}" / ".tfidf.json.tmp").write_text("{")
    (path / f"calib_map-{token}").mkdir()
    (path / f"calib_map-{token}" / "x.npy").write_bytes(b"")
    _same(fitted, TextXRClassifier.load(path), te)  # ignored by load
    fitted.save(path)
    manifest = json.loads((path / MANIFEST).read_text())
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [MANIFEST, manifest["extras"]["vectorizer"], *manifest["estimators"]]
    )


def test_not_a_text_model_and_corrupt_directories(
    tmp_path: Path, corpus: tuple, fitted: TextXRClassifier
) -> None:
    assert not is_text_model_dir(tmp_path / "missing")
    assert not is_text_model_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        TextXRClassifier.load(tmp_path / "missing")
    plain = tmp_path / "plain"
    fitted.ranker_.save(plain)
    assert not is_text_model_dir(plain)
    with pytest.raises(ValueError, match="without a vectorizer"):
        TextXRClassifier.load(plain)
    base = tmp_path / "base"
    fitted.save(base)
    manifest = json.loads((base / MANIFEST).read_text())
    vec = manifest["extras"]["vectorizer"]

    def case(name: str) -> Path:
        path = tmp_path / name
        shutil.copytree(base, path)
        return path

    path = case("novec")
    shutil.rmtree(path / vec)
    with pytest.raises(ValueError, match=r"vectorizer directory named by .* is missing"):
        TextXRClassifier.load(path)
    for bad in ("../vectorizer-0123456789abcdef", "tfidf", "estimator-0", 7):
        path = case(f"bad{bad!s:.2}")
        (path / MANIFEST).write_text(json.dumps({**manifest, "extras": {"vectorizer": bad}}))
        with pytest.raises(ValueError, match="bad extra"):
            TextXRClassifier.load(path)
        assert not is_text_model_dir(path)
        shutil.rmtree(path)
    path = case("nomarker")
    (path / MANIFEST).write_text(json.dumps({**manifest, "extras_json": {}}))
    with pytest.raises(ValueError, match=r"not an xmrrs\.TextXRClassifier"):
        TextXRClassifier.load(path)
    path = case("terms")
    doc = json.loads((path / vec / "tfidf.json").read_text())
    doc["terms"], doc["idf"] = doc["terms"][:-1], doc["idf"][:-1]
    (path / vec / "tfidf.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="terms but the ranker"):
        TextXRClassifier.load(path)
    (path / vec / "tfidf.json").write_bytes(b"\xff")
    with pytest.raises(ValueError, match=r"tfidf\.json"):
        TextXRClassifier.load(path)


def test_save_needs_xmrrs_parts(tmp_path: Path, corpus: tuple) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer as SkTfidf
    from sklearn.neighbors import KNeighborsClassifier

    tr, ytr, _, _ = corpus
    y1 = [row[0] for row in ytr]
    with_sk = TextXRClassifier(SkTfidf(), XRLinearClassifier(n_jobs=2, n_estimators=1))
    with_sk.fit(tr, ytr)
    with pytest.raises(TypeError, match="TfidfVectorizer"):
        with_sk.save(tmp_path / "a")
    knn = TextXRClassifier(ranker=KNeighborsClassifier()).fit(tr, y1)
    with pytest.raises(TypeError, match="XRLinearClassifier"):
        knn.save(tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------- reader


def _write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_read_jsonl(tmp_path: Path) -> None:
    lines = [
        {"text": "first doc", "labels": ["a", "b"], "id": 1},
        {"text": "tab\there\nand newline", "labels": []},
        {"text": "ünïcode ✓", "labels": ["a,b"]},
    ]
    body = "\ufeff" + "\r\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n  \n"
    texts, labels = read_text_file(_write(tmp_path / "d.jsonl", body))
    assert texts == [x["text"] for x in lines]
    assert labels == [["a", "b"], [], ["a,b"]]
    # no labels anywhere: for prediction
    p = _write(tmp_path / "p.ndjson", '{"text": "x"}\n{"text": "y", "labels": null}\n')
    assert read_text_file(p) == (["x", "y"], None)
    # other field names, an explicit format
    p = _write(tmp_path / "custom.txt", '{"body": "z", "tags": ["t"]}\n')
    assert read_text_file(p, text_field="body", label_field="tags", fmt="jsonl") == (
        ["z"],
        [["t"]],
    )
    assert read_text_file(_write(tmp_path / "empty.jsonl", "")) == ([], None)


@pytest.mark.parametrize(
    ("body", "line", "match"),
    [
        ('{"text": "a"}\n{"text": "b"\n', 2, "not JSON"),
        ('["a"]\n', 1, "expected a JSON object"),
        ('{"txt": "a"}\n', 1, "no 'text' field"),
        ('{"text": 5}\n', 1, "must be a string"),
        ('{"text": "a", "labels": "x"}\n', 1, "list of strings"),
        ('{"text": "a", "labels": ["x", 1]}\n', 1, "list of strings"),
        ('{"text": "a", "labels": ["x"]}\n\n{"text": "b"}\n', 3, "line 1 has labels"),
        (
            '{"text": "a"}\n{"text": "b", "labels": ["x"]}\n',
            2,
            "line 2 has labels but line 1 has none",
        ),
    ],
)
def test_read_jsonl_bad_lines(tmp_path: Path, body: str, line: int, match: str) -> None:
    p = _write(tmp_path / "bad.jsonl", body)
    with pytest.raises(ValueError, match=re.escape(f"{p}:{line}: ") + ".*" + match):
        read_text_file(p)


def test_read_tsv(tmp_path: Path) -> None:
    body = "first doc\ta, b ,c\nsecond\t\nthird\tx,,\r\n\n"
    texts, labels = read_text_file(_write(tmp_path / "d.tsv", body))
    assert texts == ["first doc", "second", "third"]
    assert labels == [["a", "b", "c"], [], ["x"]]
    p = _write(tmp_path / "p.tab", "only text\nmore text, with a comma\n")
    assert read_text_file(p) == (["only text", "more text, with a comma"], None)
    p = _write(tmp_path / "x.data", "t\tl\n")
    assert read_text_file(p, fmt="tsv") == (["t"], [["l"]])


def test_read_tsv_bad_lines_and_files(tmp_path: Path) -> None:
    p = _write(tmp_path / "two.tsv", "ok\ta\nbad\ta\tb\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}:2: more than one tab")):
        read_text_file(p)
    p = _write(tmp_path / "mixed.tsv", "no labels\nlabels\ta\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}:2: line 2 has labels but line 1")):
        read_text_file(p)
    p = _write(tmp_path / "latin1.tsv", b"ok\ta\ncaf\xe9\tb\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}:2: not UTF-8")):
        read_text_file(p)
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_text_file(_write(tmp_path / "d.csv", "a,b\n"))
    with pytest.raises(ValueError, match="fmt must be"):
        read_text_file(tmp_path / "d.csv", fmt="csv")
    with pytest.raises(FileNotFoundError):
        read_text_file(tmp_path / "missing.tsv")


def test_read_then_fit_then_save(tmp_path: Path) -> None:
    texts, labels = make_corpus(300, seed=7)
    p = tmp_path / "train.jsonl"
    p.write_text(
        "".join(
            json.dumps({"text": t, "labels": y}) + "\n" for t, y in zip(texts, labels, strict=True)
        )
    )
    got_texts, got_labels = read_text_file(p)
    assert got_texts == texts and got_labels == labels
    clf = _clf().fit(got_texts, got_labels)
    clf.save(tmp_path / "m")
    assert is_text_model_dir(tmp_path / "m")
    assert TextXRClassifier.load(tmp_path / "m").predict_labels(texts[:1], 1)[0][0] in labels[0]
