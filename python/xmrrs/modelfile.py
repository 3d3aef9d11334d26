"""Model directories of :class:`~xmrrs.XRLinearClassifier`: safe to load, fast to map.

Layout (``format_version`` 1)::

    model/
      xmrrs-model.json        manifest: format name and version, xmrrs version, parameters,
                              n_features_in, feature names, classes, target type
                              ("multilabel" or "multiclass"), list of estimators
      estimator-0-<token>/    one directory per tree, written by the Rust core: a JSON manifest
      estimator-1-<token>/    and one array file (dtype, shape, offset, checksum of each array)
      <name>-<token>/         optional companions ("extras", e.g. ``vectorizer-<token>/`` of a
                              text model), named by the manifest's ``"extras"``

(models written by xmrrs 0.x before the token name their directories ``estimator-0``...;
they load the same.) Nothing is pickled, so loading a model from a stranger cannot run code.
Loading checks the format version, the parameters, every shape and (unless ``mmap=True``) the
checksums, and rejects a truncated or corrupt directory with a ``ValueError`` that names the
file. With ``mmap=True`` the weights are mapped read-only: the model answers queries within
milliseconds of ``load`` and processes share the pages; the checksum is then not read (call
``verify()`` on each of ``models_`` to check it), but every structural check still runs.

Small companions may instead be plain JSON inside the manifest (``"extras_json"``). Extras are
how a wrapper (:class:`~xmrrs.textmodel.TextXRClassifier`,
:class:`~xmrrs.calibration.CalibratedRanker`) stores what it adds to the ranker in the same
directory and the same crash-safe write: ``save(est, path, extras=..., extras_json=...)`` and
``load_with_extras``. An extra directory holds only regular files named ``*.json``,
``*.safetensors`` or ``*.npy`` (and their ``.<name>.tmp*`` temporary files), so that a later
save can recognise and replace it. Manifests without extras (all models of earlier versions)
load as before, and ``XRLinearClassifier.load`` reads the ranker of any such directory.

Saving is crash-safe: the manifest is the commit point. A new model's estimators and extras
are written into fresh directories beside the old ones, then the manifest is written to a
temporary file, synced and renamed over ``xmrrs-model.json``; only then are the old
estimators and extras deleted. A process killed at any moment leaves either the complete old
model or the complete new one (plus leftovers that ``load`` ignores and the next ``save``
removes). Concurrent saves to one path are not supported.

Constructor parameters that JSON cannot hold (a callable ``representation``, an ``indexer``
object) are saved as their ``repr`` and restored to their defaults: they only matter to a new
``fit``. ``n_jobs`` is not saved: the loading process chooses it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from xmrrs import _xmrrs
from xmrrs._files import read_regular

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "ExtraWriter",
    "Extras",
    "check_target",
    "load",
    "load_with_extras",
    "read_extras",
    "save",
]

FORMAT = "xmrrs.XRLinearClassifier"
FORMAT_VERSION = 1
MANIFEST = "xmrrs-model.json"
#: Largest manifest ``load`` reads (a real one is a few KiB, plus the class names).
MAX_MANIFEST_BYTES = 1 << 30

T = TypeVar("T")

#: Writes the files of one extra into the (new, empty) directory it is given; it should sync
#: them (the directory itself is synced by :func:`save`).
ExtraWriter = Callable[[Path], None]


@dataclass(frozen=True)
class Extras:
    """The companions of a model directory, as :func:`load_with_extras` returns them.

    Attributes
    ----------
    dirs : dict of str to Path
        Name of each extra directory to its path (checked to exist and be a directory).
    json : dict of str to object
        Name of each inline JSON extra to its parsed value.
    """

    dirs: dict[str, Path] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)


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
    kind = c.get("kind") if isinstance(c, dict) else None
    if kind == "range" and _is_int(c.get("n")) and c["n"] >= 0:
        return np.arange(c["n"])
    values = c.get("values") if isinstance(c, dict) else None
    if kind == "str" and isinstance(values, list) and all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=str)
    if kind == "int" and isinstance(values, list) and all(_is_int(v) for v in values):
        try:
            return np.asarray(values, dtype=np.int64)
        except OverflowError:
            pass
    raise ValueError(f"{where}: corrupt 'classes' entry (kind {kind!r})")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# names of what a save writes; a directory that holds anything else is not replaced
_TOKEN = "[0-9a-f]{16}"
_ESTIMATOR_DIR = re.compile(rf"estimator-[0-9]+(-{_TOKEN})?")  # no token: models of xmrrs 0.x
_MANIFEST_TMP = re.compile(rf"\.{re.escape(MANIFEST)}\.tmp-{_TOKEN}")
_ESTIMATOR_FILE = re.compile(r"xr_model\.json|[^.].*\.safetensors")
_ESTIMATOR_TMP = re.compile(r"\.(xr_model\.json|[^.].*\.safetensors)\.tmp[0-9A-Za-z_.-]*")
# extras: "<name>-<token>" directories of plain data files
_EXTRA_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_EXTRA_DIR = re.compile(rf"[a-z][a-z0-9_]{{0,63}}-{_TOKEN}")
_EXTRA_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.(json|safetensors|npy)")
_EXTRA_TMP = re.compile(
    r"\.[A-Za-z0-9_][A-Za-z0-9_.-]*\.(json|safetensors|npy)\.tmp[0-9A-Za-z_.-]*"
)


def _new_dir_pattern(name: str) -> re.Pattern[str]:
    """Names of the directories beside ``name`` in which a save builds a brand-new model."""
    return re.compile(rf"\.{re.escape(name)}\.xmrrs-new-{_TOKEN}")


def _not_ours(entry: Path) -> FileExistsError:
    return FileExistsError(
        f"{entry} is not part of an xmrrs model; refusing to replace the model directory "
        f"{entry.parent} (nothing was changed)"
    )


def _check_data_dir(d: Path, names: re.Pattern[str], temps: re.Pattern[str]) -> None:
    """Raise unless ``d`` holds only regular files named by ``names`` or ``temps`` (an
    estimator's files as the Rust core writes them, or an extra's plain data files)."""
    with os.scandir(d) as entries:
        for e in entries:
            if not (
                e.is_file(follow_symlinks=False)
                and (names.fullmatch(e.name) or temps.fullmatch(e.name))
            ):
                raise _not_ours(d / e.name)


def _check_estimator_dir(d: Path) -> None:
    _check_data_dir(d, _ESTIMATOR_FILE, _ESTIMATOR_TMP)


def _check_extra_dir(d: Path) -> None:
    """Raise unless ``d`` holds only plain data files of an extra (see the module notes)."""
    _check_data_dir(d, _EXTRA_FILE, _EXTRA_TMP)


def _read_manifest(mpath: Path) -> Any:
    """The parsed manifest at ``mpath``, read only if it is a regular file (never blocks on a
    FIFO or a device)."""
    try:
        raw = read_regular(mpath, "manifest", MAX_MANIFEST_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(
            f"{mpath.parent} is not an xmrrs model directory (no {MANIFEST})"
        ) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{mpath}: corrupt manifest ({e})") from None


def _stale_entries(path: Path) -> list[Path]:
    """Check that the existing directory ``path`` holds nothing but an xmrrs model's files
    and leftovers of an interrupted save; return what a new save there replaces (everything
    but the manifest).

    Raises
    ------
    FileExistsError
        ``path`` is not a directory, or an entry is not ours (the message names it).
    """
    if not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory; refusing to replace it")
    named: set[str] = set()
    try:
        manifest = _read_manifest(path / MANIFEST)
        if isinstance(manifest, dict) and isinstance(manifest.get("estimators"), list):
            named = {e for e in manifest["estimators"] if isinstance(e, str)}
    except (FileNotFoundError, ValueError):
        pass  # no manifest, or a corrupt one: every entry must then match our own names
    stale = []
    with os.scandir(path) as entries:
        for e in entries:
            entry = path / e.name
            if e.name == MANIFEST or _MANIFEST_TMP.fullmatch(e.name):
                if not e.is_file(follow_symlinks=False):
                    raise _not_ours(entry)
            elif e.name in named or _ESTIMATOR_DIR.fullmatch(e.name):
                if not e.is_dir(follow_symlinks=False):
                    raise _not_ours(entry)
                _check_estimator_dir(entry)
            elif _EXTRA_DIR.fullmatch(e.name):
                if not e.is_dir(follow_symlinks=False):
                    raise _not_ours(entry)
                _check_extra_dir(entry)
            else:
                raise _not_ours(entry)
            if e.name != MANIFEST:
                stale.append(entry)
    return stale


def _stale_new_dirs(path: Path) -> list[Path]:
    """Directories beside ``path`` left by an interrupted save of a brand-new model there."""
    pattern = _new_dir_pattern(path.name)
    stale = []
    try:
        with os.scandir(path.parent) as entries:
            names = [e.name for e in entries if pattern.fullmatch(e.name)]
    except OSError:
        return []
    for name in names:
        try:
            _stale_entries(path.parent / name)
        except OSError:
            continue  # not (only) ours: left alone
        stale.append(path.parent / name)
    return stale


def _remove(entries: list[Path]) -> None:
    for entry in entries:
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                os.unlink(entry)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # the model is saved; a leftover that cannot be removed is harmless


def _fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable (where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # e.g. Windows: directories cannot be opened
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write(
    path: Path,
    est: Any,
    manifest: dict[str, Any],
    token: str,
    extras: Mapping[str, ExtraWriter],
) -> None:
    """Write the estimators and the extra directories, then the manifest (the commit point),
    into directory ``path``.

    On an error before the commit, everything written is removed and ``path`` is as before.
    """
    created: list[Path] = []
    tmp = path / f".{MANIFEST}.tmp-{token}"
    replacing = False
    try:
        for name, model in zip(manifest["estimators"], est.models_, strict=True):
            d = path / name
            os.mkdir(d)  # the umask applies
            created.append(d)
            model.save(str(d))  # the core writes its files atomically and syncs them
            _fsync_dir(d)
        for key, writer in extras.items():
            d = path / manifest["extras"][key]
            os.mkdir(d)
            created.append(d)
            writer(d)
            try:
                _check_extra_dir(d)  # else a later save would refuse to replace the model
            except FileExistsError as e:
                raise ValueError(
                    f"the writer of extra {key!r} wrote a file that is not plain data ({e}); "
                    "extra files must be named *.json, *.safetensors or *.npy"
                ) from None
            _fsync_dir(d)
        created.append(tmp)
        with open(tmp, "x", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        replacing = True
        os.replace(tmp, path / MANIFEST)
    except BaseException:
        # an interrupt that lands just after the rename must not remove the new model
        if not (replacing and not os.path.lexists(tmp)):
            _remove(created)
        raise
    _fsync_dir(path)


def check_target(path: str | os.PathLike[str]) -> None:
    """Check, writing nothing, that :func:`save` may write a model to ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and is not a directory, or holds an entry that is not part of an xmrrs
        model (the message names it).
    """
    path = Path(path)
    if os.path.lexists(path):
        _stale_entries(path)


def _check_extras(
    extras: Mapping[str, ExtraWriter] | None, extras_json: Mapping[str, Any] | None
) -> tuple[dict[str, ExtraWriter], dict[str, Any]]:
    """The extras as plain dicts, checked (names, writers, strict JSON) before any write."""
    dirs = dict(extras or {})
    inline = dict(extras_json or {})
    for key in [*dirs, *inline]:
        if not isinstance(key, str) or not _EXTRA_NAME.fullmatch(key) or key == "estimator":
            raise ValueError(
                f"bad extra name {key!r}: 1 to 64 of a-z, 0-9 and _, starting with a letter, "
                "not 'estimator'"
            )
    both = sorted(set(dirs) & set(inline))
    if both:
        raise ValueError(f"extra {both[0]!r} is named both in extras and in extras_json")
    for key, writer in dirs.items():
        if not callable(writer):
            raise TypeError(f"extras[{key!r}] must be a callable that writes a directory")
    for key, value in inline.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise ValueError(f"extras_json[{key!r}] is not plain JSON ({e})") from None
    return dirs, inline


def save(
    est: Any,
    path: str | os.PathLike[str],
    *,
    extras: Mapping[str, ExtraWriter] | None = None,
    extras_json: Mapping[str, Any] | None = None,
) -> None:
    """Write a fitted estimator, and optional companions, to the directory ``path``,
    crash-safely.

    ``path`` may be new, an empty directory, or a directory holding only an xmrrs model
    (its manifest, the estimator and extra directories, and leftovers of an interrupted
    save); an existing model is replaced so that ``path`` holds, at every instant, either the
    complete old model or the complete new one. Anything else in ``path`` is refused before
    anything is written.

    Parameters
    ----------
    est : XRLinearClassifier
        A fitted estimator.
    path : str or path-like
        Model directory; missing parents are created.
    extras : mapping of str to callable, optional
        Companion directories: for each ``name``, ``writer(d)`` is called with a new empty
        directory ``d = path/<name>-<token>`` before the commit, and must write there only
        regular files named ``*.json``, ``*.safetensors`` or ``*.npy`` (synced). The
        manifest names them (``"extras": {name: "<name>-<token>"}``); the old ones are
        removed after the commit. Names: 1 to 64 of ``a-z``, ``0-9``, ``_``, starting with a
        letter, not ``estimator``.
    extras_json : mapping of str to JSON value, optional
        Small companions stored inline in the manifest (``"extras_json"``); finite numbers
        only. A name may not be in both mappings.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        ``est`` is not fitted.
    FileExistsError
        ``path`` exists and is not a directory, or holds an entry that is not part of an xmrrs
        model (the message names it); nothing was changed.
    ValueError
        A bad extra name, an ``extras_json`` value that is not plain JSON, or a writer that
        wrote something other than plain data files (then nothing was changed).
    """
    dirs, inline = _check_extras(extras, extras_json)
    if not hasattr(est, "models_"):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(est, "models_")
    path = Path(path)
    exists = os.path.lexists(path)
    stale = _stale_entries(path) if exists else []  # check everything before writing
    params: dict[str, Any] = {}
    unsaved: dict[str, str] = {}
    for k, v in est.get_params(deep=False).items():
        if k == "n_jobs":
            continue  # a property of the machine, not of the model: the loader chooses it
        ok, j = _json_param(v)
        if ok:
            params[k] = j
        else:
            unsaved[k] = j
    names = getattr(est, "feature_names_in_", None)
    token = secrets.token_hex(8)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "xmrrs_version": _xmrrs.__version__,
        "params": params,
        "unsaved_params": unsaved,
        "n_features_in": int(est.n_features_in_),
        "feature_names_in": None if names is None else [str(s) for s in names],
        "classes": _classes_json(np.asarray(est.classes_)),
        "target_type": getattr(est, "target_type_", "multilabel"),
        "estimators": [f"estimator-{i}-{token}" for i in range(len(est.models_))],
    }
    if dirs:
        manifest["extras"] = {key: f"{key}-{token}" for key in dirs}
    if inline:
        manifest["extras_json"] = inline
    if exists:
        _write(path, est, manifest, token, dirs)
    else:
        # a brand-new model is built beside path and renamed into place
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.xmrrs-new-{token}"
        os.mkdir(tmp)  # the umask applies (tempfile.mkdtemp would make it private)
        try:
            _write(tmp, est, manifest, token, dirs)
            os.rename(tmp, path)
        except BaseException:
            _remove([tmp])
            raise
        _fsync_dir(path.parent)
    _remove(stale + _stale_new_dirs(path))


def _check_loaded_params(params: Any, where: Path) -> dict[str, Any]:
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ValueError(f"{where}: corrupt manifest ('params' is not an object)")
    out: dict[str, Any] = {k: v for k, v in params.items() if k != "n_jobs"}
    # JSON holds these two only as a name and as null (see _json_param)
    if "representation" in out and not isinstance(out["representation"], str):
        raise ValueError(
            f"{where}: bad parameters (representation must be a string, got "
            f"{out['representation']!r})"
        )
    if out.get("indexer") is not None:
        raise ValueError(f"{where}: bad parameters (indexer must be null, got {out['indexer']!r})")
    return out


def _checked_manifest(path: Path) -> tuple[dict[str, Any], Path]:
    """The manifest of the model directory ``path`` (format and version checked) and its
    path."""
    mpath = path / MANIFEST
    manifest = _read_manifest(mpath)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{mpath}: not an {FORMAT} model")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{mpath}: format version {version!r}, this xmrrs reads version {FORMAT_VERSION}"
        )
    return manifest, mpath


def _extras_of(manifest: dict[str, Any], path: Path, mpath: Path) -> Extras:
    """The extras named by ``manifest`` (none in manifests written without them)."""
    raw = manifest.get("extras", {})
    inline = manifest.get("extras_json", {})
    if not isinstance(raw, dict) or not isinstance(inline, dict):
        raise ValueError(f"{mpath}: corrupt manifest ('extras' is not an object)")
    dirs: dict[str, Path] = {}
    for key, name in raw.items():
        if not (
            _EXTRA_NAME.fullmatch(key)
            and isinstance(name, str)
            and _EXTRA_DIR.fullmatch(name)
            and name.startswith(f"{key}-")
        ):
            raise ValueError(f"{mpath}: corrupt manifest (bad extra {key!r}: {name!r})")
        d = path / name
        try:
            is_dir = stat.S_ISDIR(os.stat(d).st_mode)
        except FileNotFoundError:
            raise ValueError(f"{d}: {key} directory named by {mpath} is missing") from None
        if not is_dir:
            raise ValueError(f"{d}: {key} named by {mpath} is not a directory")
        dirs[key] = d
    for key in inline:
        if not _EXTRA_NAME.fullmatch(key) or key in dirs:
            raise ValueError(f"{mpath}: corrupt manifest (bad extra {key!r})")
    return Extras(dirs=dirs, json=dict(inline))


def read_extras(path: str | os.PathLike[str]) -> Extras:
    """The extras of the model directory ``path``, reading only its manifest.

    Raises
    ------
    FileNotFoundError
        No model at ``path``.
    ValueError
        Not an xmrrs model, an unsupported format version, or a corrupt ``extras`` entry.
    """
    path = Path(path)
    manifest, mpath = _checked_manifest(path)
    return _extras_of(manifest, path, mpath)


def load(
    cls: type[T],
    path: str | os.PathLike[str],
    *,
    mmap: bool = False,
    n_jobs: int | None = None,
) -> T:
    """Read a model directory written by :func:`save` into a new ``cls`` instance.

    Extras are checked but not returned (see :func:`load_with_extras`).

    Parameters
    ----------
    cls : type
        The estimator class (:class:`~xmrrs.XRLinearClassifier`).
    path : str or path-like
        Model directory.
    mmap : bool, default=False
        Map the weights read-only instead of reading them (checksums are then not read).
    n_jobs : int, optional
        ``n_jobs`` of the loaded estimator (a value stored in the file is ignored).

    Raises
    ------
    FileNotFoundError
        No model at ``path``.
    ValueError
        Not an xmrrs model, an unsupported format version, bad parameters, or a
        corrupt/truncated file (the message names the file).
    """
    return load_with_extras(cls, path, mmap=mmap, n_jobs=n_jobs)[0]


def load_with_extras(
    cls: type[T],
    path: str | os.PathLike[str],
    *,
    mmap: bool = False,
    n_jobs: int | None = None,
) -> tuple[T, Extras]:
    """Read a model directory written by :func:`save`, and the extras saved with it.

    Parameters
    ----------
    cls, path, mmap, n_jobs
        As in :func:`load`.

    Returns
    -------
    estimator : cls
    extras : Extras
        The extra directories' paths and the inline JSON extras (empty for a model saved
        without them); reading them is the caller's business.

    Raises
    ------
    FileNotFoundError
        No model at ``path``.
    ValueError
        As :func:`load`; also a corrupt ``extras`` entry or a missing extra directory.
    """
    from xmrrs.indexing import ClusterTree

    path = Path(path)
    manifest, mpath = _checked_manifest(path)
    extras = _extras_of(manifest, path, mpath)
    try:
        params = _check_loaded_params(manifest["params"], mpath)
        n_features = manifest["n_features_in"]
        estimators = manifest["estimators"]
        feature_names = manifest["feature_names_in"]
    except KeyError as e:
        raise ValueError(f"{mpath}: corrupt manifest (missing {e})") from None
    if not _is_int(n_features) or n_features < 1:
        raise ValueError(f"{mpath}: corrupt manifest (n_features_in {n_features!r})")
    if feature_names is not None and not (
        isinstance(feature_names, list)
        and len(feature_names) == n_features
        and all(isinstance(s, str) for s in feature_names)
    ):
        raise ValueError(f"{mpath}: corrupt manifest (feature_names_in)")
    if not isinstance(estimators, list) or not estimators:
        raise ValueError(f"{mpath}: corrupt manifest (no estimators)")
    classes = _classes_from_json(manifest.get("classes"), str(mpath))
    # absent in models written before 1-D targets (all multi-label)
    target_type = manifest.get("target_type", "multilabel")
    if target_type not in ("multilabel", "multiclass"):
        raise ValueError(f"{mpath}: corrupt manifest (target_type {target_type!r})")
    try:
        factory: Any = cls
        est: Any = factory(**params, n_jobs=n_jobs)
    except TypeError as e:
        raise ValueError(f"{mpath}: parameters do not fit {cls.__name__} ({e})") from None
    try:
        check = getattr(est, "_check_params", None)
        if check is not None:
            check()
    except (ValueError, TypeError) as e:
        raise ValueError(f"{mpath}: bad parameters ({e})") from None
    models = []
    for name in estimators:
        if (
            not isinstance(name, str)
            or not name
            or name.startswith(".")
            or any(c in name for c in "/\\\0")
        ):
            raise ValueError(f"{mpath}: corrupt manifest (bad estimator name {name!r})")
        d = path / name
        try:
            is_dir = stat.S_ISDIR(os.stat(d).st_mode)
        except FileNotFoundError:
            raise ValueError(f"{d}: estimator directory named by {mpath} is missing") from None
        if not is_dir:
            raise ValueError(f"{d}: estimator named by {mpath} is not a directory")
        model = _xmrrs.XrModel.load(str(d), mmap)
        if model.n_features + model.n_dense != n_features or model.n_labels != len(classes):
            raise ValueError(
                f"{d}: model of shape ({model.n_features + model.n_dense} features, "
                f"{model.n_labels} labels) does not match the manifest ({n_features}, "
                f"{len(classes)})"
            )
        models.append(model)
    est.models_ = models
    est.classes_ = classes
    est.target_type_ = target_type
    est.n_features_in_ = n_features
    if feature_names is not None:
        est.feature_names_in_ = np.asarray(feature_names, dtype=object)
    est.tree_ = ClusterTree(*models[0].tree_parts())
    loaded: T = est
    return loaded, extras
