#!/usr/bin/env bash
# The main job end to end on this machine: install, train, replay exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=${FARM_RUN_DIR:-runs/demo}
.venv/bin/farm train --out "$out/checkpoint"
.venv/bin/farm replay --checkpoint "$out/checkpoint" --json "$out/margins.json"
