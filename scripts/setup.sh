#!/usr/bin/env bash
# Create .venv and install the farm into it at exactly the versions of requirements.lock
# (refresh it with scripts/lock.sh). Idempotent: a no-op when neither pyproject.toml nor
# the lock has changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.farm-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # Pinned first: an unpinned torch would pull several GB of CUDA packages. The lock
  # leaves torch out for that reason (see scripts/lock.sh).
  .venv/bin/python -m pip install --quiet torch==2.13.0
  .venv/bin/python -m pip install --quiet -r requirements.lock -e '.[dev]'
  echo "$want" > "$stamp"
fi
