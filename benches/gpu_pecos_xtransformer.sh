#!/usr/bin/env bash
# PECOS's XR-Transformer against xmrrs's on debian/tags, in one run on a GPU machine with no
# network (the `device` tool's H200), from a bundle made here by `PECOS=1 benches/gpu_bundle.sh`.
# Same TF-IDF, encoder (all-MiniLM-L6-v2), max length 128, batch 32, lr 1e-4, tfn+man, and one
# epoch on the upper level, two on the labels for both; PECOS first, then xmrrs's TF-IDF and
# fine-tuned rows. Each row is printed as it ends.
#
#   OUT=/tmp/out benches/gpu_pecos_xtransformer.sh [BUNDLE]     # default BUNDLE: .gpu
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
common=(--data /tmp/xt/texts --encoder /tmp/xt/minilm --threads "${THREADS:-16}"
        --max-length 128 --batch-size 32 --learning-rate 1e-4 --labels "${LABELS:-tags}"
        --epochs "${EPOCHS:-1,2}" ${MAX_TRAIN:+--max-train $MAX_TRAIN} ${MAX_TEST:+--max-test $MAX_TEST})
"$py" benches/bench_pecos_xtransformer.py "${common[@]}" --pecos /tmp/xt/pecos \
    --out "$out/pecos_xt.md" 2>&1 | grep -v "it/s\]$"
"$py" benches/bench_xtransformer.py "${common[@]}" --device "${DEVICE:-cuda}" --rows "${ROWS:-tfidf,xt}" \
    --out "$out/xmrrs_xt.md"
