#!/usr/bin/env bash
# GPU readiness in one go, about 6 minutes on one GPU (the budget is 8; each step has its own time limit):
#   1. selftest --json --compile  every device path, what it costs (compile time-boxed at 150 s)
#   2. bench train / data / eval  plain against fast paths, each --json
#   3. one epoch of a 40,000-image demo root with configs/gpu.yaml (the root is written in the background
#      while 1 and 2 run: rendering 44,000 faces takes a CPU core about 4 minutes)
# Usage:  tools/gpu_check.sh [OUT]        (default OUT: runs/gpu_check; results land there, one file per step)
# Knobs (environment): PYTHON, CONFIG, IDENTITIES and IMAGES_PER_IDENTITY (the demo root's size: 889 x 50,
# one image in ten of each to dev, gives 40,005 training images), SETTINGS (extra --set options for every
# step, e.g. "--set model.width=0.125" for a dry run on a CPU), COMPILE_SECONDS (150).
set -u
OUT=${1:-runs/gpu_check}
PYTHON=${PYTHON:-python}
CONFIG=${CONFIG:-configs/gpu.yaml}
IDENTITIES=${IDENTITIES:-889}
IMAGES_PER_IDENTITY=${IMAGES_PER_IDENTITY:-50}
SETTINGS=${SETTINGS:-}
COMPILE_SECONDS=${COMPILE_SECONDS:-150}
DATA="$OUT/demo40k"
mkdir -p "$OUT"
started=$(date +%s)
status=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, stdout to OUT/NAME.json or .log, say how it went
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name" 2> "$OUT/$name.err"
    local rc=$?
    echo "$name: exit $rc after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
    [ $rc -eq 0 ] || status=1
}

: > "$OUT/summary.txt"
if [ ! -f "$DATA/val_pairs.txt" ]; then
    "$PYTHON" -m helpers demo-data "$DATA" --identities "$IDENTITIES" --images-per-identity "$IMAGES_PER_IDENTITY" \
        --val-pairs 1000 --test-pairs 1000 --overwrite > "$OUT/demo-data.log" 2>&1 &
    writer=$!
fi

# shellcheck disable=SC2086  # SETTINGS is a list of options
step selftest.json 300 "$PYTHON" -m helpers selftest --config "$CONFIG" $SETTINGS --json \
    --compile --compile-seconds "$COMPILE_SECONDS"
step bench_train.json 120 "$PYTHON" -m helpers bench train --config "$CONFIG" $SETTINGS --json
step bench_data.json 120 "$PYTHON" -m helpers bench data --workers 4 --json
step bench_eval.json 120 "$PYTHON" -m helpers bench eval --config "$CONFIG" $SETTINGS --json

if [ -n "${writer:-}" ]; then
    wait "$writer" || { echo "demo-data failed: see $OUT/demo-data.log" | tee -a "$OUT/summary.txt"; exit 1; }
fi
rm -rf "$OUT/epoch"  # a fresh run each time, not a resume of the last one
step epoch.log 300 "$PYTHON" -m helpers train --config "$CONFIG" $SETTINGS --set "data.root=$DATA" \
    --set train.epochs=1 --set "run.out_dir=$OUT" --set run.name=epoch --set train.progress=false \
    --set tracking.wandb.mode=disabled
echo "total: $(( $(date +%s) - started )) s (budget 480 s); results in $OUT" | tee -a "$OUT/summary.txt"
exit $status
