#!/usr/bin/env bash
# Set up (first run only) and run the checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy voxray deployments gateway loadtest
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
