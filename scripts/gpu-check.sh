#!/usr/bin/env bash
# CUDA checks for a machine with a GPU and a python3 that has torch with CUDA: the tests marked
# `cuda` (they skip elsewhere), then the n = 10^6, d = 512, 20 δ benchmark (exact and --ci).
# Usage: scripts/gpu-check.sh [benchmark arguments, e.g. --n 200000]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
"$PY" -m pip install -q threadpoolctl pydantic pytest 2>/dev/null || true
"$PY" -m pytest -q -p no:cacheprovider -o addopts="" -m cuda tests/test_frequency.py tests/test_row_sampling.py
timeout 480 "$PY" benchmarks/gpu_bench.py "$@"
