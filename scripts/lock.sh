#!/usr/bin/env bash
# Refresh requirements.lock from pyproject.toml's ranges: run after changing a dependency,
# commit both files. pip-tools resolves with pip itself; torch is left out of the lock
# (--unsafe-package): pyproject pins it exactly, and setup.sh installs it first from
# wherever that pin resolves (the CPU wheel here, PyTorch's CPU index on cluster nodes).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/pip" install --quiet --upgrade pip 'pip-tools==7.7.0'
CUSTOM_COMPILE_COMMAND=scripts/lock.sh "$tools/bin/pip-compile" --quiet --extra dev \
  --unsafe-package torch --no-strip-extras --no-emit-index-url --no-emit-find-links \
  --output-file requirements.lock pyproject.toml
