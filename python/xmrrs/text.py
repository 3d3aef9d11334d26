"""Raw text to tf-idf features with a Rust core.

:class:`TfidfVectorizer` is scikit-learn's ``TfidfVectorizer`` (same vocabulary, same order,
same values within float32 rounding) for the default preprocessing, multithreaded.

Tokenization is scikit-learn's: ``token_pattern=r"(?u)\\b\\w\\w+\\b"`` on the text lower-cased by
Python's ``str.lower``; ``\\w`` means what it means to Python's ``re`` (letters, digits and other
numeric characters, ``_``; not combining marks). The Rust core carries CPython's tables for
these classes (Unicode version in ``xmrrs._xmrrs.TEXT_UNICODE_VERSION``).

Also here: :func:`read_text_file` (a jsonl or tsv file of texts and label lists) and
:func:`is_text_model_dir`. The text classifier itself (tf-idf then
:class:`~xmrrs.XRLinearClassifier`) is :class:`xmrrs.textmodel.TextXRClassifier`, also
reachable as ``xmrrs.text.TextXRClassifier``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin

from xmrrs import _xmrrs
from xmrrs._files import read_regular, write_atomic

__all__ = ["TfidfVectorizer", "is_text_model_dir", "read_text_file"]

VECTORIZER_FORMAT = "xmrrs.TfidfVectorizer"
VECTORIZER_FORMAT_VERSION = 1
VECTORIZER_FILE = "tfidf.json"
#: Name of the extra (see :mod:`xmrrs.modelfile`) that holds a text model's vectorizer.
VECTORIZER_EXTRA = "vectorizer"

# parameters that shape the fitted model (saved with it); n_jobs and dtype are not
_MODEL_PARAMS = (
    "analyzer",
    "ngram_range",
    "lowercase",
    "binary",
    "sublinear_tf",
    "use_idf",
    "smooth_idf",
    "norm",
)


def _docs(raw_documents: Any) -> list[Any]:
    """The documents as a list (str or bytes items; the core checks each)."""
    if isinstance(raw_documents, str | bytes):
        raise ValueError("Iterable over raw text documents expected, string object received.")
    if not isinstance(raw_documents, Iterable):
        raise TypeError(
            f"raw_documents must be an iterable of str, got {type(raw_documents).__name__}"
        )
    return list(raw_documents)


def _csr(t: tuple[Any, ...]) -> sp.csr_matrix:
    n, d, indptr, indices, data = t
    if indptr[-1] <= np.iinfo(np.int32).max and indices.dtype == np.int32:
        indptr = indptr.astype(np.int32)
    return sp.csr_matrix((data, indices, indptr), shape=(n, d))


def _sparse_out(m: sp.csr_matrix) -> Any:
    from xmrrs.estimator import _sparse_out as out

    return out(m)


def _df_param(value: Any, name: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be an int or a float, got {value!r}")
    if isinstance(value, Integral):
        if value < 1:
            raise ValueError(f"{name} must be an int >= 1 or a float in [0.0, 1.0], got {value}")
        return int(value)
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be an int >= 1 or a float in [0.0, 1.0], got {value}")
    return float(value)


class TfidfVectorizer(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Convert raw documents to a matrix of tf-idf features (a Rust port of scikit-learn's).

    Equal to ``sklearn.feature_extraction.text.TfidfVectorizer`` with the same settings
    (``input="content"``, ``encoding="utf-8"``, ``decode_error="strict"``, no accent
    stripping, no stop words, the default ``token_pattern``): the same vocabulary in the same
    (sorted) column order and the same values within float32 rounding. Documents are
    processed in parallel with the GIL released, and the output is the same at any
    ``n_jobs``.

    Parameters
    ----------
    analyzer : {"word", "char", "char_wb"}, default="word"
        Word n-grams of the tokens of ``(?u)\\b\\w\\w+\\b``, character n-grams of the text
        (white-space runs collapsed), or character n-grams inside words padded with spaces.
    ngram_range : tuple (min_n, max_n), default=(1, 1)
        n-grams with ``min_n <= n <= max_n``.
    lowercase : bool, default=True
        Lower-case the text first (Python's ``str.lower``).
    min_df, max_df : int or float, default=1 and 1.0
        Drop terms found in fewer (more) documents than this: a count (int >= 1) or a
        fraction of the documents (float in [0, 1]).
    max_features : int, optional
        Keep only the ``max_features`` terms most frequent in the corpus. Ties at the cut go
        to the term that sorts first (scikit-learn leaves them to NumPy's unstable sort).
    binary : bool, default=False
        Term frequencies are 0/1.
    norm : {"l2", "l1"} or None, default="l2"
        Scale each row to unit norm.
    use_idf, smooth_idf, sublinear_tf : bool, default=True, True, False
        As scikit-learn: idf weighting, ``idf = ln((1 + n) / (1 + df)) + 1`` (without the
        ones when not smooth), ``tf = 1 + ln(tf)``.
    dtype : {np.float32, np.float64}, default=np.float32
        Type of the output values (scikit-learn's default is float64). Weights are computed
        in float64 and rounded once.
    n_jobs : int, optional
        Threads (None or -1: all cores).

    Attributes
    ----------
    vocabulary_ : dict
        Term to column index.
    idf_ : ndarray of shape (n_features,)
        Inverse document frequencies (only when ``use_idf``), in ``dtype``.

    Notes
    -----
    Transform uses the analyzer and weighting of the last fit (scikit-learn's reads the
    current parameters). ``save(path)`` / ``load(path)`` store the vocabulary, idf and the
    parameters as JSON in a directory (no pickle); pickling stores the same plain data.
    """

    def __init__(
        self,
        *,
        analyzer: str = "word",
        ngram_range: tuple[int, int] = (1, 1),
        lowercase: bool = True,
        min_df: float | int = 1,
        max_df: float | int = 1.0,
        max_features: int | None = None,
        binary: bool = False,
        norm: str | None = "l2",
        use_idf: bool = True,
        smooth_idf: bool = True,
        sublinear_tf: bool = False,
        dtype: Any = np.float32,
        n_jobs: int | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.ngram_range = ngram_range
        self.lowercase = lowercase
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.binary = binary
        self.norm = norm
        self.use_idf = use_idf
        self.smooth_idf = smooth_idf
        self.sublinear_tf = sublinear_tf
        self.dtype = dtype
        self.n_jobs = n_jobs

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_tfidf")

    # ------------------------------------------------------------------------ validation

    def _model_params(self) -> dict[str, Any]:
        """The validated parameters that shape the model, as the core takes them."""
        if self.analyzer not in ("word", "char", "char_wb"):
            raise ValueError(
                f"analyzer must be 'word', 'char' or 'char_wb', got {self.analyzer!r} "
                "(callables are not supported)"
            )
        r = self.ngram_range
        if (
            not isinstance(r, tuple | list)
            or len(r) != 2
            or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in r)
        ):
            raise TypeError(f"ngram_range must be a tuple of two ints, got {r!r}")
        if not 1 <= r[0] <= r[1]:
            raise ValueError(
                f"ngram_range must be (min_n, max_n) with 1 <= min_n <= max_n, got {tuple(r)}"
            )
        if self.norm not in ("l1", "l2", None):
            raise ValueError(f"norm must be 'l1', 'l2' or None, got {self.norm!r}")
        for name in ("lowercase", "binary", "use_idf", "smooth_idf", "sublinear_tf"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        # an n beyond any document's length changes nothing: cap it to what the core takes
        cap = 2**31 - 1
        return {
            "analyzer": self.analyzer,
            "ngram_range": (min(int(r[0]), cap), min(int(r[1]), cap)),
            "lowercase": bool(self.lowercase),
            "binary": bool(self.binary),
            "sublinear_tf": bool(self.sublinear_tf),
            "use_idf": bool(self.use_idf),
            "smooth_idf": bool(self.smooth_idf),
            "norm": self.norm,
        }

    def _float64(self) -> bool:
        dt = np.dtype(self.dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dt}")
        return bool(dt == np.float64)

    # ------------------------------------------------------------------------ fitting

    def fit(self, raw_documents: Any, y: Any = None) -> TfidfVectorizer:
        """Learn the vocabulary and idf of ``raw_documents`` (an iterable of str)."""
        self.fit_transform(raw_documents)
        return self

    def fit_transform(self, raw_documents: Any, y: Any = None) -> Any:
        """Learn vocabulary and idf; return the tf-idf matrix (CSR, ``dtype``)."""
        params = self._model_params()
        min_df = _df_param(self.min_df, "min_df")
        max_df = _df_param(self.max_df, "max_df")
        mf = self.max_features
        if mf is not None and (isinstance(mf, bool) or not isinstance(mf, Integral) or mf < 1):
            raise ValueError(f"max_features must be None or an int >= 1, got {mf!r}")
        f64 = self._float64()
        docs = _docs(raw_documents)
        model, x = _xmrrs.TfidfModel.fit_transform(
            docs,
            min_df=min_df,
            max_df=max_df,
            max_features=None if mf is None else int(mf),
            float64=f64,
            n_jobs=self.n_jobs,
            **params,
        )
        self._set_model(model, params)
        return _sparse_out(_csr(x))

    def _set_model(self, model: Any, params: dict[str, Any]) -> None:
        self._tfidf = model
        self._fit_params = params
        self.__dict__.pop("_vocabulary", None)
        if params["use_idf"]:
            self.idf_ = model.idf().astype(np.float64 if self._float64() else np.float32)
        else:
            self.__dict__.pop("idf_", None)

    def transform(self, raw_documents: Any) -> Any:
        """The tf-idf matrix of ``raw_documents`` over the fitted vocabulary (CSR)."""
        self._check_fitted()
        docs = _docs(raw_documents)
        x = self._tfidf.transform(docs, float64=self._float64(), n_jobs=self.n_jobs)
        return _sparse_out(_csr(x))

    def _check_fitted(self) -> None:
        if not hasattr(self, "_tfidf"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            )

    @property
    def vocabulary_(self) -> dict[str, int]:
        """Term to column index (built on first access)."""
        self._check_fitted()
        voc = self.__dict__.get("_vocabulary")
        if voc is None:
            names = self._tfidf.feature_names()
            voc = dict(zip(names, range(len(names)), strict=True))
            self._vocabulary = voc
        return voc

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The terms in column order (an object array of str)."""
        self._check_fitted()
        return np.asarray(self._tfidf.feature_names(), dtype=object)

    # ------------------------------------------------------------------------ persistence

    def _to_json(self) -> dict[str, Any]:
        self._check_fitted()
        params = dict(self._fit_params)
        params["ngram_range"] = list(params["ngram_range"])
        return {
            "format": VECTORIZER_FORMAT,
            "format_version": VECTORIZER_FORMAT_VERSION,
            "xmrrs_version": _xmrrs.__version__,
            "params": params,
            "other_params": {
                "min_df": self.min_df,
                "max_df": self.max_df,
                "max_features": self.max_features,
                "dtype": np.dtype(self.dtype).name,
            },
            "terms": self._tfidf.feature_names(),
            "idf": [float(v) for v in self._tfidf.idf()],
        }

    @classmethod
    def _from_json(cls, doc: Any, where: str, n_jobs: int | None = None) -> TfidfVectorizer:
        if not isinstance(doc, dict) or doc.get("format") != VECTORIZER_FORMAT:
            raise ValueError(f"{where}: not an {VECTORIZER_FORMAT}")
        if doc.get("format_version") != VECTORIZER_FORMAT_VERSION:
            raise ValueError(
                f"{where}: format version {doc.get('format_version')!r}, this xmrrs reads "
                f"version {VECTORIZER_FORMAT_VERSION}"
            )
        try:
            params = dict(doc["params"])
            other = dict(doc["other_params"])
            terms, idf = doc["terms"], doc["idf"]
            if set(params) != set(_MODEL_PARAMS) or set(other) != {
                "min_df",
                "max_df",
                "max_features",
                "dtype",
            }:
                raise ValueError("unexpected parameter names")
            if not isinstance(params["ngram_range"], list):
                raise ValueError("ngram_range is not a list")
            params["ngram_range"] = tuple(params["ngram_range"])
            other["dtype"] = np.dtype(other["dtype"]).type
            if not (isinstance(terms, list) and all(isinstance(t, str) for t in terms)):
                raise ValueError("terms must be a list of str")
            if not (
                isinstance(idf, list)
                and all(isinstance(v, float | int) and not isinstance(v, bool) for v in idf)
            ):
                raise ValueError("idf must be a list of numbers")
            est = cls(**params, **other, n_jobs=n_jobs)
            checked = est._model_params()
            est._float64()
            model = _xmrrs.TfidfModel.from_parts(terms, np.asarray(idf, np.float64), **checked)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: corrupt vectorizer ({e})") from None
        est._set_model(model, checked)
        return est

    def _write_dir(self, d: Path) -> None:
        """Write ``tfidf.json`` into the existing directory ``d``, atomically and synced."""
        data = json.dumps(self._to_json(), ensure_ascii=False).encode("utf-8")
        write_atomic(d / VECTORIZER_FILE, data)

    @classmethod
    def _read_dir(cls, d: Path, n_jobs: int | None = None) -> TfidfVectorizer:
        p = d / VECTORIZER_FILE
        if not p.is_file():
            raise ValueError(f"{p}: missing vectorizer file")
        try:
            doc = json.loads(read_regular(p, "vectorizer").decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{p}: corrupt vectorizer ({e})") from None
        return cls._from_json(doc, str(p), n_jobs)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted vectorizer to the directory ``path`` (created if missing) as
        plain JSON (``tfidf.json``: parameters, terms, idf; no pickle), atomically."""
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        self._write_dir(d)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, n_jobs: int | None = None) -> TfidfVectorizer:
        """Read a vectorizer written by :meth:`save`.

        Raises
        ------
        ValueError
            Not a vectorizer directory, or a corrupt file (the message names it).
        """
        return cls._read_dir(Path(path), n_jobs)

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = dict(super().__getstate__())
        state.pop("_vocabulary", None)
        if "_tfidf" in state:
            state["_tfidf"] = self._to_json()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        saved = state.pop("_tfidf", None)
        super().__setstate__(state)
        if saved is not None:
            model = _xmrrs.TfidfModel.from_parts(
                saved["terms"], np.asarray(saved["idf"], np.float64), **self._fit_params
            )
            self._tfidf = model


