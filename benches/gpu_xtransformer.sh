#!/usr/bin/env bash
# bench_xtransformer.py on a GPU machine with no network (the `device` tool's H200), from a
# bundle made here by benches/gpu_bundle.sh: the debian texts (xz), all-MiniLM-L6-v2 with its
# weights stored as float16 (to fit the 64 MiB transfer; widened back to float32 before use) and
# the built extension. A short smoke run measures the fine-tuning speed first; the full runs
# (tags, then deps: TF-IDF, frozen hybrid, fine-tuned) follow, each row printed as it ends.
#
#   OUT=/tmp/out benches/gpu_xtransformer.sh [BUNDLE]     # default BUNDLE: .gpu
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
common=(--data /tmp/xt/texts --encoder /tmp/xt/minilm --device "${DEVICE:-cuda}"
        --threads "${THREADS:-16}" --max-length "${MAXLEN:-128}" --batch-size 32 --learning-rate 1e-4)
"$py" benches/bench_xtransformer.py "${common[@]}" --labels tags --max-train "${SMOKE_N:-2000}" \
    --max-test 500 --levels 1,2 --epochs 1 --rows xt --out "$out/smoke.md" || exit 1
# fine-tuning speed (texts/s) of the smoke run's second stage decides the epochs
rate=$("$py" -c "import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(int(${SMOKE_N:-2000}/r['train_by_stage_s']['stage_2']))" "$out/smoke.jsonl")
echo "fine-tuning speed: $rate texts/s"
if [ "${rate:-0}" -ge 2500 ]; then tags_ep=1,3; deps_ep=1,1,2,2
elif [ "${rate:-0}" -ge 1200 ]; then tags_ep=1,2; deps_ep=1,1,1,1
else tags_ep=1,1; deps_ep=1,1,1,1; fi
[ -n "${TAGS_EPOCHS:-}" ] && tags_ep=$TAGS_EPOCHS
[ -n "${DEPS_EPOCHS:-}" ] && deps_ep=$DEPS_EPOCHS
"$py" benches/bench_xtransformer.py "${common[@]}" --labels tags --levels 1,2 --epochs "$tags_ep" \
    ${MAX_TRAIN:+--max-train $MAX_TRAIN} ${MAX_TEST:+--max-test $MAX_TEST} --out "$out/xt_tags.md"
"$py" benches/bench_xtransformer.py "${common[@]}" --labels deps --levels "${DEPS_LEVELS:-1,2,3,4}" --epochs "$deps_ep" \
    ${MAX_TRAIN:+--max-train $MAX_TRAIN} ${MAX_TEST:+--max-test $MAX_TEST} --out "$out/xt_deps.md"
