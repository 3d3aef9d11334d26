"""PECOS's own XR-Transformer on the debian texts, with bench_xtransformer.py's settings.

Usage::

    .venv/bin/python benches/bench_pecos_xtransformer.py --labels tags --epochs 1,2 \
        [--pecos DIR] [--data ../shared/data/debian/texts] [--encoder benches/.cache/minilm] \
        [--max-train N] [--max-test N] [--max-length 128] [--batch-size 32] \
        [--learning-rate 1e-4] [--threads 16] [--out benches/results/pecos_xtransformer.md]

PECOS gets the same TF-IDF features as the xmrrs rows (``xmrrs.text.TfidfVectorizer(
sublinear_tf=True, min_df=2)`` fit on the training texts), the same encoder directory, max
length, batch size, learning rate and ``tfn+man`` negatives; its label tree and ranker are its
own defaults (``nr_splits=16, max_leaf_size=100``; ``XLinearModel`` defaults). ``--epochs`` gives
epochs per fine-tuning level of PECOS's tree, the last value for the label level (a shorter list
is padded in front with its first value). Checkpoints are written once per level, at its end
(``save_steps`` above the step count), since there is no validation set to choose one by.

``libpecos`` 1.2.8 was built for transformers 4, numpy 1 and scipy < 1.14; the GPU machine has
transformers 5, numpy 2 and a recent scipy. ``--pecos DIR`` puts an unpacked libpecos wheel
first on the path, and ``_pecos_compat`` patches, in this process only, what PECOS's XR-Transformer
path needs; none changes the computation:

- ``transformers.AdamW`` (removed): ``torch.optim.AdamW`` with the old default ``weight_decay=0``;
- ``SequenceSummary`` and the docstring constants (removed): used only by PECOS's XLNet class and
  docstrings, so a stub and empty strings;
- ``batch_encode_plus`` (removed): the tokenizer's call, its transformers 5 spelling;
- ``BertForXMC`` (the class MiniLM loads as) calls transformers 5's ``post_init`` after its own
  ``__init__``;
- ``scipy.sparse.sputils.get_index_dtype`` and ``upcast`` (removed in scipy 1.14): the functions
  scipy moved to ``_sputils``;
- ``smat_util``'s ``np.array(..., copy=False)``: numpy 2 reads it as "never copy"; numpy 1's
  meaning is numpy 2's ``copy=None``;
- ``csr_matrix[torch_tensor]``: recent scipy rejects torch index tensors; they go in as numpy.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _pecos_compat() -> None:
    import importlib

    import torch

    consts = {
        "bert": ["BERT_INPUTS_DOCSTRING", "BERT_START_DOCSTRING"],
        "roberta": ["ROBERTA_INPUTS_DOCSTRING", "ROBERTA_START_DOCSTRING"],
        "xlm_roberta": ["XLM_ROBERTA_START_DOCSTRING"],
        "xlnet": ["XLNET_INPUTS_DOCSTRING", "XLNET_START_DOCSTRING"],
        "distilbert": ["DISTILBERT_INPUTS_DOCSTRING", "DISTILBERT_START_DOCSTRING"],
    }
    for model, names in consts.items():
        mod = importlib.import_module(f"transformers.models.{model}.modeling_{model}")
        for c in names:
            if not hasattr(mod, c):
                setattr(mod, c, "")

    class SequenceSummary(torch.nn.Module):  # only PECOS's XLNet head uses it
        def __init__(self, config: Any) -> None:
            raise NotImplementedError("XLNet is not used by this benchmark")

    mu = importlib.import_module("transformers.modeling_utils")
    if not hasattr(mu, "SequenceSummary"):
        mu.SequenceSummary = SequenceSummary
    import scipy.sparse._sputils as new_sputils
    import scipy.sparse.sputils as old_sputils

    for name in ("get_index_dtype", "upcast"):  # scipy >= 1.14 dropped them there
        if name not in old_sputils.__dict__:
            setattr(old_sputils, name, getattr(new_sputils, name))
    import numpy
    import pecos.utils.smat_util as smat_util

    class _Numpy2(types.ModuleType):  # numpy 2 reads copy=False as "never copy"
        def __getattr__(self, name: str) -> Any:
            return getattr(numpy, name)

        @staticmethod
        def array(obj: Any, *a: Any, copy: Any = True, **kw: Any) -> Any:
            return numpy.array(obj, *a, copy=None if copy is False else copy, **kw)

    smat_util.np = _Numpy2("numpy")  # type: ignore[attr-defined]
    import scipy.sparse as sp

    getitem = sp.csr_matrix.__getitem__

    def csr_getitem(self: Any, key: Any) -> Any:  # scipy >= 1.15 rejects torch index tensors
        if isinstance(key, torch.Tensor):
            key = key.numpy()
        return getitem(self, key)

    sp.csr_matrix.__getitem__ = csr_getitem
    # importing a model module replaces sys.modules["transformers"]: patch the final one
    tf = sys.modules["transformers"]
    if "AdamW" not in dir(tf):
        tf.AdamW = functools.partial(torch.optim.AdamW, weight_decay=0.0)
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase as Tok

    if "batch_encode_plus" not in dir(Tok):  # transformers 5: the call does batches

        def batch_encode_plus(self: Any, batch_text_or_text_pairs: Any, **kw: Any) -> Any:
            return self(batch_text_or_text_pairs, **kw)

        Tok.batch_encode_plus = batch_encode_plus
    import pecos.xmc.xtransformer.network as net

    init = net.BertForXMC.__init__

    def bert_init(self: Any, config: Any) -> None:  # transformers 5 needs post_init()
        init(self, config)
        if not hasattr(self, "all_tied_weights_keys"):
            self.post_init()

    net.BertForXMC.__init__ = bert_init


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pecos", default=None, help="unpacked libpecos wheel, put first on the path")
    p.add_argument("--data", default=str(HERE.parent / "../shared/data/debian/texts"))
    p.add_argument("--labels", default="tags")
    p.add_argument("--encoder", default=str(HERE / ".cache/minilm"))
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--epochs", default="1,2")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.pecos:
        sys.path.insert(0, args.pecos)
    sys.path.insert(0, str(HERE))

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    _pecos_compat()
    from pecos.utils import torch_util
    from pecos.xmc import Indexer, LabelEmbeddingFactory
    from pecos.xmc.xtransformer.model import XTransformer
    from pecos.xmc.xtransformer.module import MLProblemWithText

    from _machine import machine
    from bench_xtransformer import _dir_mb, _split
    from xmrrs._targets import encode_label_lists, truth_indicator
    from xmrrs.metrics import precision_at_k
    from xmrrs.text import TfidfVectorizer

    tr_x, tr_y, te_x, te_y = _split(args)
    Y_tr, classes = encode_label_lists(tr_y)

    info = machine()
    setting = (
        f"PECOS XR-Transformer, debian texts ({args.labels}): train {len(tr_x)}, test "
        f"{len(te_x)} (with labels), {len(classes)} labels; max_length {args.max_length}, "
        f"epochs/level {args.epochs}, batch {args.batch_size}, lr {args.learning_rate}, "
        f"{args.threads} threads, cuda {torch.cuda.is_available()}; {info['cpu']}"
    )
    print(setting, flush=True)
    times: dict[str, float] = {}
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, n_jobs=args.threads)
    X_tr = vec.fit_transform(tr_x).astype(np.float32)
    X_te = vec.transform(te_x).astype(np.float32)
    times["tfidf"] = time.perf_counter() - t0

    torch_util.set_seed(0)
    t0 = time.perf_counter()
    tp = XTransformer.TrainParams.from_dict(
        {
            "model_shortcut": args.encoder,
            "negative_sampling": "tfn+man",
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "save_steps": 10**9,
            "logging_steps": 200,
            "threads": args.threads,
        },
        recursive=True,
    )
    pp = XTransformer.PredParams.from_dict({"truncate_length": args.max_length}, recursive=True)
    chain = Indexer.gen(
        LabelEmbeddingFactory.pifa(Y_tr, X_tr), train_params=tp.preliminary_indexer_params
    )
    times["tree"] = time.perf_counter() - t0
    levels = [c.shape[0] for c in chain]
    per = [int(v) for v in args.epochs.split(",")]
    per = [per[0]] * max(0, len(levels) - len(per)) + per[-len(levels) :]
    print(f"PECOS tree levels {levels}, epochs {per}", flush=True)
    base = tp.matcher_params_chain
    tp.matcher_params_chain = [
        type(base).from_dict({**base.to_dict(), "num_train_epochs": e}) for e in per
    ]
    prob = MLProblemWithText(tr_x, Y_tr, X_feat=X_tr)
    t0 = time.perf_counter()
    model = XTransformer.train(
        prob, clustering=chain, train_params=tp, pred_params=pp, threads=args.threads
    )
    times["fine-tune + ranker"] = time.perf_counter() - t0
    t_fit = time.perf_counter() - t_all
    t0 = time.perf_counter()
    P = model.predict(
        te_x, X_feat=X_te, batch_size=args.batch_size, only_topk=5, threads=args.threads
    )
    t_pred = time.perf_counter() - t0
    Y_te = truth_indicator(te_y, classes, len(te_y))
    r: dict[str, Any] = {
        "row": "pecos",
        "name": "PECOS XR-Transformer",
        "train_s": round(t_fit, 2),
        "train_by_stage_s": {k: round(v, 2) for k, v in times.items()},
        "predict_s": round(t_pred, 3),
        "predict_ms_per_text": round(1000 * t_pred / len(te_x), 3),
        "tree_levels": levels,
        "epochs": per,
    }
    for k in (1, 3, 5):
        r[f"p@{k}"] = round(float(precision_at_k(Y_te, P, k=k)), 4)
    with tempfile.TemporaryDirectory() as d:
        model.save(str(Path(d) / "m"))
        r["model_mb"] = round(_dir_mb(Path(d) / "m"), 1)
    by_stage = ", ".join(f"{k} {v:.1f}" for k, v in times.items())
    lines = [
        f"Setting: {setting}",
        "",
        "| row | P@1 | P@3 | P@5 | train s | train by stage (s) | predict ms/text | model MB |",
        "|---|---|---|---|---|---|---|---|",
        f"| PECOS XR-Transformer (levels {levels}, epochs {per}) | {r['p@1']:.4f} | "
        f"{r['p@3']:.4f} | {r['p@5']:.4f} | {t_fit:.1f} | {by_stage} | "
        f"{r['predict_ms_per_text']:.2f} | {r['model_mb']:.1f} |",
    ]
    print(lines[-1], flush=True)
    r.update(setting=setting, machine=info, args=vars(args), date=time.strftime("%F %T"))
    if args.out:
        from _machine import write_results

        write_results(args.out, lines, [r])
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
