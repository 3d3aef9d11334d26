"""XR-Transformer: a fine-tuned text encoder plus XR-Linear, from raw texts to labels.

:class:`XRTransformer` follows PECOS's XR-Transformer (``pip install "xmrrs[transformer]"``):

1. TF-IDF features of the texts (:class:`~xmrrs.text.TfidfVectorizer`);
2. a PIFA label tree over them (:func:`~xmrrs.indexing.label_representation`,
   :class:`~xmrrs.indexing.HierarchicalKMeans`);
3. multi-resolution fine-tuning of a pretrained Hugging Face encoder on the clusters of the
   chosen tree levels, coarse to fine, each stage starting from the previous one, with a
   shortlist of teacher-forced and matcher-mined clusters (see :mod:`xmrrs._finetune`);
4. an :class:`~xmrrs.XRLinearClassifier` ranker on ``[TF-IDF, embedding_weight * emb]``,
   where ``emb`` is the L2-normalised pooled embedding of the fine-tuned encoder
   (:func:`ranker_features`), optionally rotated onto its first principal axes
   (``embedding_components``: :func:`principal_axes`).

Predictions are the ranker's (the fine-tuned matchers only shape the embedding; PECOS also
restricts the ranker's search to the last matcher's clusters, which this does not do).

Saving writes one :mod:`xmrrs.modelfile` directory, no pickle: the ranker, the TF-IDF
vectorizer (``vectorizer-<token>/``), the encoder (``encoder-<token>/``: ``config.json``,
``model.safetensors``, the fast tokenizer's JSON files), the principal axes when used
(``projection-<token>/axes.safetensors``) and the parameters (inline JSON).

torch and transformers are imported inside methods: ``import xmrrs.xtransformer`` loads
neither.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from xmrrs.encoders import check_pooling, check_positive_int, check_texts
from xmrrs.hybrid import HybridMatrix

__all__ = ["XRTransformer", "principal_axes", "ranker_features"]

FORMAT = "xmrrs.XRTransformer"
FORMAT_VERSION = 1
#: Inline JSON extra of a saved XRTransformer (format, version, parameters, fit log).
XT_EXTRA = "xtransformer"
#: Directory extra holding the encoder and its tokenizer.
ENCODER_EXTRA = "encoder"
#: Directory extra holding the principal axes of the embeddings (``embedding_components``).
PROJECTION_EXTRA = "projection"
#: Rows of the training embeddings the principal axes are computed from (at most).
AXES_ROWS = 10_000
_NEGATIVES = ("tfn", "man", "tfn+man")
_ENCODER_FILES = (".json", ".safetensors")
_AXES_FILE = "axes.safetensors"


def ranker_features(tfidf: sp.csr_matrix, emb: np.ndarray, weight: float = 1.0) -> HybridMatrix:
    """The final ranker's input: the TF-IDF block beside the ``weight * emb`` block, as a
    :class:`~xmrrs.hybrid.HybridMatrix` (the embedding stays dense: the core stores and scores
    its weights densely instead of carrying it as CSR entries).

    The one place that builds it (fit and predict both call it).
    """
    return HybridMatrix(tfidf, np.asarray(emb, dtype=np.float32) * np.float32(weight))


def principal_axes(emb: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """The ``k`` leading eigenvectors (columns, largest eigenvalue first) of the uncentred
    second moment ``E^T E`` of at most :data:`AXES_ROWS` rows of ``emb`` (drawn with
    ``seed``): ``emb @ axes`` keeps the ``k`` directions that carry the most of the
    embeddings' energy. float32, ``(emb.shape[1], k)``."""
    n, d = emb.shape
    if not 1 <= k <= d:
        raise ValueError(f"embedding_components must be in [1, {d}] (the embedding width), got {k}")
    rows = np.sort(np.random.default_rng(seed).choice(n, min(n, AXES_ROWS), replace=False))
    sub = np.asarray(emb[rows], dtype=np.float64)
    _, vecs = np.linalg.eigh(sub.T @ sub)
    return np.ascontiguousarray(vecs[:, ::-1][:, :k], dtype=np.float32)


