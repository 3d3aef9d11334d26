"""A text classifier: raw text to tf-idf to :class:`~xmrrs.XRLinearClassifier`.

:class:`TextXRClassifier` fits a :class:`~xmrrs.text.TfidfVectorizer` and a ranker on raw
texts and label names, and saves both as one model directory (:mod:`xmrrs.modelfile`): the
ranker's manifest and estimators, plus a ``vectorizer-<token>/`` extra holding
``tfidf.json`` (parameters, terms, idf), written in the same crash-safe save. Nothing is
pickled. The label names are the ranker's ``classes_`` (stored in its manifest).

Example
-------
>>> from xmrrs.textmodel import TextXRClassifier
>>> texts = ["red apple pie", "green apple tart", "red wine", "green tea"] * 10
>>> labels = [["fruit", "dessert"], ["fruit", "dessert"], ["drink"], ["drink"]] * 10
>>> clf = TextXRClassifier().fit(texts, labels)
>>> clf.predict_labels(["apple pie"], k=2)   # doctest: +SKIP
[['dessert', 'fruit']]
>>> clf.save("model")                        # doctest: +SKIP
>>> TextXRClassifier.load("model", mmap=True).predict_labels(["red wine"], k=1)  # doctest: +SKIP
[['drink']]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from xmrrs.text import VECTORIZER_EXTRA, TfidfVectorizer, _docs

__all__ = ["TextXRClassifier"]

FORMAT = "xmrrs.TextXRClassifier"
FORMAT_VERSION = 1
#: Name of the inline JSON extra that marks a text model (format and version).
TEXT_MODEL_EXTRA = "text_model"


class TextXRClassifier(BaseEstimator):  # type: ignore[misc]
    """Extreme multi-label classifier of raw texts: tf-idf features, then a ranker.

    Parameters
    ----------
    vectorizer : TfidfVectorizer, optional
        Texts to features (cloned). Default
        ``TfidfVectorizer(sublinear_tf=True, min_df=2)``: log-scaled term counts, terms of
        at least two documents.
    ranker : XRLinearClassifier, optional
        Features to labels (cloned). Default ``XRLinearClassifier()``. Any estimator with
        ``fit``, ``predict_topk``, ``predict``, ``score`` and ``classes_`` fits and
        predicts; :meth:`save` needs an :class:`~xmrrs.XRLinearClassifier`.

    Attributes
    ----------
    vectorizer_ : TfidfVectorizer
        The fitted vectorizer.
    ranker_ : XRLinearClassifier
        The fitted ranker.
    classes_ : ndarray of shape (n_labels,)
        Label names (``ranker_.classes_``); the ids of :meth:`predict_topk` index it.
    """

    vectorizer_: Any
    ranker_: Any
    classes_: np.ndarray

    def __init__(self, vectorizer: Any = None, ranker: Any = None) -> None:
        self.vectorizer = vectorizer
        self.ranker = ranker

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "ranker_")

    def _vectorizer(self) -> Any:
        if self.vectorizer is None:
            return TfidfVectorizer(sublinear_tf=True, min_df=2)
        return clone(self.vectorizer)

    def _ranker(self) -> Any:
        if self.ranker is None:
            from xmrrs.estimator import XRLinearClassifier

            return XRLinearClassifier()
        return clone(self.ranker)

    def fit(self, texts: Any, Y: Any) -> TextXRClassifier:
        """Fit the vectorizer on ``texts``, then the ranker on their features and ``Y``.

        Parameters
        ----------
        texts : iterable of str
            The training documents.
        Y : label lists or any target the ranker takes
            One collection of label names per text (e.g. ``[["a", "b"], ["c"]]``), a 1-D
            class vector, or a 0/1 indicator of shape ``(n_texts, n_labels)``.

        Returns
        -------
        self
        """
        if Y is None:
            raise ValueError("fit needs the labels Y of the texts (label lists or indicator)")
        docs = _docs(texts)
        vectorizer = self._vectorizer()
        X = vectorizer.fit_transform(docs)
        ranker = self._ranker().fit(X, Y)
        self.vectorizer_ = vectorizer
        self.ranker_ = ranker
        self.classes_ = ranker.classes_
        return self

    def transform(self, texts: Any) -> Any:
        """The features of ``texts`` (CSR of shape ``(n_texts, n_features)``)."""
        check_is_fitted(self, "ranker_")
        return self.vectorizer_.transform(_docs(texts))

    def predict_topk(self, texts: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best labels of each text, best first (as the ranker's ``predict_topk``).

        Returns
        -------
        ids : ndarray of int64, shape (n_texts, k)
            Indices into ``classes_``; ``-1`` pads rows with fewer candidates.
        scores : ndarray of shape (n_texts, k)
        """
        X = self.transform(texts)
        ids, scores = self.ranker_.predict_topk(X, k)
        return ids, scores

    def predict(self, texts: Any) -> Any:
        """The ranker's ``predict`` of the texts' features (sparse indicator, or classes)."""
        return self.ranker_.predict(self.transform(texts))

    def decision_function(self, texts: Any) -> Any:
        """The ranker's ``decision_function`` of the texts' features."""
        return self.ranker_.decision_function(self.transform(texts))

    def predict_labels(self, texts: Any, k: int | None = None) -> list[list[Any]]:
        """The names of the ``k`` best labels of each text, best first.

        Returns
        -------
        list of list
            One list per text, of ``classes_`` items (plain Python values); shorter than
            ``k`` where the ranker has fewer candidates.
        """
        ids, _ = self.predict_topk(texts, k)
        classes = np.asarray(self.classes_)
        return [classes[row[row >= 0]].tolist() for row in ids]

    def score(self, texts: Any, Y: Any, sample_weight: Any = None) -> float:
        """The ranker's ``score`` (precision@1 for XRLinearClassifier) on ``texts``."""
        return float(self.ranker_.score(self.transform(texts), Y, sample_weight))

    # ------------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to the directory ``path`` (no pickle inside), crash-safely.

        One :mod:`xmrrs.modelfile` directory: the ranker, a ``vectorizer-<token>/`` extra
        (``tfidf.json``) and a ``"text_model"`` JSON extra, committed together.
        ``path`` must be new, empty, or an xmrrs model (which is replaced).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Not fitted.
        TypeError
            The ranker is not an :class:`~xmrrs.XRLinearClassifier`, or the vectorizer not a
            :class:`~xmrrs.text.TfidfVectorizer`.
        FileExistsError
            ``path`` holds something that is not an xmrrs model; nothing was changed.
        """
        from xmrrs.estimator import XRLinearClassifier
        from xmrrs.modelfile import save

        check_is_fitted(self, "ranker_")
        if not isinstance(self.ranker_, XRLinearClassifier):
            raise TypeError(
                f"save needs an XRLinearClassifier ranker, got {type(self.ranker_).__name__} "
                "(pickle other rankers)"
            )
        if not isinstance(self.vectorizer_, TfidfVectorizer):
            raise TypeError(
                f"save needs an xmrrs TfidfVectorizer, got {type(self.vectorizer_).__name__}"
            )
        save(
            self.ranker_,
            path,
            extras={VECTORIZER_EXTRA: self.vectorizer_._write_dir},
            extras_json={TEXT_MODEL_EXTRA: {"format": FORMAT, "format_version": FORMAT_VERSION}},
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, mmap: bool = False, n_jobs: int | None = None
    ) -> TextXRClassifier:
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
            Model directory.
        mmap : bool, default=False
            Map the ranker's weights read-only (see :func:`xmrrs.modelfile.load`).
        n_jobs : int, optional
            Threads of the loaded vectorizer and ranker.

        Raises
        ------
        FileNotFoundError
            No model at ``path``.
        ValueError
            Not a text model (e.g. a plain ranker: load it with
            ``XRLinearClassifier.load``), or a corrupt file (the message names it).
        """
        from xmrrs.estimator import XRLinearClassifier
        from xmrrs.modelfile import MANIFEST, load_with_extras

        path = Path(path)
        ranker, extras = load_with_extras(XRLinearClassifier, path, mmap=mmap, n_jobs=n_jobs)
        mpath = path / MANIFEST
        if VECTORIZER_EXTRA not in extras.dirs:
            raise ValueError(
                f"{mpath}: a model without a vectorizer, not a text model (load it with "
                "XRLinearClassifier.load)"
            )
        marker = extras.json.get(TEXT_MODEL_EXTRA)
        if not isinstance(marker, dict) or marker.get("format") != FORMAT:
            raise ValueError(f"{mpath}: not an {FORMAT} model (no {TEXT_MODEL_EXTRA!r} extra)")
        if marker.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{mpath}: {FORMAT} format version {marker.get('format_version')!r}, this "
                f"xmrrs reads version {FORMAT_VERSION}"
            )
        d = extras.dirs[VECTORIZER_EXTRA]
        vectorizer = TfidfVectorizer._read_dir(d, n_jobs)
        n_terms = len(vectorizer.get_feature_names_out())
        if n_terms != ranker.n_features_in_:
            raise ValueError(
                f"{d}: the vectorizer has {n_terms} terms but the ranker of {mpath} takes "
                f"{ranker.n_features_in_} features"
            )
        obj = cls(vectorizer=clone(vectorizer), ranker=clone(ranker))
        obj.vectorizer_ = vectorizer
        obj.ranker_ = ranker
        obj.classes_ = ranker.classes_
        return obj