# ---------------------------------------------------------------------------- text files

_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_TSV_SUFFIXES = (".tsv", ".tab")


def read_text_file(
    path: str | os.PathLike[str],
    text_field: str = "text",
    label_field: str = "labels",
    fmt: str = "auto",
) -> tuple[list[str], list[list[str]] | None]:
    """Read texts, and their label names if the file has them, from a jsonl or tsv file.

    Formats (UTF-8; ``\\n`` or ``\\r\\n`` line ends; a leading BOM and blank lines are
    skipped):

    - ``jsonl``: one JSON object per line, e.g. ``{"text": "...", "labels": ["a", "b"]}``.
      ``text_field`` must hold a string; ``label_field`` a list of strings, or be absent (or
      null) on every line of a file for prediction. Other fields are ignored.
    - ``tsv``: ``text<TAB>label1,label2`` per line, or just ``text`` (no tab) on every line
      of a file for prediction. There is no escaping: the text cannot hold a tab or a line
      break (a second tab on a line is an error), and a label name cannot hold a comma
      (spaces around names are stripped, empty names dropped, so ``text<TAB>`` is a row with
      no labels). Use jsonl for other texts or names.

    Parameters
    ----------
    path : str or path-like
        The file.
    text_field, label_field : str, default="text" and "labels"
        Field names of a jsonl file (ignored for tsv).
    fmt : {"auto", "jsonl", "tsv"}, default="auto"
        ``"auto"``: by the suffix (``.jsonl``/``.ndjson``: jsonl; ``.tsv``/``.tab``: tsv).

    Returns
    -------
    texts : list of str
        One per non-blank line, in file order.
    labels : list of list of str, or None
        The label names of each text, or None when no line has labels.

    Raises
    ------
    ValueError
        An unknown format or suffix, invalid UTF-8, a bad line (the message names the file
        and the line number), or a file in which some lines have labels and others not.
    OSError
        The file cannot be read.
    """
    p = Path(path)
    if fmt == "auto":
        suffix = p.suffix.lower()
        if suffix in _JSONL_SUFFIXES:
            fmt = "jsonl"
        elif suffix in _TSV_SUFFIXES:
            fmt = "tsv"
        else:
            raise ValueError(
                f"{p}: cannot tell the format from the suffix {suffix!r} (.jsonl, .ndjson, "
                ".tsv or .tab); pass fmt='jsonl' or fmt='tsv'"
            )
    if fmt not in ("jsonl", "tsv"):
        raise ValueError(f"fmt must be 'auto', 'jsonl' or 'tsv', got {fmt!r}")
    texts: list[str] = []
    labels: list[list[str] | None] = []
    first_with: int | None = None  # line numbers, for the message on a mixed file
    first_without: int | None = None
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{p}:{lineno}: not UTF-8 ({e.reason} at byte {e.start})"
                ) from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            line = line.rstrip("\n").removesuffix("\r")
            if not line.strip():
                continue
            if fmt == "jsonl":
                text, labs = _jsonl_line(line, text_field, label_field, f"{p}:{lineno}")
            else:
                text, labs = _tsv_line(line, f"{p}:{lineno}")
            if labs is None:
                first_without = first_without or lineno
            else:
                first_with = first_with or lineno
            if first_with is not None and first_without is not None:
                raise ValueError(
                    f"{p}:{max(first_with, first_without)}: line {first_with} has labels but "
                    f"line {first_without} has none (label every line, or none)"
                )
            texts.append(text)
            labels.append(labs)
    if first_with is None:
        return texts, None
    return texts, [lab if lab is not None else [] for lab in labels]


