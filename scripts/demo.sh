#!/usr/bin/env bash
# The main job end to end on this machine: install, then `farm run job.yaml`
# (an embedded Ray instance: train, extract, verify all four properties, write
# runs/demo/result.json). Rerunning resumes from the answers already persisted.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/farm run job.yaml "$@"
