"""The ``xmrrs`` command line (also ``python -m xmrrs``).

Subcommands:

- ``train``: read a training set, fit :class:`~xmrrs.XRLinearClassifier`, save the model;
- ``predict``: load a model, write the top-k labels and scores of each row of a data set;
- ``evaluate``: precision@k, recall@k, nDCG@k (and PSP@k with ``--train``) of a model or of a
  predictions file against a data set's labels;
- ``demo``: generate the built-in synthetic data set, train, evaluate, print P@k and timings.

Data files: the Extreme Classification Repository text format (header ``N D L``), LIBSVM
multi-label text, scipy ``.npz`` (features; labels from ``--labels Y.npz``), or raw text:
``.jsonl`` (``{"text": ..., "labels": [...]}`` per line; ``--text-field``, ``--label-field``)
and ``.tsv`` (``text<TAB>label1,label2``; see :func:`xmrrs.text.read_text_file`). A model
trained on raw text is a :class:`~xmrrs.textmodel.TextXRClassifier` (TF-IDF + XR-Linear) and
prints label names. Exit codes:
0 success, 1 internal error, 2 bad usage or bad input (the message says what), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xmrrs._progress import Progress

__all__ = ["main"]

_EPILOG = "Exit codes: 0 ok, 1 internal error, 2 bad usage or input, 130 interrupted."


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` once: not where the help already says it, nor for ``None``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


_TEXT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv", ".tab": "tsv"}


def _is_text(path: str, fmt: str) -> bool:
    return fmt in ("jsonl", "tsv") or (fmt == "auto" and Path(path).suffix in _TEXT_SUFFIXES)


def _read_any(args: argparse.Namespace, path: str, labels: str | None = None) -> tuple[Any, Any]:
    """``(X, Y)`` of a data file: X a CSR matrix or a list of texts, Y an indicator or label
    lists (None when the file has none)."""
    if _is_text(path, args.format):
        from xmrrs.text import read_text_file

        if labels:
            raise ValueError("--labels is only for .npz features; text files hold their labels")
        fmt = "auto" if args.format == "auto" else args.format
        return read_text_file(path, args.text_field, args.label_field, fmt=fmt)
    return _read(path, args.format, labels, args.n_jobs)


def _n_rows(X: Any) -> int:
    return len(X) if isinstance(X, list) else int(X.shape[0])


def _read(path: str, fmt: str, labels: str | None, n_jobs: int | None) -> tuple[Any, Any]:
    """``(X, Y)`` of a data file; ``Y`` is None for an npz without ``--labels``."""
    from xmrrs import datasets

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if fmt == "auto":
        if p.suffix == ".npz":
            fmt = "npz"
        elif p.suffix in _TEXT_SUFFIXES:
            fmt = _TEXT_SUFFIXES[p.suffix]
        else:
            with open(p, "rb") as f:
                head = f.readline().split()
            fmt = "xc" if len(head) == 3 and all(t.isdigit() for t in head) else "libsvm"
    if fmt == "npz":
        from xmrrs.datasets import read_sparse_npz

        X = read_sparse_npz(p).tocsr()
        Y = read_sparse_npz(labels).tocsr() if labels else None
        return X, Y
    if labels:
        raise ValueError("--labels is only for .npz features; text files hold their labels")
    if fmt == "xc":
        return datasets.load_xc(p, n_jobs=n_jobs)
    return datasets.load_libsvm(p, n_jobs=n_jobs)


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data", help="data file: XC text, LIBSVM multi-label text, X .npz, or raw text .jsonl/.tsv"
    )
    p.add_argument(
        "--format",
        choices=("auto", "xc", "libsvm", "npz", "jsonl", "tsv"),
        default="auto",
        help="data file format (default: from the extension and the first line)",
    )
    p.add_argument("--text-field", default="text", help="text field of a .jsonl file")
    p.add_argument("--label-field", default="labels", help="label field of a .jsonl file")
    p.add_argument("--labels", metavar="Y.npz", help="labels of an .npz feature file")
    p.add_argument("-n", "--n-jobs", type=int, default=None, help="threads (default: all)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def _train(args: argparse.Namespace) -> int:
    from xmrrs import XRLinearClassifier
    from xmrrs.modelfile import check_target

    # every cheap check before reading data or training
    params = {k: getattr(args, k) for k in _TRAIN_PARAMS}
    clf = XRLinearClassifier(n_jobs=args.n_jobs, verbose=0 if args.quiet else 1, **params)
    clf._check_params()
    check_target(args.model)
    _check_readable(args.data, args.labels)
    prog = Progress(args.quiet)
    with prog.step(f"reading {args.data}"):
        X, Y = _read_any(args, args.data, args.labels)
    if Y is None:
        raise ValueError(
            "training needs labels: pass --labels Y.npz with .npz features, or a text file "
            "with labels"
        )
    if isinstance(X, list):  # raw text: TF-IDF (in Rust) + XR-Linear, label names
        from xmrrs.text import TfidfVectorizer
        from xmrrs.textmodel import TextXRClassifier

        vec = TfidfVectorizer(sublinear_tf=True, min_df=args.min_df, n_jobs=args.n_jobs)
        clf = TextXRClassifier(vectorizer=vec, ranker=clf)
    t0 = time.perf_counter()
    prog.write(f"training on {_n_rows(X)} rows")
    clf.fit(X, Y)
    ranker: Any = getattr(clf, "ranker_", clf)
    ranker.set_params(verbose=0)  # progress was for this run only
    with prog.step(f"saving {args.model}"):
        clf.save(args.model)
    prog.write(
        f"trained on {_n_rows(X)} rows, {len(clf.classes_)} labels in "
        f"{time.perf_counter() - t0:.2f} s"
    )
    return 0


def _predict_chunks(clf: Any, X: Any, k: int, beam: int | None, prog: Progress) -> Any:
    import numpy as np

    n = _n_rows(X)
    step = 1024  # small enough for a live bar, large enough for the batch path
    ids = np.empty((n, k), np.int64)
    scores = np.empty((n, k), np.float32)
    with prog.bar(n, "predicting", "rows") as bar:
        for s in range(0, n, step):
            ids[s : s + step], scores[s : s + step] = (
                clf.predict_topk(X[s : s + step], k)  # a text model: its ranker's beam
                if isinstance(X, list)
                else clf.predict_topk(X[s : s + step], k, beam_size=beam)
            )
            bar.update(min(step, n - s))
    return ids, scores


def _write_predictions(path: str, ids: Any, scores: Any, classes: Any) -> None:
    import scipy.sparse as sp

    from xmrrs.estimator import topk_to_csr

    n = ids.shape[0]
    if path.endswith(".npz"):
        sp.save_npz(path, topk_to_csr(ids, scores, len(classes)), compressed=False)
        return
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(
                " ".join(
                    f"{classes[j]}:{s:.6g}"
                    for j, s in zip(ids[i], scores[i], strict=True)
                    if j >= 0
                )
            )
            f.write("\n")


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (links included; resolved paths when one
    of them does not exist)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _check_readable(*paths: str | None) -> None:
    """Raise ``FileNotFoundError`` for an input file that does not exist (before any work)."""
    for path in paths:
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")


def _check_writable(output: str) -> None:
    """Raise ``OSError`` when ``output`` cannot be written (before any work)."""
    parent = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise IsADirectoryError(f"-o {output} is a directory")
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"-o {output}: no directory {parent}")
    target = output if os.path.exists(output) else parent
    if not os.access(target, os.W_OK):
        raise PermissionError(f"-o {output}: not writable")


def _check_output(output: str, inputs: dict[str, str | None], model: str) -> None:
    """Refuse an output path that names an input file, the model or a file of the model.

    Raises
    ------
    ValueError
        ``output`` is one of ``inputs``, ``model``, or inside ``model``.
    """
    for what, path in inputs.items():
        if path is not None and _same_file(output, path):
            raise ValueError(f"-o {output} is the {what} ({path}); refusing to overwrite it")
    real, model_real = os.path.realpath(output), os.path.realpath(model)
    if _same_file(output, model) or real.startswith(model_real.rstrip(os.sep) + os.sep):
        raise ValueError(f"-o {output} is inside the model {model}; refusing to overwrite it")
    if os.path.exists(output) and os.path.isdir(model):
        for root, _, files in os.walk(model):
            if any(_same_file(output, os.path.join(root, f)) for f in files):
                raise ValueError(
                    f"-o {output} is a file of the model {model}; refusing to overwrite it"
                )


def _load(path: str, mmap: bool, args: argparse.Namespace) -> Any:
    """The model at ``path``: a text model when it holds a vectorizer, else a ranker (the
    beam and post-processor overrides applied to the ranker)."""
    from xmrrs import XRLinearClassifier
    from xmrrs.text import is_text_model_dir

    if is_text_model_dir(path):
        from xmrrs.textmodel import TextXRClassifier

        clf = TextXRClassifier.load(path, mmap=mmap, n_jobs=args.n_jobs)
        ranker = clf.ranker_
    else:
        clf = ranker = XRLinearClassifier.load(path, mmap=mmap, n_jobs=args.n_jobs)
    if getattr(args, "post_processor", None):
        ranker.set_params(post_processor=args.post_processor)
    if getattr(args, "beam_size", None):
        ranker.set_params(beam_size=args.beam_size)
    return clf


def _predict(args: argparse.Namespace) -> int:
    _check_output(args.output, {"data file": args.data, "labels file": args.labels}, args.model)
    _check_writable(args.output)
    _check_readable(args.data, args.labels)
    prog = Progress(args.quiet)
    with prog.step(f"loading {args.model}"):
        clf = _load(args.model, args.mmap, args)
    with prog.step(f"reading {args.data}"):
        X, _ = _read_any(args, args.data, args.labels)
    k = min(args.k, len(clf.classes_))
    ids, scores = _predict_chunks(clf, X, k, args.beam_size, prog)
    with prog.step(f"writing {args.output}"):
        _write_predictions(args.output, ids, scores, clf.classes_)
    return 0


def _read_predictions(path: str, n_labels: int) -> Any:
    import numpy as np
    import scipy.sparse as sp

    if path.endswith(".npz"):
        from xmrrs.datasets import read_sparse_npz

        return read_sparse_npz(path).tocsr()
    rows: list[list[tuple[int, float]]] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            row = []
            for tok in line.split():
                try:
                    j, s = tok.rsplit(":", 1)
                    row.append((int(j), float(s)))
                except ValueError:
                    raise ValueError(f"{path}: line {line_no}: bad entry {tok!r}") from None
            rows.append(row)
    indptr = np.cumsum([0] + [len(r) for r in rows])
    idx = np.array([j for r in rows for j, _ in r], dtype=np.int64)
    val = np.array([s for r in rows for _, s in r], dtype=np.float32)
    if idx.size and (idx.min() < 0 or idx.max() >= n_labels):
        raise ValueError(f"{path}: label ids must be in 0..{n_labels - 1}")
    return sp.csr_matrix((val, idx, indptr), shape=(len(rows), n_labels))


def _evaluate(args: argparse.Namespace) -> int:
    from xmrrs import metrics

    if (args.model is None) == (args.predictions is None):
        raise ValueError("pass exactly one of --model and --predictions")
    prog = Progress(args.quiet)
    with prog.step(f"reading {args.data}"):
        X, Y = _read_any(args, args.data, args.labels)
    if Y is None:
        raise ValueError("evaluation needs labels: pass --labels Y.npz with .npz features")
    clf = None
    if args.model is not None:
        with prog.step(f"loading {args.model}"):
            clf = _load(args.model, True, args)
    if isinstance(Y, list):  # label names, matched against the model's classes
        from xmrrs._targets import encode_label_lists

        if clf is None:
            raise ValueError("label names need the model (--model) that gives them ids")
        Y, _ = encode_label_lists(Y, clf.classes_, unknown="ignore")
    k = min(args.k, Y.shape[1])  # metrics at 1..k: no more ranks than labels
    if clf is not None:
        pred, _ = _predict_chunks(clf, X, min(k, len(clf.classes_)), args.beam_size, prog)
    else:
        pred = _read_predictions(args.predictions, Y.shape[1])
        if pred.shape[0] != Y.shape[0]:
            raise ValueError(f"{args.predictions} has {pred.shape[0]} rows, the data {Y.shape[0]}")
    prop = None
    if args.train:
        with prog.step(f"reading {args.train} for propensities"):
            _, Ytr = _read_any(args, args.train, args.train_labels)
            if isinstance(Ytr, list):
                from xmrrs._targets import encode_label_lists

                Ytr, _ = encode_label_lists(Ytr, clf.classes_ if clf else None, unknown="ignore")
        prop = metrics.propensity(Ytr)
    report = metrics.ranking_report(Y, pred, ks=tuple(range(1, k + 1)), propensity=prop)
    if args.json:
        print(json.dumps(report))
    else:
        for name, value in report.items():
            print(f"{name}\t{value:.4f}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    from xmrrs import XRLinearClassifier, _xmrrs
    from xmrrs import sparse as xs
    from xmrrs.datasets import make_xmc
    from xmrrs.metrics import ndcg_at_k, precision_at_k

    t0 = time.perf_counter()
    X, Y = make_xmc(args.n_samples, args.n_features, args.n_labels, random_state=args.seed)
    n_test = max(1, args.n_samples // 5)
    Xtr, Ytr, Xte, Yte = X[:-n_test], Y[:-n_test], X[-n_test:], Y[-n_test:]
    t_data = time.perf_counter() - t0
    print(
        f"xmrrs {_xmrrs.__version__} | {platform.machine()} | simd {_xmrrs.simd_level()} "
        f"| threads {xs.effective_n_jobs(args.n_jobs)}"
    )
    print(
        f"data: make_xmc(n_samples={args.n_samples}, n_features={args.n_features}, "
        f"n_labels={args.n_labels}, random_state={args.seed}) -> train {Xtr.shape[0]}, "
        f"test {Xte.shape[0]}, nnz(X) {X.nnz}, labels/sample {Y.nnz / Y.shape[0]:.2f} "
        f"[{t_data:.2f} s]"
    )
    clf = XRLinearClassifier(n_jobs=args.n_jobs)
    t0 = time.perf_counter()
    clf.fit(Xtr, Ytr)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids, _ = clf.predict_topk(Xte, k=5)
    t_pred = time.perf_counter() - t0
    print(f"model: {clf!r}, tree levels {clf.tree_.n_nodes_per_level}")
    print(
        f"train: {t_fit:.3f} s | predict top-5 of {Xte.shape[0]} rows: {t_pred:.3f} s "
        f"({1e3 * t_pred / Xte.shape[0]:.3f} ms/row)"
    )
    scores = {f"P@{k}": precision_at_k(Yte, ids, k=k) for k in (1, 3, 5)}
    scores["nDCG@5"] = ndcg_at_k(Yte, ids, k=5)
    print(" | ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return 0 if np.isfinite(list(scores.values())).all() else 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _branching(text: str) -> int | tuple[int, ...]:
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or a comma list: {text!r}") from None
    return parts if "," in text else parts[0]


def _share_or_count(text: str) -> float:
    try:
        return int(text) if text.strip().isdigit() else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


_TRAIN_PARAMS = (
    "representation",
    "normalize",
    "branching",
    "max_leaf_size",
    "kmeans_max_iter",
    "loss",
    "Cp",
    "Cn",
    "max_iter",
    "tol",
    "bias",
    "threshold",
    "negatives",
    "n_estimators",
    "ensemble",
    "top_max_samples",
    "beam_size",
    "top_k",
    "post_processor",
    "random_state",
)


def _parser() -> argparse.ArgumentParser:
    from xmrrs.estimator import XRLinearClassifier

    d = XRLinearClassifier().get_params()
    p = argparse.ArgumentParser(
        prog="xmrrs",
        description="Extreme multi-label ranking (XR-Linear in Rust).",
        epilog=_EPILOG,
    )
    from xmrrs._xmrrs import __version__

    p.add_argument("--version", action="version", version=f"xmrrs {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="fit a model on a data file and save it",
        epilog=_EPILOG,
        formatter_class=_DefaultsFormatter,
    )
    _add_data(t)
    t.add_argument("-m", "--model", required=True, help="output model directory")
    t.add_argument(
        "--min-df",
        type=_positive_int,
        default=2,
        help="raw text only: keep the terms of at least this many documents",
    )
    g = t.add_argument_group("label tree (indexing)")
    g.add_argument(
        "--representation",
        choices=("pifa", "pii", "spectral"),
        default=d["representation"],
        help="label representation clustered into the tree",
    )
    g.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=d["normalize"],
        help="L2-normalise the rows of X (in training and prediction)",
    )
    g.add_argument(
        "--branching",
        type=_branching,
        default=d["branching"],
        help="largest fan-out B, or every level's fan-out as a comma list (e.g. 2,16,16)",
    )
    g.add_argument(
        "--max-leaf-size",
        type=int,
        default=d["max_leaf_size"],
        help="largest number of labels in a leaf",
    )
    g.add_argument(
        "--kmeans-max-iter",
        type=int,
        default=d["kmeans_max_iter"],
        help="k-means iterations per node",
    )
    g = t.add_argument_group("linear models (matching and ranking)")
    g.add_argument(
        "--loss",
        choices=("squared_hinge", "hinge", "logistic"),
        default=d["loss"],
        help="loss of the per-node classifiers",
    )
    g.add_argument("--Cp", type=float, default=d["Cp"], help="penalty of positives")
    g.add_argument("--Cn", type=float, default=d["Cn"], help="penalty of negatives")
    g.add_argument("--max-iter", type=int, default=d["max_iter"], help="solver passes")
    g.add_argument("--tol", type=float, default=d["tol"], help="solver tolerance")
    g.add_argument("--bias", type=float, default=d["bias"], help="bias feature (0: none)")
    g.add_argument(
        "--threshold", type=float, default=d["threshold"], help="drop weights of smaller magnitude"
    )
    g.add_argument(
        "--negatives",
        choices=("tfn", "man", "tfn+man"),
        default=d["negatives"],
        help="tfn: same-cluster negatives; man: the beam's mistakes; or both",
    )
    g.add_argument(
        "--n-estimators", type=int, default=d["n_estimators"], help="trees averaged (an ensemble)"
    )
    g.add_argument(
        "--ensemble",
        choices=("mixed", "seeds"),
        default=d["ensemble"],
        help="mixed: trees 2.. unbalanced and wider, tree 3 on PII (default); seeds: the same "
        "tree, new seeds",
    )
    g.add_argument(
        "--top-max-samples",
        type=_share_or_count,
        default=d["top_max_samples"],
        help="train the top layer on a sample: a share in (0, 1] (e.g. 0.25) or a row count",
    )
    g.add_argument("--random-state", type=int, default=d["random_state"], help="seed")
    g = t.add_argument_group("prediction defaults stored in the model")
    g.add_argument("--beam-size", type=int, default=d["beam_size"], help="beam width")
    g.add_argument("--top-k", type=int, default=d["top_k"], help="labels per row")
    g.add_argument(
        "--post-processor",
        default=d["post_processor"],
        help="score transform: l3-hinge, sigmoid, noop, log-l3-hinge, ...",
    )
    t.set_defaults(func=_train)

    pr = sub.add_parser("predict", help="write the top-k labels of each row", epilog=_EPILOG)
    _add_data(pr)
    pr.add_argument("-m", "--model", required=True, help="model directory")
    pr.add_argument(
        "-o",
        "--output",
        required=True,
        help="predictions: .npz (CSR of scores) or text (id:score per row)",
    )
    pr.add_argument(
        "-k",
        type=_positive_int,
        default=10,
        help="labels per row (default 10; at most the model's number of labels)",
    )
    pr.add_argument(
        "-b", "--beam-size", type=_positive_int, default=None, help="beam width override"
    )
    pr.add_argument("--post-processor", default=None, help="post-processor override")
    pr.add_argument(
        "--no-mmap",
        dest="mmap",
        action="store_false",
        help="read the weights into memory instead of mapping them",
    )
    pr.set_defaults(func=_predict)

    e = sub.add_parser(
        "evaluate", help="ranking metrics against a data set's labels", epilog=_EPILOG
    )
    _add_data(e)
    e.add_argument("-m", "--model", help="model directory to evaluate")
    e.add_argument("-p", "--predictions", help="predictions file written by 'xmrrs predict'")
    e.add_argument(
        "-k",
        type=_positive_int,
        default=5,
        help="metrics at 1..k (default 5; at most the number of labels)",
    )
    e.add_argument(
        "-b", "--beam-size", type=_positive_int, default=None, help="beam width override"
    )
    e.add_argument("--train", help="training data file, for propensity-scored metrics")
    e.add_argument("--train-labels", help="labels of an .npz --train file")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_evaluate)

    dm = sub.add_parser("demo", help="train and evaluate on the built-in synthetic data set")
    dm.add_argument("--n-samples", type=int, default=25000, help="samples (train + test)")
    dm.add_argument("--n-features", type=int, default=30000, help="feature dimension")
    dm.add_argument("--n-labels", type=int, default=5000, help="number of labels")
    dm.add_argument("--seed", type=int, default=0, help="random seed of the generator")
    dm.add_argument("--n-jobs", type=int, default=None, help="threads (default: all cores)")
    dm.set_defaults(func=_demo)
    return p


def interrupted() -> int:
    """Report an interrupt (Ctrl-C) on stderr in one line; returns its exit code, 130."""
    print("xmrrs: interrupted", file=sys.stderr, flush=True)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success, 1 internal error, 2 bad usage or input, 130 interrupted (bad usage exits
        through ``SystemExit(2)`` from :mod:`argparse`).
    """
    try:
        args = _parser().parse_args(argv)
        return int(args.func(args))
    except KeyboardInterrupt:
        return interrupted()
    except (ValueError, TypeError, OSError) as e:
        print(f"xmrrs: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"xmrrs: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    from xmrrs.__main__ import run

    run()
