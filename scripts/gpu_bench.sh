#!/usr/bin/env bash
# Everything one short GPU run needs, in order: make the carried wheels importable (the
# machine has PyTorch and no registry), run the full-size Moshi bench within 8 minutes,
# write its JSON (and nvidia-smi's view) to the folder given.
#
#   scripts/gpu_wheels.sh            # here, first: downloads .whl/gpu/ (carry it along)
#   scripts/gpu_bench.sh OUT_DIR     # there
#
# BENCH_SIZE=tiny BENCH_DEVICE=cpu runs the same path on a CPU (the test suite does).
set -euo pipefail
out=${1:?usage: scripts/gpu_bench.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$out"
py=${PYTHON:-python3}
site=${BENCH_SITE:-/tmp/voxray-gpu-site}
if [ -d .whl/gpu ] && [ ! -e "$site/.done" ]; then
  rm -rf "$site" && mkdir -p "$site"
  for w in .whl/gpu/*.whl; do "$py" -m zipfile -e "$w" "$site"; done  # no pip needed
  touch "$site/.done"
fi
command -v nvidia-smi >/dev/null && nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
size=${BENCH_SIZE:-full}
device=${BENCH_DEVICE:-cuda}
dtype=${BENCH_DTYPE:-$([ "$device" = cpu ] && echo float32 || echo bfloat16)}
# The machine's own packages come first; the carried ones fill in what it lacks.
timeout "${BENCH_TIMEOUT_S:-480}" "$py" -c '
import runpy, sys
sys.path.insert(0, "."); sys.path.append(sys.argv.pop(1))
sys.argv[0] = "bench_moshi"
runpy.run_module("loadtest.bench_moshi", run_name="__main__")
' "$site" --size "$size" --device "$device" --dtype "$dtype" \
  --ticks "${BENCH_TICKS:-60}" --budget-s "${BENCH_BUDGET_S:-400}" \
  --max-slots "${BENCH_MAX_SLOTS:-256}" --variants ${BENCH_VARIANTS:-graphs no-graphs compile} \
  --json "$out/moshi_$size.json" 2>&1 | tee "$out/bench.log"