def _jsonl_line(
    line: str, text_field: str, label_field: str, where: str
) -> tuple[str, list[str] | None]:
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{where}: not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if text_field not in obj:
        raise ValueError(f"{where}: no {text_field!r} field")
    text = obj[text_field]
    if not isinstance(text, str):
        raise ValueError(f"{where}: {text_field!r} must be a string, got {type(text).__name__}")
    labs = obj.get(label_field)
    if labs is None:
        return text, None
    if not isinstance(labs, list) or not all(isinstance(v, str) for v in labs):
        raise ValueError(f"{where}: {label_field!r} must be a list of strings, got {labs!r:.80}")
    return text, labs


def _tsv_line(line: str, where: str) -> tuple[str, list[str] | None]:
    text, tab, rest = line.partition("\t")
    if not tab:
        return text, None
    if "\t" in rest:
        raise ValueError(
            f"{where}: more than one tab (expected text<TAB>label1,label2; the text cannot "
            "hold a tab)"
        )
    return text, [name for name in (s.strip() for s in rest.split(",")) if name]


def is_text_model_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a model directory with a vectorizer (a saved
    :class:`~xmrrs.textmodel.TextXRClassifier`), judged by its manifest alone.

    False for a missing path, a plain :class:`~xmrrs.XRLinearClassifier` model, or anything
    that is not a readable model directory.
    """
    from xmrrs.modelfile import read_extras

    try:
        return VECTORIZER_EXTRA in read_extras(path).dirs
    except (OSError, ValueError):
        return False


def __getattr__(name: str) -> Any:
    if name == "TextXRClassifier":  # lazily: textmodel imports this module
        from xmrrs.textmodel import TextXRClassifier

        return TextXRClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