def _rotated(emb: np.ndarray, axes: np.ndarray | None) -> np.ndarray:
    """``emb`` on the principal axes (as it is without them)."""
    return emb if axes is None else np.ascontiguousarray(emb @ axes, dtype=np.float32)


def _read_axes(d: Path) -> np.ndarray:
    """The principal axes saved by ``XRTransformer._write_axes`` (checked: 2-D, finite)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        axes = load_file(str(d / _AXES_FILE)).get("axes")
    except (OSError, ValueError, SafetensorError) as e:  # missing or corrupt file
        raise ValueError(f"{d / _AXES_FILE}: cannot read the principal axes ({e})") from None
    if axes is None or axes.ndim != 2 or axes.dtype != np.float32 or not np.isfinite(axes).all():
        raise ValueError(f"{d / _AXES_FILE}: not a finite 2-D float32 'axes' tensor")
    return np.ascontiguousarray(axes)


def _float(value: Any, name: str, *, positive: bool) -> float:
    ok = isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
    if not ok or not np.isfinite(float(value)) or (float(value) <= 0 if positive else value < 0):
        raise ValueError(
            f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}"
        )
    return float(value)


def _nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


class XRTransformer(BaseEstimator):  # type: ignore[misc]
    """Extreme multi-label classifier of raw texts with a fine-tuned transformer encoder.

    Parameters
    ----------
    encoder : str or path-like
        A local Hugging Face model directory (``config.json``, weights, tokenizer files) or a
        hub name (downloaded by transformers). Required.
    pooling : {"mean", "cls"}, default="mean"
        Token states to text embedding: mean over non-padding tokens, or the first token.
    max_length : int, default=128
        Tokens kept per text (PECOS: 128).
    levels : int, list of int or None, default=None
        Tree levels fine-tuned on, coarse to fine (1: the root's children; ``depth``: the
        leaves; ``depth + 1``: the labels themselves). None: every level ``1..depth + 1``,
        the labels last (as PECOS; a shallow tree's clusters alone teach little: debian tags'
        tree has 6 clusters over 595 labels).
    epochs : int or list of int, default=1
        Epochs per stage (one value for all, or one per level). 0 everywhere: no
        fine-tuning (the pretrained encoder's embeddings are used as they are).
    batch_size : int, default=16
        Texts per training step.
    learning_rate : float, default=1e-4
        Peak AdamW learning rate of the encoder (PECOS: 1e-4), decayed linearly to 0.
    head_learning_rate : float, default=1e-3
        Peak learning rate of the per-level linear heads.
    shortlist_size : int, default=20
        Clusters the previous stage's matcher proposes per training text (its beam; PECOS's
        ``only_topk``: 20); their children are the hard negatives of the next stage.
    negatives : {"tfn+man", "tfn", "man"}, default="tfn+man"
        Shortlist of the stages after the first: children of the true clusters of the
        previous level (``tfn``), of the previous matcher's top clusters (``man``), or both.
    freeze_layers : int, default=0
        Freeze the token embeddings and this many lowest transformer blocks (cheaper
        fine-tuning on CPU; a value above the number of blocks freezes the encoder, so only
        the heads train and the embeddings do not change).
    embedding_weight : float, default=1.0
        Scale of the L2-normalised embedding in the ranker's features (TF-IDF rows have
        unit norm).
    embedding_components : int or None, default=None
        Rotate the embeddings onto their first ``k`` principal axes (:func:`principal_axes`,
        fit on the training texts' embeddings) before the ranker. The ranker's cost in the
        dense block follows its width: on debian/texts with frozen MiniLM (validation
        split), 128 or 192 of the 384 values trained XR-Linear in 1.6-2.2x TF-IDF's time
        against 2.6-3.9x for all of them, at P@k within 0.4 points of the full width
        (``benches/README.md``). None: the whole embedding.
    branching, max_leaf_size : int, default=16, 100
        Shape of the PIFA tree the encoder is fine-tuned on (PECOS's defaults).
    vectorizer : TfidfVectorizer, optional
        Texts to TF-IDF (cloned). Default ``TfidfVectorizer(sublinear_tf=True, min_df=2)``.
    ranker : XRLinearClassifier, optional
        The final ranker (cloned). Default ``XRLinearClassifier(random_state=random_state,
        n_jobs=n_jobs, dense_in_tree=True)``; it builds its own trees on the concatenated
        features (both blocks: the setting of the GPU figures in the README).
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the encoder runs (``"auto"``: CUDA when available).
    encode_batch_size : int, default=64
        Texts per forward pass when embedding (no gradients).
    random_state : int, default=0
        Seed of the tree, the heads, dropout and the batch order. Two CPU fits with one
        seed give the same model.
    verbose : int or bool, default=0
        > 0 (or True): progress bars and stage times on stderr.
    n_jobs : int, optional
        Threads of the TF-IDF, tree and ranker (None: all cores).

    Attributes
    ----------
    vectorizer_, ranker_ : the fitted TF-IDF vectorizer and XR-Linear ranker
    tree_ : ClusterTree
        The PIFA tree the encoder was fine-tuned on (not saved: :meth:`load` has none).
    encoder_, tokenizer_ : the fine-tuned transformers model (on CPU between calls) and
        its tokenizer
    classes_ : ndarray of shape (n_labels,)
        Label names; the ids of :meth:`predict_topk` index it.
    levels_ : list of int
        The fine-tuned levels.
    stage_losses_ : list of list of float
        Mean training loss of each epoch of each stage (empty lists when not fine-tuned).
    fit_times_ : dict of str to float
        Seconds spent on ``tfidf``, ``tree``, ``stage_<level>``, ``embed`` and ``ranker``.
    """

    def __init__(
        self,
        encoder: str | os.PathLike[str] | None = None,
        *,
        pooling: str = "mean",
        max_length: int = 128,
        levels: int | list[int] | None = None,
        epochs: int | list[int] = 1,
        batch_size: int = 16,
        learning_rate: float = 1e-4,
        head_learning_rate: float = 1e-3,
        shortlist_size: int = 20,
        negatives: str = "tfn+man",
        freeze_layers: int = 0,
        embedding_weight: float = 1.0,
        embedding_components: int | None = None,
        branching: int = 16,
        max_leaf_size: int = 100,
        vectorizer: Any = None,
        ranker: Any = None,
        device: str = "auto",
        encode_batch_size: int = 64,
        random_state: int = 0,
        verbose: int | bool = 0,
        n_jobs: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.pooling = pooling
        self.max_length = max_length
        self.levels = levels
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.shortlist_size = shortlist_size
        self.negatives = negatives
        self.freeze_layers = freeze_layers
        self.embedding_weight = embedding_weight
        self.embedding_components = embedding_components
        self.branching = branching
        self.max_leaf_size = max_leaf_size
        self.vectorizer = vectorizer
        self.ranker = ranker
        self.device = device
        self.encode_batch_size = encode_batch_size
        self.random_state = random_state
        self.verbose = verbose
        self.n_jobs = n_jobs

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "ranker_")

    # ------------------------------------------------------------------------ validation

    def _check_params(self) -> dict[str, Any]:
        if self.encoder is None or not isinstance(self.encoder, str | os.PathLike):
            raise ValueError(f"encoder must be a model directory or hub name, got {self.encoder!r}")
        if self.negatives not in _NEGATIVES:
            raise ValueError(f"negatives must be one of {_NEGATIVES}, got {self.negatives!r}")
        seed = _nonneg_int(self.random_state, "random_state")
        epochs = self.epochs
        if isinstance(epochs, list | tuple):
            epochs_t = tuple(_nonneg_int(e, "epochs") for e in epochs)
        else:
            epochs_t = (_nonneg_int(epochs, "epochs"),)
        if not isinstance(self.verbose, bool | np.bool_):  # True / False as in scikit-learn
            _nonneg_int(self.verbose, "verbose")
        return {
            "pooling": check_pooling(self.pooling),
            "max_length": check_positive_int(self.max_length, "max_length"),
            "epochs": epochs_t,
            "batch_size": check_positive_int(self.batch_size, "batch_size"),
            "learning_rate": _float(self.learning_rate, "learning_rate", positive=True),
            "head_learning_rate": _float(
                self.head_learning_rate, "head_learning_rate", positive=True
            ),
            "shortlist_size": check_positive_int(self.shortlist_size, "shortlist_size"),
            "freeze_layers": _nonneg_int(self.freeze_layers, "freeze_layers"),
            "embedding_weight": _float(self.embedding_weight, "embedding_weight", positive=False),
            "embedding_components": (
                None
                if self.embedding_components is None
                else check_positive_int(self.embedding_components, "embedding_components")
            ),
            "branching": check_positive_int(self.branching, "branching"),
            "max_leaf_size": check_positive_int(self.max_leaf_size, "max_leaf_size"),
            "encode_batch_size": check_positive_int(self.encode_batch_size, "encode_batch_size"),
            "seed": seed,
            "encoder": self.encoder,
        }

    def _stage_epochs(self, epochs: tuple[int, ...], levels: tuple[int, ...]) -> tuple[int, ...]:
        if isinstance(self.epochs, list | tuple):
            if len(epochs) != len(levels):
                raise ValueError(
                    f"epochs has {len(epochs)} entries but {len(levels)} levels are "
                    f"fine-tuned ({list(levels)})"
                )
            return epochs
        return epochs * len(levels)

    # ------------------------------------------------------------------------------- fit

    def fit(self, texts: Any, Y: Any) -> XRTransformer:
        """Fit TF-IDF, the PIFA tree, the encoder (stage by stage) and the ranker.

        Parameters
        ----------
        texts : iterable of str
            Training documents (non-empty).
        Y : label lists, 0/1 indicator of shape (n_texts, n_labels), or 1-D class vector
            As :meth:`xmrrs.XRLinearClassifier.fit` takes them.

        Returns
        -------
        self
        """
        from xmrrs._finetune import FinetuneConfig, check_levels, finetune
        from xmrrs._targets import as_indicator, column_to_1d
        from xmrrs.encoders import embed_batches, l2_normalize, load_encoder, resolve_device
        from xmrrs.indexing import HierarchicalKMeans, label_representation
        from xmrrs.sparse import normalize_rows

        p = self._check_params()
        encoder: str | os.PathLike[str] = p["encoder"]
        docs = check_texts(texts)
        if Y is None:
            raise ValueError("fit needs the labels Y of the texts (label lists or indicator)")
        Y = column_to_1d(Y)
        n_y = Y.shape[0] if hasattr(Y, "shape") else len(Y)
        if n_y != len(docs):
            raise ValueError(f"texts has {len(docs)} items but Y has {n_y} rows")
        Ym, _ = as_indicator(Y, len(docs))
        dev = resolve_device(self.device)
        times: dict[str, float] = {}

        t0 = time.perf_counter()
        vectorizer = self._vectorizer()
        X = sp.csr_matrix(vectorizer.fit_transform(docs), dtype=np.float32)
        times["tfidf"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        Z = label_representation(
            normalize_rows(X, n_jobs=self.n_jobs), Ym, "pifa", n_jobs=self.n_jobs
        )
        tree = (
            HierarchicalKMeans(
                branching=p["branching"],
                max_leaf_size=p["max_leaf_size"],
                random_state=p["seed"],
                n_jobs=self.n_jobs,
            )
            .fit(Z)
            .tree_
        )
        del Z
        times["tree"] = time.perf_counter() - t0
        levels = check_levels(self.levels, tree.depth)
        epochs = self._stage_epochs(p["epochs"], levels)

        tokenizer, model = load_encoder(encoder)
        k = p["embedding_components"]
        if k is not None and k > int(model.config.hidden_size):
            raise ValueError(
                f"embedding_components must be at most the encoder's hidden size "
                f"{model.config.hidden_size}, got {k}"
            )
        losses: list[list[float]] = [[] for _ in levels]
        if any(epochs):
            cfg = FinetuneConfig(
                levels=levels,
                epochs=epochs,
                pooling=p["pooling"],
                max_length=p["max_length"],
                batch_size=p["batch_size"],
                encode_batch_size=p["encode_batch_size"],
                learning_rate=p["learning_rate"],
                head_learning_rate=p["head_learning_rate"],
                shortlist_size=p["shortlist_size"],
                negatives=self.negatives,
                freeze_layers=p["freeze_layers"],
                seed=p["seed"],
                progress=bool(self.verbose),
            )
            for log in finetune(model, tokenizer, docs, Ym, tree, cfg, dev):
                losses[levels.index(log.level)] = log.epoch_losses
                times[f"stage_{log.level}"] = log.seconds
                self._log(
                    f"level {log.level} ({log.n_clusters} clusters): epoch losses "
                    f"{[round(v, 4) for v in log.epoch_losses]}, mean shortlist "
                    f"{log.mean_shortlist:.1f}, {log.seconds:.1f} s"
                )

        t0 = time.perf_counter()
        model.to(dev)
        emb = embed_batches(
            model,
            tokenizer,
            docs,
            pooling=p["pooling"],
            max_length=p["max_length"],
            batch_size=p["encode_batch_size"],
            device=dev,
            progress=bool(self.verbose),
        )
        times["embed"] = time.perf_counter() - t0

        emb = l2_normalize(emb)
        axes = None if k is None else principal_axes(emb, k, p["seed"])
        t0 = time.perf_counter()
        ranker = self._ranker(p["seed"])
        ranker.fit(ranker_features(X, _rotated(emb, axes), p["embedding_weight"]), Y)
        times["ranker"] = time.perf_counter() - t0
        self._log(f"times {', '.join(f'{k} {v:.1f} s' for k, v in times.items())}")

        self.vectorizer_ = vectorizer
        self.tokenizer_ = tokenizer
        self.encoder_ = model.cpu() if dev.type != "cpu" else model
        self.ranker_ = ranker
        self.axes_ = axes
        self.tree_ = tree
        self.classes_ = ranker.classes_
        self.levels_ = list(levels)
        self.stage_losses_ = losses
        self.fit_times_ = times
        return self

    def _vectorizer(self) -> Any:
        if self.vectorizer is None:
            from xmrrs.text import TfidfVectorizer

            return TfidfVectorizer(sublinear_tf=True, min_df=2, n_jobs=self.n_jobs)
        return clone(self.vectorizer)

    def _ranker(self, seed: int) -> Any:
        if self.ranker is None:
            from xmrrs.estimator import XRLinearClassifier

            # the tree over both blocks: the configuration of the measured figures
            return XRLinearClassifier(random_state=seed, n_jobs=self.n_jobs, dense_in_tree=True)
        return clone(self.ranker)

    def _log(self, msg: str) -> None:
        if self.verbose:
            from xmrrs._progress import Progress

            Progress(quiet=False).write(f"[XRTransformer] {msg}")

    # --------------------------------------------------------------------------- predict

    def embed(self, texts: Any) -> np.ndarray:
        """L2-normalised embeddings of ``texts`` by the fitted encoder (float32,
        ``(n_texts, hidden_size)``; before the rotation of ``embedding_components``)."""
        from xmrrs.encoders import embed_batches, l2_normalize, resolve_device

        check_is_fitted(self, "ranker_")
        docs = check_texts(texts)
        dev = resolve_device(self.device)
        self.encoder_.to(dev)
        try:
            emb = embed_batches(
                self.encoder_,
                self.tokenizer_,
                docs,
                pooling=check_pooling(self.pooling),
                max_length=check_positive_int(self.max_length, "max_length"),
                batch_size=check_positive_int(self.encode_batch_size, "encode_batch_size"),
                device=dev,
                progress=bool(self.verbose),
            )
        finally:
            self.encoder_.cpu()
        return l2_normalize(emb)

    def transform(self, texts: Any) -> Any:
        """The ranker's features of ``texts`` (see :func:`ranker_features`)."""
        check_is_fitted(self, "ranker_")
        docs = check_texts(texts)
        X = sp.csr_matrix(self.vectorizer_.transform(docs), dtype=np.float32)
        emb = _rotated(self.embed(docs), self.axes_)
        return ranker_features(X, emb, float(self.embedding_weight))

    def predict_topk(
        self, texts: Any, k: int | None = None, *, beam_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best labels of each text, best first (the ranker's ``predict_topk``).

        Returns
        -------
        ids : ndarray of int64, shape (n_texts, k)
            Indices into ``classes_``; ``-1`` pads rows with fewer candidates.
        scores : ndarray of float32, shape (n_texts, k)
        """
        X = self.transform(texts)
        ids, scores = self.ranker_.predict_topk(X, k, beam_size=beam_size)
        return ids, scores

    def predict(self, texts: Any) -> Any:
        """The ranker's ``predict`` (sparse top-k indicator, or classes for a 1-D ``y``)."""
        X = self.transform(texts)
        return self.ranker_.predict(X)

    def decision_function(self, texts: Any) -> Any:
        """The ranker's ``decision_function`` (sparse matrix of the top-k scores)."""
        X = self.transform(texts)
        return self.ranker_.decision_function(X)

    def predict_labels(self, texts: Any, k: int | None = None) -> list[list[Any]]:
        """The names of the ``k`` best labels of each text, best first."""
        ids, _ = self.predict_topk(texts, k)
        classes = np.asarray(self.classes_)
        return [classes[row[row >= 0]].tolist() for row in ids]

    def score(self, texts: Any, Y: Any, sample_weight: Any = None) -> float:
        """Precision@1 of the ranker on ``texts``."""
        X = self.transform(texts)
        return float(self.ranker_.score(X, Y, sample_weight))

    # ------------------------------------------------------------------------ persistence

    def _json_params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.get_params(deep=False).items():
            if k in ("vectorizer", "ranker", "n_jobs"):
                continue
            if isinstance(v, os.PathLike):
                v = str(v)
            elif isinstance(v, np.integer | np.floating):
                v = v.item()
            elif isinstance(v, list | tuple | np.ndarray):
                v = [x.item() if isinstance(x, np.generic) else x for x in v]
            out[k] = v
        json.dumps(out, allow_nan=False)  # raises on anything JSON cannot hold
        return out

    def _write_encoder(self, d: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            self.encoder_.save_pretrained(tmp)  # safetensors (the default since 4.35)
            self.tokenizer_.save_pretrained(tmp)
            names = sorted(os.listdir(tmp))
            for need in ("config.json", "tokenizer.json"):
                if need not in names:
                    raise ValueError(
                        f"saving the encoder wrote no {need} (a fast tokenizer and a "
                        f"transformers model are needed); wrote {names}"
                    )
            if not any(n.endswith(".safetensors") for n in names):
                raise ValueError(f"saving the encoder wrote no safetensors weights: {names}")
            for name in names:  # the JSON and safetensors files; vocab.txt etc. are redundant
                if name.endswith(_ENCODER_FILES) and not name.startswith("."):
                    shutil.copyfile(os.path.join(tmp, name), d / name)
                    with open(d / name, "rb") as f:
                        os.fsync(f.fileno())

    def _write_axes(self, d: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"axes": np.ascontiguousarray(self.axes_)}, str(d / _AXES_FILE))
        with open(d / _AXES_FILE, "rb") as f:
            os.fsync(f.fileno())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to the directory ``path`` (no pickle), crash-safely.

        One :mod:`xmrrs.modelfile` directory: the ranker, ``vectorizer-<token>/``,
        ``encoder-<token>/`` (weights as safetensors, config and tokenizer as JSON) and an
        ``"xtransformer"`` JSON extra (parameters and fit log). ``path`` must be new, empty,
        or an xmrrs model (which is replaced).
        """
        from xmrrs.estimator import XRLinearClassifier
        from xmrrs.modelfile import save
        from xmrrs.text import VECTORIZER_EXTRA, TfidfVectorizer

        check_is_fitted(self, "ranker_")
        if not isinstance(self.ranker_, XRLinearClassifier):
            raise TypeError(f"save needs an XRLinearClassifier ranker, got {self.ranker_!r}")
        if not isinstance(self.vectorizer_, TfidfVectorizer):
            raise TypeError(f"save needs an xmrrs TfidfVectorizer, got {self.vectorizer_!r}")
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "params": self._json_params(),
            "levels": self.levels_,
            "stage_losses": self.stage_losses_,
            "fit_times": self.fit_times_,
        }
        save(
            self.ranker_,
            path,
            extras={
                VECTORIZER_EXTRA: self.vectorizer_._write_dir,
                ENCODER_EXTRA: self._write_encoder,
                **({} if self.axes_ is None else {PROJECTION_EXTRA: self._write_axes}),
            },
            extras_json={XT_EXTRA: doc},
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, mmap: bool = False, n_jobs: int | None = None
    ) -> XRTransformer:
        """Read a model written by :meth:`save` (``mmap`` maps the ranker's weights).

        Raises
        ------
        FileNotFoundError
            No model at ``path``.
        ValueError
            Not an XRTransformer model, or a corrupt one (the message names the file).
        """
        from xmrrs.encoders import load_encoder
        from xmrrs.estimator import XRLinearClassifier
        from xmrrs.modelfile import MANIFEST, load_with_extras
        from xmrrs.text import VECTORIZER_EXTRA, TfidfVectorizer

        path = Path(path)
        mpath = path / MANIFEST
        ranker, extras = load_with_extras(XRLinearClassifier, path, mmap=mmap, n_jobs=n_jobs)
        doc = extras.json.get(XT_EXTRA)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{mpath}: not an {FORMAT} model (no {XT_EXTRA!r} extra)")
        if doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{mpath}: {FORMAT} format version {doc.get('format_version')!r}, this xmrrs "
                f"reads version {FORMAT_VERSION}"
            )
        for key in (VECTORIZER_EXTRA, ENCODER_EXTRA):
            if key not in extras.dirs:
                raise ValueError(f"{mpath}: no {key!r} directory in an {FORMAT} model")
        vectorizer = TfidfVectorizer._read_dir(extras.dirs[VECTORIZER_EXTRA], n_jobs)
        tokenizer, model = load_encoder(extras.dirs[ENCODER_EXTRA])
        hidden = int(model.config.hidden_size)
        axes = (
            _read_axes(extras.dirs[PROJECTION_EXTRA]) if PROJECTION_EXTRA in extras.dirs else None
        )
        if axes is not None and axes.shape[0] != hidden:
            raise ValueError(
                f"{mpath}: the principal axes are {axes.shape} but the encoder's embeddings "
                f"have {hidden} values"
            )
        width = hidden if axes is None else axes.shape[1]
        n_terms = len(vectorizer.get_feature_names_out())
        n_features = n_terms + width
        if n_features != ranker.n_features_in_:
            raise ValueError(
                f"{mpath}: the ranker takes {ranker.n_features_in_} features but the "
                f"vectorizer ({n_terms} terms) and the embeddings ({width}) give {n_features}"
            )
        try:
            obj = cls(**doc["params"], n_jobs=n_jobs)
            obj._check_params()
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{mpath}: bad {XT_EXTRA!r} parameters ({e})") from None
        obj.set_params(vectorizer=clone(vectorizer), ranker=clone(ranker))
        obj.vectorizer_ = vectorizer
        obj.tokenizer_ = tokenizer
        obj.encoder_ = model
        obj.ranker_ = ranker
        obj.axes_ = axes
        if obj.embedding_components != (None if axes is None else axes.shape[1]):
            raise ValueError(f"{mpath}: embedding_components disagrees with the saved axes")
        obj.classes_ = ranker.classes_
        obj.levels_ = list(doc.get("levels", []))
        obj.stage_losses_ = [list(v) for v in doc.get("stage_losses", [])]
        obj.fit_times_ = dict(doc.get("fit_times", {}))
        return obj
