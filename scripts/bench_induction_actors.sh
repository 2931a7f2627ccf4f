#!/usr/bin/env bash
# Induction certificates across Ray actors (issue 20): prompts certified per second over
# the first PROMPTS prompts of induction:vocab=8,period=4 (default all 4,096) with 1 and 2
# actors, in one run, then `farm check` of the 2-actor folder. Trains the checkpoint first
# unless OUT_DIR/checkpoint holds one (scripts/bench_induction.sh's model).
#
#   scripts/bench_induction_actors.sh [OUT_DIR [HEAD [PROMPTS]]]
#     (default: runs/induction, L1H0, 4096)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/induction}
head=${2:-L1H0}
prompts=${3:-4096}
if [ ! -f "$out/checkpoint/model.safetensors" ]; then
  .venv/bin/farm train --tasks induction --norm none --mlp 0 --width 32 --heads 1 --margin 6 \
    --no-attn-bias --no-unembed-bias --out "$out/checkpoint"
fi
for actors in 1 2; do
  uptime
  rm -rf "$out/certs-$actors"
  start=$(date +%s.%N)
  .venv/bin/farm induction certify --checkpoint "$out/checkpoint" --head "$head" \
    --actors "$actors" --unit 256 --prompts "$prompts" --out "$out/certs-$actors" || true
  end=$(date +%s.%N)
  python3 -c "import sys; s = float(sys.argv[2]) - float(sys.argv[1]); \
print(f'{sys.argv[3]} actor(s): wall {s:.1f} s with Ray start-up, {int(sys.argv[4]) / s:.1f} \
prompts/s')" "$start" "$end" "$actors" "$prompts"
done
diff -r "$out/certs-1" "$out/certs-2" && echo "1- and 2-actor folders identical"
.venv/bin/farm check "$out/certs-2" --checkpoint "$out/checkpoint"
uptime
