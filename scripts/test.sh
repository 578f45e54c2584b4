#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the test suite; then, where nvcc exists, the CUDA build
# check (scripts/test_cuda_build.sh). .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q tests "$@"
bash scripts/test_cuda_build.sh
