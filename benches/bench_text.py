"""Time fit_transform of xmrrs.text.TfidfVectorizer against scikit-learn's on a jsonl corpus.

Usage::

    python benches/bench_text.py ../shared/data/debian/texts/train.jsonl [--threads 2]
        [--field text] [--repeat 3] [--ngram-max 1] [--analyzer word]

Both run with the same settings (scikit-learn with ``dtype=float32``); the outputs are
checked equal (same feature names, values within float32 rounding) before the times, the best
of ``--repeat`` runs each, and their ratio are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", help="jsonl file, one object per line")
    p.add_argument("--field", default="text", help="the text field (default: text)")
    p.add_argument("--threads", type=int, default=2, help="xmrrs threads (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each, best kept")
    p.add_argument("--analyzer", default="word", choices=("word", "char", "char_wb"))
    p.add_argument("--ngram-max", type=int, default=1, help="ngram_range=(1, N)")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer as SkTfidf

    from xmrrs.text import TfidfVectorizer

    with open(args.path, encoding="utf-8") as f:
        docs = [json.loads(line)[args.field] for line in f if line.strip()]
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    params = {"analyzer": args.analyzer, "ngram_range": (1, args.ngram_max)}

    def best(make):  # type: ignore[no-untyped-def]
        times, out = [], None
        for _ in range(args.repeat):
            est = make()
            t0 = time.perf_counter()
            X = est.fit_transform(docs)
            times.append(time.perf_counter() - t0)
            out = (est, X)
        return min(times), out

    t_sk, (sk, A) = best(lambda: SkTfidf(dtype=np.float32, **params))
    t_x, (xv, B) = best(lambda: TfidfVectorizer(n_jobs=args.threads, **params))
    same_names = list(sk.get_feature_names_out()) == list(xv.get_feature_names_out())
    diff = float(abs(A - B).max()) if same_names and A.shape == B.shape else float("inf")
    equal = same_names and diff <= 1e-6
    print(
        f"corpus: {args.path}: {len(docs)} documents, {mb:.1f} MB; {params}; "
        f"{A.shape[1]} features, nnz {A.nnz}"
    )
    print(f"scikit-learn {t_sk:.3f} s | xmrrs ({args.threads} threads) {t_x:.3f} s")
    print(f"ratio {t_sk / t_x:.1f}x | outputs equal: {equal} (max |diff| {diff:.2e})")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
