"""A hypothesis matrix of bad inputs to the estimator, ``xmrrs.sparse`` and ``xmrrs.indexing``.

Every call must return a valid result or raise a clean exception (``ValueError``,
``TypeError``, ``MemoryError``, ``OverflowError``; ``NotFittedError`` is a ``ValueError``):
never ``RuntimeError("internal error ...")``, another exception type, an abort or a hang.

The properties run in a subprocess (``python -m tests.fuzz.badinput N SEED STATE``): before
each example the property writes what it is about to call to ``STATE.current``, so that if
the process dies the parent (:func:`run_properties`) reports the example that killed it,
then restarts the subprocess at the next property.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CLEAN = (ValueError, TypeError, MemoryError, OverflowError, OSError)
STATE: dict[str, Any] = {"current": None, "counts": Counter(), "prop": ""}


class Broken(AssertionError):
    """A promise was broken (hypothesis shrinks on it)."""


def call(
    what: str, fn: Callable[..., Any], *args: Any, also: tuple[type, ...] = (), **kw: Any
) -> tuple[bool, Any]:
    """Runs ``fn``; (True, result) or (False, clean exception); raises Broken otherwise.
    ``also``: more exception types that are clean for this call."""
    path = STATE["current"]
    if path:
        with open(path, "w") as f:
            f.write(f"{STATE['prop']}: {what}\nargs: {_short(args)}\nkwargs: {_short(kw)}\n")
    try:
        out = fn(*args, **kw)
    except CLEAN + also as e:
        STATE["counts"]["rejected"] += 1
        return False, e
    except RuntimeError as e:
        kind = "internal-error" if "internal error" in str(e) else "unexpected-RuntimeError"
        raise Broken(f"{kind}: {what}: {e} | args {_short(args)} kwargs {_short(kw)}") from None
    except Exception as e:
        raise Broken(
            f"unexpected-{type(e).__name__}: {what}: {e} | args {_short(args)} kwargs {_short(kw)}"
            f"\n{''.join(traceback.format_exception(e))[-800:]}"
        ) from None
    STATE["counts"]["accepted"] += 1
    return True, out


def _short(v: Any) -> str:
    with np.printoptions(threshold=20, edgeitems=3):
        if sp.issparse(v):
            return (
                f"{type(v).__name__}(shape={v.shape}, dtype={v.dtype}, indptr={_short(v.indptr)}, "
                f"indices={_short(v.indices)}, data={_short(v.data)})"
                if hasattr(v, "indptr")
                else f"{type(v).__name__}(shape={v.shape})"
            )
        if isinstance(v, np.ndarray):
            return f"np.array({v.tolist()!r:.300}, dtype={v.dtype}).reshape({v.shape})"
        if isinstance(v, tuple | list):
            inner = ", ".join(_short(x) for x in v)
            return f"({inner})" if isinstance(v, tuple) else f"[{inner}]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k!r}: {_short(x)}" for k, x in v.items()) + "}"
        return repr(v)[:300]


# ---------------------------------------------------------------------------------------
# strategies

SPECIALS = [np.nan, np.inf, -np.inf, 1e300, -1e300, 3.5e38, -0.0, 1e-320]
DTYPES = ["float32", "float64", "int32", "int64", "uint8", "bool", "float16", "complex64", "object"]
ODD_INTS = [0, 1, 2, 3, 10, -1, -2, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, 10**12, -(2**63)]
ODD_SCALARS = [None, 1.5, "3", True, np.int64(3), np.float32(2.0), [], np.nan, b"x", 2.0]


def odd_int() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(ODD_INTS), st.integers(-3, 40), st.sampled_from(ODD_SCALARS))


@st.composite
def dense(draw: st.DrawFn, rows: int | None = None, cols: int | None = None) -> Any:
    shape = draw(
        st.sampled_from([(0, 0), (0, 4), (3, 0), (1, 1), (5,), (2, 3, 2)])
        if draw(st.booleans()) and rows is None
        else st.just((rows if rows is not None else draw(st.integers(1, 8)),
                      cols if cols is not None else draw(st.integers(1, 8))))
    )  # fmt: skip
    dtype = draw(st.sampled_from(DTYPES))
    n = int(np.prod(shape))
    vals = draw(
        st.lists(
            st.one_of(st.floats(-5, 5, width=32), st.sampled_from(SPECIALS), st.integers(0, 3)),
            min_size=n,
            max_size=n,
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = np.array(vals, dtype=np.float64).reshape(shape)
        if dtype == "object":
            return a.astype(object)
        if dtype.startswith(("int", "uint", "bool")):
            a = np.nan_to_num(a, nan=0, posinf=1, neginf=-1).clip(-100, 100)
        return a.astype(dtype)


@st.composite
def sparse(draw: st.DrawFn, rows: int | None = None, cols: int | None = None) -> Any:
    n = rows if rows is not None else draw(st.integers(0, 8))
    m = cols if cols is not None else draw(st.integers(0, 8))
    k = draw(st.integers(0, 12)) if n and m else 0
    r = np.array(
        draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=k, max_size=k)), dtype=np.int64
    )
    c = np.array(
        draw(st.lists(st.integers(0, max(m - 1, 0)), min_size=k, max_size=k)), dtype=np.int64
    )
    v = np.array(
        draw(
            st.lists(
                st.one_of(st.floats(-3, 3, width=32), st.sampled_from(SPECIALS)),
                min_size=k,
                max_size=k,
            )
        ),
        dtype=np.float64,
    )
    # raw CSR with duplicates and unsorted indices, as given
    order = np.argsort(r, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, r + 1, 1)
    indptr = np.cumsum(indptr)
    itype = draw(st.sampled_from([np.int32, np.int64]))
    dtype = draw(st.sampled_from(["float32", "float64", "int64", "bool", "complex128", "float16"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = v[order].astype(dtype)
    a = sp.csr_matrix((data, c[order].astype(itype), indptr.astype(itype)), shape=(n, m))
    corrupt = draw(st.sampled_from(["none"] * 6 + ["neg", "big", "indptr", "short", "shape"]))
    if corrupt == "neg" and a.nnz:
        a.indices[0] = -1
    elif corrupt == "big" and a.nnz:
        a.indices[-1] = m + 5
    elif corrupt == "indptr" and n > 1:
        a.indptr[1] = a.indptr[-1] + 3
    elif corrupt == "short" and a.nnz:
        a.data = a.data[:-1]
    elif corrupt == "shape":
        a._shape = (n + 2, m)
    fmt = draw(st.sampled_from(["csr", "csr", "csr", "csc", "coo", "array"]))
    if corrupt == "none" and fmt != "csr":
        try:
            a = {"csc": a.tocsc, "coo": a.tocoo, "array": lambda: sp.csr_array(a)}[fmt]()
        except ValueError:  # scipy cannot convert some dtypes (float16): keep the CSR
            pass
    return a


def matrix(rows: int | None = None, cols: int | None = None) -> st.SearchStrategy[Any]:
    return st.one_of(
        sparse(rows, cols),
        sparse(rows, cols),
        dense(rows, cols),
        st.sampled_from([None, 3, "abc", [[1, 2], [3]], [[0.5, 1.0]], []]),
    )


# ---------------------------------------------------------------------------------------
# checks of results


def check_sparse(out: Any, what: str) -> None:
    if not sp.issparse(out):
        raise Broken(f"invalid-answer: {what} returned {type(out).__name__}")
    if out.format in ("csr", "csc"):
        try:
            out.check_format(full_check=True)
        except ValueError as e:
            raise Broken(f"invalid-answer: {what} returned an invalid matrix: {e}") from None


def check_topk(ids: Any, scores: Any, n: int, k: int, n_labels: int, what: str) -> None:
    from .tamper import check_topk as ct

    why = ct(ids, scores, n, k, n_labels)
    if why:
        raise Broken(f"invalid-answer: {what}: {why}")


# ---------------------------------------------------------------------------------------
# properties


def _fitted() -> Any:
    if "fitted" not in STATE:
        from xmrrs import XRLinearClassifier
        from xmrrs.datasets import make_xmc

        X, Y = make_xmc(120, 30, 12, random_state=0)
        STATE["fitted"] = XRLinearClassifier(
            n_estimators=2, branching=3, max_leaf_size=3, n_jobs=1
        ).fit(X, Y)
    return STATE["fitted"]


PARAMS = {
    "beam_size": odd_int(),
    "top_k": odd_int(),
    "branching": st.one_of(odd_int(), st.sampled_from([(2, 2), (3,), (), (1, 4), [2, -1]])),
    "max_leaf_size": odd_int(),
    "kmeans_max_iter": odd_int(),
    "max_iter": st.sampled_from([1, 2, 0, -1, 1.5]),
    "n_estimators": st.sampled_from([1, 2, 0, -1, 2.0, True]),
    "Cp": st.sampled_from([0.5, 0.0, -1.0, np.nan, np.inf, 1e30, "1"]),
    "tol": st.sampled_from([0.1, 0.0, 1e-30, np.nan, 5.0]),
    "threshold": st.sampled_from([0.0, 0.1, 1e30, -1.0, np.inf]),
    "bias": st.sampled_from([0.0, 1.0, 1e30, -1.0]),
    "loss": st.sampled_from(["hinge", "logistic", "bogus", None]),
    "negatives": st.sampled_from(["man", "tfn+man", "x"]),
    "post_processor": st.sampled_from(["sigmoid", "noop", "log-l3-hinge", "bogus", "", 3]),
    "representation": st.sampled_from(["pii", "spectral", "bogus", None]),
    "ensemble": st.sampled_from(["seeds", "x"]),
    "normalize": st.sampled_from([False, "yes", None]),
    "n_jobs": st.sampled_from([None, 1, 2, -1, -5, 0, 2**40, 2**64, 1.5]),
    "random_state": st.sampled_from([0, None, -1, 2**32, 2**64, "x"]),
}


@st.composite
def params(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(PARAMS)), max_size=3, unique=True))
    p = {"n_estimators": 1, "n_jobs": 1, "branching": 3, "max_leaf_size": 3, "max_iter": 5}
    p.update({k: draw(PARAMS[k]) for k in keys})
    return p


def prop_fit(data: st.DataObject) -> None:
    from xmrrs import XRLinearClassifier

    n = data.draw(st.integers(1, 8))
    X = data.draw(st.one_of(matrix(n, data.draw(st.integers(1, 8))), matrix()))
    Y = data.draw(
        st.one_of(
            matrix(n, data.draw(st.integers(1, 6))),
            st.lists(
                st.lists(st.sampled_from(["a", "b", 1, None, 2.5]), max_size=3),
                min_size=n,
                max_size=n,
            ),
        )
    )
    p = data.draw(params())
    ok, clf = call("XRLinearClassifier(**p)", XRLinearClassifier, **p)
    if not ok:
        return
    ok, _ = call("fit(X, Y)", clf.fit, X, Y)
    if not ok:
        return
    _predict_all(data, clf)


def prop_predict(data: st.DataObject) -> None:
    from sklearn.base import clone

    clf = _fitted()
    if data.draw(st.booleans()):
        clf = clone(clf)
        clf.__dict__.update({k: v for k, v in _fitted().__dict__.items() if k.endswith("_")})
        for k, v in data.draw(params()).items():
            if k in ("beam_size", "top_k", "post_processor", "n_jobs", "normalize"):
                setattr(clf, k, v)
    _predict_all(data, clf)


def _predict_all(data: st.DataObject, clf: Any) -> None:
    d = getattr(clf, "n_features_in_", 5)
    n_labels = len(getattr(clf, "classes_", [])) or 1
    X = data.draw(st.one_of(matrix(data.draw(st.integers(1, 6)), d), matrix()))
    k = data.draw(st.one_of(st.none(), odd_int()))
    beam = data.draw(st.one_of(st.none(), odd_int()))
    ok, out = call("predict_topk(X, k, beam_size=beam)", clf.predict_topk, X, k, beam_size=beam)
    if ok:
        n = X.shape[0]
        kk = clf.top_k if k is None else int(k)
        check_topk(out[0], out[1], n, kk, n_labels, f"predict_topk(k={k}, beam={beam})")
    for name in ("predict", "decision_function"):
        ok, out = call(f"{name}(X)", getattr(clf, name), X)
        if ok:
            check_sparse(out, name)
    Yt = data.draw(st.one_of(matrix(), matrix(data.draw(st.integers(1, 6)), n_labels)))
    ok, s = call("score(X, Y)", clf.score, X, Yt)
    if ok and not (isinstance(s, float) and 0.0 <= s <= 1.0):
        raise Broken(f"invalid-answer: score returned {s!r}")


SPARSE_FUNCS = [
    "canonicalize", "transpose", "to_csc", "normalize_rows", "matmul", "matmul_dense",
    "dot_dense_rows", "take_rows", "take_cols", "topk", "topk_csr", "effective_n_jobs",
]  # fmt: skip


def prop_sparse(data: st.DataObject) -> None:
    from xmrrs import sparse as xs

    name = data.draw(st.sampled_from(SPARSE_FUNCS))
    nj = data.draw(st.sampled_from([None, None, 1, 2, -1, 0, -100, 2**40, 2**64, "2"]))
    fn = getattr(xs, name)
    a = data.draw(matrix())
    shape = getattr(a, "shape", (0, 0))
    rows = shape[0] if len(shape) == 2 else 3
    cols = shape[1] if len(shape) == 2 else 3
    if name == "effective_n_jobs":
        ok, out = call(name, fn, nj)
        if ok and not (isinstance(out, int) and out >= 1):
            raise Broken(f"invalid-answer: effective_n_jobs({nj!r}) = {out!r}")
        return
    if name == "matmul":
        args: tuple[Any, ...] = (a, data.draw(st.one_of(matrix(cols, None), matrix())))
    elif name in ("matmul_dense", "dot_dense_rows"):
        b = data.draw(
            st.one_of(dense(cols, data.draw(st.integers(0, 4))) if name == "matmul_dense"
                      else dense(data.draw(st.integers(0, 4)), cols), dense(), matrix())
        )  # fmt: skip
        args = (a, b)
    elif name in ("take_rows", "take_cols"):
        lim = rows if name == "take_rows" else cols
        idx = data.draw(
            st.one_of(
                st.lists(st.integers(-2, lim + 2), max_size=6),
                st.sampled_from([[2**40], [2**63 - 1], [1.5], ["a"], [[0, 1], [1, 0]], [], None]),
            )
        )
        args = (a, idx)
    elif name in ("topk", "topk_csr"):
        args = (a, data.draw(odd_int()))
    else:
        args = (a,)
    ok, out = call(f"xmrrs.sparse.{name}", fn, *args, n_jobs=nj)
    if not ok:
        return
    if name in ("topk",):
        ids, sc = out
        k = int(args[1])
        if ids.shape != sc.shape or ids.shape[0] != rows or ids.shape[1] != min(k, cols):
            raise Broken(f"invalid-answer: topk shapes {ids.shape} {sc.shape} for {shape}, k={k}")
        if ids.size and (ids.min() < -1 or ids.max() >= cols):
            raise Broken(f"invalid-answer: topk ids out of range: {ids.tolist()}")
    elif name in ("matmul_dense", "dot_dense_rows"):
        if not isinstance(out, np.ndarray) or out.ndim != 2:
            raise Broken(f"invalid-answer: {name} returned {type(out)}")
    else:
        check_sparse(out, name)


def prop_indexing(data: st.DataObject) -> None:
    from xmrrs import indexing as ix

    which = data.draw(st.sampled_from(["rep", "kmeans", "tree", "assign", "tree-methods"]))
    if which == "rep":
        n = data.draw(st.integers(1, 8))
        X = data.draw(st.one_of(matrix(n, data.draw(st.integers(1, 6))), matrix()))
        Y = data.draw(st.one_of(matrix(n, data.draw(st.integers(1, 6))), matrix()))
        kw = {
            "method": data.draw(
                st.sampled_from(["pifa", "pii", "spectral", "pifa_concat", "x", None])
            ),
            "n_components": data.draw(st.one_of(st.sampled_from([1, 2, 32]), odd_int())),
            "random_state": data.draw(st.sampled_from([0, None, -1, 2**70, "x"])),
            "embedding_weight": data.draw(st.sampled_from([1.0, 0.0, -1.0, np.nan, "2"])),
            "n_jobs": data.draw(st.sampled_from([None, 1, 0])),
        }  # fmt: skip
        if data.draw(st.booleans()):
            kw["embeddings"] = data.draw(st.one_of(dense(), dense(n, 3), matrix()))
        call("label_representation", ix.label_representation, X, Y, **kw)
        return
    if which == "kmeans":
        kw = {
            "branching": data.draw(
                st.one_of(odd_int(), st.sampled_from([(2, 2), (), (1,), [3, 2**40]]))
            ),
            "max_leaf_size": data.draw(odd_int()),
            "spherical": data.draw(st.sampled_from([True, False, "no"])),
            "balanced": data.draw(st.sampled_from([True, False, 1])),
            "max_iter": data.draw(st.sampled_from([0, 1, 20, -1, 2**40])),
            "tol": data.draw(st.sampled_from([0.0, 0.01, 0.99, 1.0, -0.1, np.nan, "x"])),
            "n_init": data.draw(st.sampled_from(["auto", 1, 3, 0, -1, "x", 2.0])),
            "random_state": data.draw(st.sampled_from([0, None, -1, 2**64])),
            "n_jobs": data.draw(st.sampled_from([None, 1, 0, -1])),
        }  # fmt: skip
        Z = data.draw(matrix())
        ok, km = call("HierarchicalKMeans(**kw)", ix.HierarchicalKMeans, **kw)
        if ok:
            ok, fitted = call("HierarchicalKMeans.fit(Z)", km.fit, Z)
            if ok:
                nz = Z.shape[0]
                t = fitted.tree_
                if t.n_labels != nz or sorted(np.asarray(t.labels).tolist()) != list(range(nz)):
                    raise Broken(f"invalid-answer: tree over {t.n_labels} labels for {nz} rows")
        return
    if which == "assign":
        a = data.draw(
            st.lists(
                st.one_of(
                    st.lists(st.integers(-2, 6), max_size=8),
                    st.sampled_from([[0.5], ["a"], None, [2**63], [[0, 1]]]),
                ),
                max_size=3,
            )
        )
        call("ClusterTree.from_assignments", ix.ClusterTree.from_assignments, a)
        return
    if which == "tree":
        arr = st.one_of(
            st.lists(st.integers(-2, 9), max_size=8),
            st.sampled_from(
                [[0, 2**40], [0.5, 1.5], None, "x", [[0, 1]], np.array([0, 1], np.uint64)]
            ),
        )
        cps = data.draw(st.lists(arr, max_size=3))
        call(
            "ClusterTree(child_ptrs, leaf_ptr, labels)",
            ix.ClusterTree,
            cps,
            data.draw(arr),
            data.draw(arr),
        )
        return
    tree = _fitted().tree_
    m = data.draw(st.sampled_from(["children", "labels_of_leaf"]))
    args = (
        (data.draw(odd_int()), data.draw(odd_int())) if m == "children" else (data.draw(odd_int()),)
    )
    # an out-of-range node is an IndexError, as for sequences
    call(f"ClusterTree.{m}", getattr(tree, m), *args, also=(IndexError,))


def prop_datasets(data: st.DataObject) -> None:
    from xmrrs import datasets

    path = STATE["xc_path"]
    kw = {
        "zero_based": data.draw(st.sampled_from(["auto", True, False, "x", None, 2])),
        "n_features": data.draw(st.one_of(st.none(), odd_int())),
        "n_labels": data.draw(st.one_of(st.none(), odd_int())),
        "n_jobs": data.draw(st.sampled_from([None, 1, 0, -1, 2**40, "x"])),
    }
    ok, out = call("load_libsvm(path, **kw)", datasets.load_libsvm, path, **kw)
    if ok:
        for m in out:
            check_sparse(m, "load_libsvm")
    call(
        "load_xc(path, n_jobs)",
        datasets.load_xc,
        data.draw(st.sampled_from([path, path + ".missing", "", "/", 3, None])),
        n_jobs=kw["n_jobs"],
    )


PROPERTIES: dict[str, Callable[[st.DataObject], None]] = {
    "estimator-fit": prop_fit,
    "estimator-predict": prop_predict,
    "sparse": prop_sparse,
    "indexing": prop_indexing,
    "datasets": prop_datasets,
}


# ---------------------------------------------------------------------------------------
# subprocess side


def _run_one(name: str, max_examples: int, seed: int) -> dict[str, Any]:
    from hypothesis import seed as hseed

    prop = PROPERTIES[name]
    STATE["prop"] = name
    STATE["counts"] = Counter()
    cfg = settings(
        max_examples=max_examples,
        derandomize=seed == 0,
        database=None,
        deadline=None,
        print_blob=False,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )
    test = cfg(given(st.data())(prop))
    if seed:
        test = hseed(seed)(test)
    t0 = time.perf_counter()
    try:
        test()
        err = None
    except Broken as e:
        err = str(e)
    except Exception as e:
        subs = getattr(e, "exceptions", None)
        if subs and all(isinstance(x, Broken) for x in subs):
            err = "; ".join(str(x) for x in subs)
        else:
            err = f"harness: {''.join(traceback.format_exception(e))[-1500:]}"
    return {
        "name": name,
        "counts": dict(STATE["counts"]),
        "error": err,
        "seconds": time.perf_counter() - t0,
    }


def _child(argv: list[str]) -> int:
    import tempfile

    from ._worker import limit_memory

    warnings.simplefilter("ignore")
    max_examples, seed, state, names = int(argv[0]), int(argv[1]), argv[2], argv[3].split(",")
    STATE["current"] = state + ".current"
    d = tempfile.mkdtemp(prefix="xmrrs-badinput-")
    STATE["xc_path"] = os.path.join(d, "a.txt")
    with open(STATE["xc_path"], "w") as f:
        f.write("0,2 1:0.5 3:1.5\n 0:2\n\n3 5:1 # c\n")
    _fitted()
    limit_memory(4.0)
    for name in names:
        with open(state + ".started", "a") as f:
            f.write(name + "\n")
        res = _run_one(name, max_examples, seed)
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()
    return 0


def run_properties(
    max_examples: int,
    *,
    seed: int = 0,
    outdir: Path | None = None,
    progress: bool = False,
    timeout: float = 600.0,
    names: list[str] | None = None,
):  # -> Summary
    """Runs every property in subprocesses; returns a ``_driver.Summary``."""
    import tempfile

    from ._driver import ROOT, Summary, _env, _gist

    summary = Summary("badinput")
    t0 = time.perf_counter()
    todo = list(names or PROPERTIES)
    tmp = Path(tempfile.mkdtemp(prefix="xmrrs-badinput-state-"))
    state = str(tmp / "state")
    while todo:
        for suffix in (".started", ".current"):
            Path(state + suffix).unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "tests.fuzz.badinput",
            str(max_examples),
            str(seed),
            state,
            ",".join(todo),
        ]
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            rc = None
        done = []
        for line in out.decode("utf-8", "replace").splitlines():
            if not line.startswith("{"):
                continue
            res = json.loads(line)
            done.append(res["name"])
            summary.counts.update(res["counts"])
            if progress:
                print(
                    f"[badinput] {res['name']}: {res['counts']} in {res['seconds']:.1f} s",
                    file=sys.stderr,
                )
            if res["error"]:
                cat = res["error"].split(":", 1)[0]
                summary.counts[cat] += 1
                summary.failures.append(
                    {
                        "kind": "badinput",
                        "seed": seed,
                        "category": cat,
                        "detail": f"{res['name']}: {res['error']}",
                    }
                )
        todo = [t for t in todo if t not in done]
        if rc == 0 or not todo:
            continue
        # the subprocess died (or hung) inside the first unfinished property
        name = todo.pop(0)
        cur = Path(state + ".current")
        example = cur.read_text() if cur.exists() else "(unknown example)"
        category = "hang" if rc is None else "crash"
        e = err.decode("utf-8", "replace")
        how = "timed out" if rc is None else f"died with status {rc}"
        detail = f"{name}: {how} during {example.strip()} | {_gist(e)}"
        summary.counts[category] += 1
        fail = {"kind": "badinput", "seed": seed, "category": category, "detail": detail}
        if outdir is not None:
            dest = outdir / f"badinput-{name}-seed{seed}.txt"
            outdir.mkdir(parents=True, exist_ok=True)
            dest.write_text(example + "\n--- stderr ---\n" + e[-4000:])
            fail["case"] = str(dest)
        summary.failures.append(fail)
        if progress:
            print(f"[badinput] FAIL {detail[:500]}", file=sys.stderr)
    summary.seconds = time.perf_counter() - t0
    return summary


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
