#!/usr/bin/env bash
# Every benchmark section at the paper's sizes on one GPU (H100 / H200), as one command:
# JAX bf16 (fp32 params, BN statistics and losses) vs PyTorch AMP fp16 + GradScaler, eager and
# torch.compile; ResNet-50 + CLIP RN50 text tower, batch 3 x 32 images of 288x144.
#
#   bash benchmarks/gpu.sh [extra benchmarks.run flags]
#
# Needs the package with its cuda and test extras (`pip install -e '.[cuda,test]'`: jax[cuda12],
# torch 2.14.1 + torchvision 0.29.1 CUDA wheels). Writes benchmarks/results/full-gpu.{json,txt}
# (or under $RESULTS). Budget: the whole run is cut at 7.5 min (`timeout 450`), to fit in 8.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RESULTS=${RESULTS:-benchmarks/results}
mkdir -p "$RESULTS"

unset JAX_PLATFORMS
export TF_CPP_MIN_LOG_LEVEL=2
# Both frameworks share the GPU: no up-front 75 % grab by XLA.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

"$PY" - <<'PYEOF'
import sys
import jax
import torch
if jax.default_backend() != "gpu":
    sys.exit(f"gpu.sh: JAX has no GPU backend (got {jax.default_backend()!r}); install jax[cuda12] "
             "(pip install -e '.[cuda,test]')")
if not torch.cuda.is_available():
    sys.exit("gpu.sh: PyTorch sees no CUDA device; install a CUDA build of torch 2.14.1")
print(f"gpu.sh: JAX {jax.__version__} on {jax.devices()[0].device_kind}, "
      f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}", flush=True)
PYEOF
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true

timeout 450 "$PY" -m benchmarks.run --preset full --json "$RESULTS/full-gpu.json" "$@" 2>&1 \
  | tee "$RESULTS/full-gpu.txt"
