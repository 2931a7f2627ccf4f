#!/usr/bin/env bash
# The main job end to end on this machine: install, then `farm run job.yaml` on an
# embedded Ray instance (train, extract a circuit per task, verify all four
# properties with Z3 racing cvc5, sign a certificate into runs/demo/), then show
# the exact replay of the domain and check the certificate as a reader would.
# Rerunning resumes from the answers already persisted under runs/demo/cache.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=runs/demo
status=0
.venv/bin/farm run job.yaml --out "$out" || status=$?
if [ "$status" -gt 1 ]; then
  exit "$status"  # an error, not a verdict: there is no fresh certificate to check
fi
.venv/bin/farm replay --checkpoint "$out/checkpoint"
.venv/bin/farm check "$out/certificate.dsse.json" --pubkey "$out/keys/farm_ed25519.pub"
exit "$status"  # 1 when some property is not VERIFIED (the certificate says which)
