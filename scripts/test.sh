#!/usr/bin/env bash
# Set up (first run only) and run the checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Browser tests drive Debian's Chromium (Playwright's own browser downloads are not used).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "voxray tests: installing chromium (Debian) for the browser tests"
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/mypy voxray deployments gateway loadtest
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider "$@")
# WebRTC and browser tests must keep every packet on 127.0.0.1: as root, run
# the suite in a network namespace that has only the loopback interface.
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' _ "${pytest[@]}"
fi
echo "voxray tests: not root, so not isolated to loopback (calls offer only 127.0.0.1)" >&2
exec "${pytest[@]}"
