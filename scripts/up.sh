#!/usr/bin/env bash
# Set up (first run only) and start voxray on this machine: local Ray, CPU profile.
# Extra arguments go to `voxray up` (e.g. --profile none --address auto on a cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/voxray up "$@"
