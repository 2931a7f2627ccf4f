#!/usr/bin/env bash
# Issue 3's two targets on paper-size models (1 head) of several training seeds.
# Circuit sizes vary with the seed (2 to 8 edges per task), and both figures
# with them, so one seed's circuits do not speak for the model size. Per seed:
# farm train, farm extract for both tasks, then scripts/bench_properties.py
# --what fe (queries/s, z3) and --what all (all four properties, race).
#
#   scripts/bench_seeds.sh [OUT_DIR [SEED ...]]   (default: runs/bench-seeds, seeds 0-7)
#
# A checkpoint already under OUT_DIR/sSEED is reused; circuits are extracted again.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/bench-seeds}
seeds=("${@:2}")
if [ ${#seeds[@]} -eq 0 ]; then
  seeds=(0 1 2 3 4 5 6 7)
fi
for seed in "${seeds[@]}"; do
  dir="$out/s$seed"
  if [ ! -f "$dir/checkpoint/model.safetensors" ]; then
    .venv/bin/farm train --out "$dir/checkpoint" --seed "$seed" >/dev/null 2>&1 ||
      { echo "farm train failed for seed $seed" >&2; exit 1; }
  fi
  for task in quote_close bracket_type; do
    .venv/bin/farm extract --checkpoint "$dir/checkpoint" --task "$task" \
      --out "$dir/circuits/$task" --quiet >/dev/null
  done
  echo "== seed $seed"
  .venv/bin/python scripts/bench_properties.py "$dir/checkpoint" "$dir/circuits" --what fe
  .venv/bin/python scripts/bench_properties.py "$dir/checkpoint" "$dir/circuits" --what all
done
