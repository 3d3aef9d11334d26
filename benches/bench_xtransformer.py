"""XR-Transformer against XR-Linear on raw texts: accuracy, training time by stage, size.

Usage::

    benches/setup_minilm.sh          # once: all-MiniLM-L6-v2 into benches/.cache/minilm
    .venv/bin/python benches/bench_xtransformer.py --labels tags --max-train 2000 --epochs 1 \
        [--data ../shared/data/debian/texts] [--max-test N] [--max-length 64] \
        [--freeze-layers 0] [--batch-size 32] [--device auto] [--threads 2] \
        [--rows tfidf,frozen,xt] [--out benches/results/xtransformer.md]

Rows (the same TF-IDF, ``TfidfVectorizer(sublinear_tf=True, min_df=2)``, and the same ranker,
``XRLinearClassifier(random_state=0)``, in all three):

- ``tfidf``: XR-Linear on TF-IDF;
- ``frozen``: XR-Linear on [TF-IDF, pretrained MiniLM embedding] (``XRTransformer(epochs=0)``);
- ``xt``: the fine-tuned XR-Transformer (``epochs`` per tree level, ``freeze_layers``).

P@1/3/5 are over the test rows with at least one label. Training time is split into TF-IDF,
tree, each fine-tuning stage, embedding of the training texts and the ranker; prediction is
from raw test texts; the model size is that of its saved directory. On 2 CPU cores one epoch
over 51k texts at length 64 takes about 35 min: use ``--max-train`` (the first N rows) for a
quick run, or ``--device cuda`` on a GPU machine. With ``--out``, the table goes there and one
JSON line per row is appended beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _read(path: Path, field: str, limit: int | None) -> tuple[list[str], list[list[str]]]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(texts) >= limit:
                break
            if line.strip():
                r = json.loads(line)
                texts.append(r["text"])
                labels.append(list(r.get(field) or []))
    return texts, labels


def _split(args: Any) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """The train rows, and the test rows with at least one label, of ``args.data``."""
    data = Path(args.data)
    tr_x, tr_y = _read(data / "train.jsonl", args.labels, args.max_train)
    te_x, te_y = _read(data / "test.jsonl", args.labels, args.max_test)
    keep = [i for i, y in enumerate(te_y) if y]
    return tr_x, tr_y, [te_x[i] for i in keep], [te_y[i] for i in keep]


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _evaluate(model: Any, texts: list[str], labels: list[list[str]]) -> dict[str, Any]:
    from xmrrs._targets import truth_indicator
    from xmrrs.metrics import precision_at_k

    t0 = time.perf_counter()
    ids, _ = model.predict_topk(texts, 5)
    t_pred = time.perf_counter() - t0
    Y = truth_indicator(labels, model.classes_, len(texts))
    out: dict[str, Any] = {"predict_s": round(t_pred, 3), "predict_ms_per_text": 0.0}
    out["predict_ms_per_text"] = round(1000 * t_pred / len(texts), 3)
    for k in (1, 3, 5):
        out[f"p@{k}"] = round(float(precision_at_k(Y, ids, k=k)), 4)
    with tempfile.TemporaryDirectory() as d:
        model.save(Path(d) / "m")
        out["model_mb"] = round(_dir_mb(Path(d) / "m"), 1)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(HERE.parent / "../shared/data/debian/texts"))
    p.add_argument("--labels", default="tags", help="label field: tags or deps")
    p.add_argument("--encoder", default=str(HERE / ".cache/minilm"), help="model directory")
    p.add_argument("--max-train", type=int, default=None, help="first N training rows")
    p.add_argument("--max-test", type=int, default=None, help="first N test rows")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--epochs", default="1", help="epochs per tree level: N, or one per level")
    p.add_argument("--levels", default=None, help="tree levels, e.g. 1,2 (default: all)")
    p.add_argument("--freeze-layers", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", default="tfidf,frozen,xt")
    p.add_argument("--out", default=None, help="e.g. benches/results/xtransformer.md")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    from _machine import machine
    from xmrrs import XRLinearClassifier
    from xmrrs.text import TfidfVectorizer
    from xmrrs.textmodel import TextXRClassifier
    from xmrrs.xtransformer import XRTransformer

    tr_x, tr_y, te_x, te_y = _split(args)
    n_labels = len({t for y in tr_y for t in y})
    info = machine()
    setting = (
        f"debian texts ({args.labels}): train {len(tr_x)}, test {len(te_x)} (with labels), "
        f"{n_labels} labels; max_length {args.max_length}, epochs/level {args.epochs}, "
        f"freeze_layers {args.freeze_layers}, batch {args.batch_size}, lr {args.learning_rate}, "
        f"device {args.device}, {args.threads} threads; {info['cpu']}, load {info['load1']}"
    )
    print(setting, flush=True)
    levels = None if args.levels is None else [int(v) for v in args.levels.split(",")]
    per_level = [int(v) for v in args.epochs.split(",")]
    epochs: int | list[int] = per_level[0] if len(per_level) == 1 else per_level

    def tfidf() -> TfidfVectorizer:
        return TfidfVectorizer(sublinear_tf=True, min_df=2, n_jobs=args.threads)

    def ranker() -> XRLinearClassifier:
        return XRLinearClassifier(random_state=0, n_jobs=args.threads)

    def xt(epochs: int | list[int]) -> XRTransformer:
        return XRTransformer(
            args.encoder,
            max_length=args.max_length,
            levels=levels,
            epochs=epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            freeze_layers=args.freeze_layers,
            vectorizer=tfidf(),
            ranker=ranker(),
            device=args.device,
            n_jobs=args.threads,
            verbose=1,
        )

    makers = {
        "tfidf": ("XR-Linear on TF-IDF", lambda: TextXRClassifier(tfidf(), ranker())),
        "frozen": ("TF-IDF + frozen MiniLM", lambda: xt(0)),
        "xt": ("XR-Transformer (fine-tuned)", lambda: xt(epochs)),
    }
    records = []
    lines = [
        f"Setting: {setting}",
        "",
        "| row | P@1 | P@3 | P@5 | train s | train by stage (s) | predict ms/text | model MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in args.rows.split(","):
        name, make = makers[row]
        model = make()
        t0 = time.perf_counter()
        model.fit(tr_x, tr_y)
        t_fit = time.perf_counter() - t0
        r: dict[str, Any] = {"row": row, "name": name, "train_s": round(t_fit, 2)}
        r.update(_evaluate(model, te_x, te_y))
        stages = getattr(model, "fit_times_", {})
        r["train_by_stage_s"] = {k: round(v, 2) for k, v in stages.items()}
        r["stage_losses"] = getattr(model, "stage_losses_", None)
        by_stage = ", ".join(f"{k} {v:.1f}" for k, v in stages.items()) or "-"
        lines.append(
            f"| {name} | {r['p@1']:.4f} | {r['p@3']:.4f} | {r['p@5']:.4f} | {t_fit:.1f} | "
            f"{by_stage} | {r['predict_ms_per_text']:.2f} | {r['model_mb']:.1f} |"
        )
        print(lines[-1], flush=True)
        r.update(setting=setting, machine=info, args=vars(args), date=time.strftime("%F %T"))
        records.append(r)
    if args.out:
        from _machine import write_results

        write_results(args.out, lines, records)
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
