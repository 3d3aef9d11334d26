"""Model directories of :class:`~xmrrs.XRLinearClassifier`: safe to load, fast to map.

Layout (``format_version`` 1)::

    model/
      xmrrs-model.json   manifest: format name and version, xmrrs version, parameters,
                         n_features_in, feature names, classes, list of estimators
      estimator-0/       one directory per tree, written by the Rust core: a JSON manifest and
      estimator-1/       one array file (dtype, shape, offset, checksum of each array)

Nothing is pickled, so loading a model from a stranger cannot run code. Loading checks the
format version, every shape and (unless ``mmap=True``) the checksums, and rejects a truncated
or corrupt directory with a ``ValueError`` that names the file. With ``mmap=True`` the weights
are mapped read-only: the model answers queries within milliseconds of ``load`` and processes
share the pages; the checksum is then not read (call ``verify()`` on each of ``models_`` to
check it), but every structural check still runs.

Constructor parameters that JSON cannot hold (a callable ``representation``, an ``indexer``
object) are saved as their ``repr`` and restored to their defaults: they only matter to a new
``fit``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from xmrrs import _xmrrs

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "load", "save"]

FORMAT = "xmrrs.XRLinearClassifier"
FORMAT_VERSION = 1
MANIFEST = "xmrrs-model.json"

T = TypeVar("T")


def _json_param(value: Any) -> tuple[bool, Any]:
    if value is None or isinstance(value, bool | str):
        return True, value
    if isinstance(value, int | np.integer):
        return True, int(value)
    if isinstance(value, float | np.floating):
        return True, float(value)
    if isinstance(value, list | tuple | np.ndarray) and all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value
    ):
        return True, [int(v) for v in value]  # e.g. per-level fan-outs in branching
    return False, repr(value)


def _classes_json(classes: np.ndarray) -> dict[str, Any]:
    n = len(classes)
    if classes.dtype.kind in "iu" and np.array_equal(classes, np.arange(n)):
        return {"kind": "range", "n": n}
    values = classes.tolist()
    if all(isinstance(v, str) for v in values):
        return {"kind": "str", "values": values}
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return {"kind": "int", "values": values}
    raise ValueError(
        "classes_ holds label names that JSON cannot store exactly (only str or int names "
        f"can be saved; got {type(values[0]).__name__}); use pickle or rename the labels"
    )


def _classes_from_json(c: Any, where: str) -> np.ndarray:
    try:
        if c["kind"] == "range":
            return np.arange(int(c["n"]))
        if c["kind"] == "str":
            return np.asarray(c["values"], dtype=str)
        if c["kind"] == "int":
            return np.asarray(c["values"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: corrupt 'classes' entry ({e})") from None
    raise ValueError(f"{where}: unknown classes kind {c.get('kind')!r}")


def save(est: Any, path: str | os.PathLike[str]) -> None:
    """Write a fitted estimator to the directory ``path``, atomically.

    An existing ``path`` is replaced only if it is an xmrrs model or an empty directory.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        ``est`` is not fitted.
    FileExistsError
        ``path`` exists and is not an xmrrs model directory.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est, "models_")
    path = Path(path)
    if path.exists() and not (path / MANIFEST).is_file():
        if not path.is_dir() or any(path.iterdir()):
            raise FileExistsError(
                f"{path} exists and is not an xmrrs model (nor an empty directory); refusing "
                "to replace it"
            )
    params: dict[str, Any] = {}
    unsaved: dict[str, str] = {}
    for k, v in est.get_params(deep=False).items():
        ok, j = _json_param(v)
        if ok:
            params[k] = j
        else:
            unsaved[k] = j
    names = getattr(est, "feature_names_in_", None)
    estimators = [f"estimator-{i}" for i in range(len(est.models_))]
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "xmrrs_version": _xmrrs.__version__,
        "params": params,
        "unsaved_params": unsaved,
        "n_features_in": int(est.n_features_in_),
        "feature_names_in": None if names is None else [str(s) for s in names],
        "classes": _classes_json(np.asarray(est.classes_)),
        "estimators": estimators,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        for name, model in zip(estimators, est.models_, strict=True):
            model.save(str(tmp / name))
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(cls: type[T], path: str | os.PathLike[str], *, mmap: bool = False) -> T:
    """Read a model directory written by :func:`save` into a new ``cls`` instance.

    Raises
    ------
    FileNotFoundError
        No model at ``path``.
    ValueError
        Not an xmrrs model, an unsupported format version, or a corrupt/truncated file.
    """
    from xmrrs.indexing import ClusterTree

    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(f"{path} is not an xmrrs model directory (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{mpath}: corrupt manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{mpath}: not an {FORMAT} model")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{mpath}: format version {version!r}, this xmrrs reads version {FORMAT_VERSION}"
        )
    try:
        params = dict(manifest["params"])
        n_features = int(manifest["n_features_in"])
        estimators = [str(e) for e in manifest["estimators"]]
        feature_names = manifest["feature_names_in"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{mpath}: corrupt manifest (missing or bad {e})") from None
    classes = _classes_from_json(manifest.get("classes"), str(mpath))
    if not estimators:
        raise ValueError(f"{mpath}: corrupt manifest (no estimators)")
    models = []
    for name in estimators:
        if "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"{mpath}: corrupt manifest (bad estimator name {name!r})")
        model = _xmrrs.XrModel.load(str(path / name), mmap)
        if model.n_features != n_features or model.n_labels != len(classes):
            raise ValueError(
                f"{path / name}: model of shape ({model.n_features} features, "
                f"{model.n_labels} labels) does not match the manifest ({n_features}, "
                f"{len(classes)})"
            )
        models.append(model)
    try:
        est: Any = cls(**params)
    except TypeError as e:
        raise ValueError(f"{mpath}: parameters do not fit {cls.__name__} ({e})") from None
    est.models_ = models
    est.classes_ = classes
    est.n_features_in_ = n_features
    if feature_names is not None:
        est.feature_names_in_ = np.asarray(feature_names, dtype=object)
    est.tree_ = ClusterTree(*models[0].tree_parts())
    loaded: T = est
    return loaded
