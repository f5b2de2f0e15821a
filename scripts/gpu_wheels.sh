#!/usr/bin/env bash
# Download, here, the wheels a bare GPU machine (PyTorch, Python 3.12, no registry) lacks for
# scripts/gpu_bench.sh: moshi (without its torch-pulling extras) and what it and the bench
# import. They go to .whl/gpu/ (ignored by git, carried to the GPU run, ~25 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl/gpu
rm -rf "$dest" && mkdir -p "$dest"
target=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform any -d "$dest")
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip download "${target[@]}" --no-deps moshi==0.2.13
# what `import moshi.models` and loadtest.bench_moshi need besides torch (none pulls torch)
pip download "${target[@]}" einops==0.8.2 sentencepiece==0.2.3 safetensors==0.8.0 \
  huggingface-hub==2.4.0 pydantic==2.14.4 numpy==2.2.6 tqdm pyyaml
du -sh "$dest"
