#!/usr/bin/env bash
# Circuit properties of an attention-only sparsemax model (issue 20): train it unless
# OUT_DIR/checkpoint holds one, extract its head-granularity circuit with ACDC, and run
# `farm verify --properties all` over the task's whole domain, each step timed (wall,
# CPU, peak RSS) between two load readings.
#
#   scripts/bench_attention_only.sh [OUT_DIR [TASK [TRAIN_ARGS ...]]]
#     (default: runs/attnonly, induction:vocab=8,period=4 and issue 20's recipe: two
#     layers of one head, no norm, no biases)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/attnonly}
task=${2:-induction:vocab=8,period=4}
train=("${@:3}")
if [ ${#train[@]} -eq 0 ]; then
  train=(--norm none --mlp 0 --width 32 --heads 1 --margin 6 --no-attn-bias --no-unembed-bias)
fi
timed() { /usr/bin/time -f "  $1: %e s wall, %U s user + %S s sys, peak RSS %M KB" "${@:2}"; }
mkdir -p "$out"
uptime
if [ ! -f "$out/checkpoint/model.safetensors" ]; then
  timed train .venv/bin/farm train --tasks "$task" "${train[@]}" --out "$out/checkpoint" \
    2> "$out/train.log"  # its progress bar; the time line is appended last
  tr '\r' '\n' < "$out/train.log" | tail -1
fi
timed extract .venv/bin/farm extract --checkpoint "$out/checkpoint" --task "$task" \
  --granularity head --out "$out/circuit" --device cpu --quiet
timed verify .venv/bin/farm verify --checkpoint "$out/checkpoint" --task "$task" \
  --circuit "$out/circuit/circuit.json" --properties all --quiet --out "$out/verify.json" \
  || true  # a property that does not hold is a result, not a failed benchmark
uptime
