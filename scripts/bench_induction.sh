#!/usr/bin/env bash
# Induction-head certificates (issue 20): prompts certified per second over the whole
# domain of an induction task (default induction:vocab=8,period=4, 4,096 prompts; TASK=…
# for another, e.g. TASK=induction:vocab=7,period=3,len=8), the re-check's rate, and the
# stripe PNG. Trains the checkpoint first unless OUT_DIR/checkpoint holds one.
#
#   [TASK=spec] [PROMPT=index] scripts/bench_induction.sh [OUT_DIR [HEAD [TRAIN_ARGS ...]]]
#     (default: runs/induction, the head `farm induction heads` ranks first, prompt 83)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/induction}
task=${TASK:-induction}
train=("${@:3}")
if [ ${#train[@]} -eq 0 ]; then
  train=(--norm none --mlp 0 --width 32 --heads 1 --margin 6 --no-attn-bias --no-unembed-bias)
fi
if [ ! -f "$out/checkpoint/model.safetensors" ]; then
  .venv/bin/farm train --tasks "$task" "${train[@]}" --out "$out/checkpoint"
fi
uptime
.venv/bin/farm induction heads --checkpoint "$out/checkpoint" --task "$task" | tee "$out/heads.txt"
head=${2:-$(awk 'NR == 2 {print $1}' "$out/heads.txt")}
rm -rf "$out/certs"
start=$(date +%s.%N)
.venv/bin/farm induction certify --checkpoint "$out/checkpoint" --task "$task" --head "$head" \
  --out "$out/certs" || true
mid=$(date +%s.%N)
.venv/bin/farm check "$out/certs" --checkpoint "$out/checkpoint"
end=$(date +%s.%N)
.venv/bin/farm induction plot --checkpoint "$out/checkpoint" --task "$task" --head "$head" \
  --prompt "${PROMPT:-83}" --out "$out/stripe.png"
prompts=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['prompts'])" \
  "$out/certs/summary.json")
python3 -c "import sys; n = int(sys.argv[4]); c, k = float(sys.argv[2]) - float(sys.argv[1]), \
float(sys.argv[3]) - float(sys.argv[2]); print(f'wall: certify {c:.1f} s, check {k:.1f} s \
({n / c:.1f} and {n / k:.1f} prompts/s)')" "$start" "$mid" "$end" "$prompts"
du -sh "$out/certs"
uptime
