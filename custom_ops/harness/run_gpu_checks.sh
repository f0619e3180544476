#!/usr/bin/env bash
# The prepared GPU check: one command for a machine with an NVIDIA GPU, the
# CUDA toolkit (nvcc) and torch + torchvision with CUDA; no TensorFlow. About
# 3-5 minutes on an H100/H200, most of it the build and the sanitizer run.
#
#   bash custom_ops/harness/run_gpu_checks.sh
#
# 1. builds custom_ops/harness/build/libtfdet_kernels.so with nvcc
#    (build.sh; CUDA_ARCHS defaults to 90 here);
# 2. check_roi_align.py: RoIAlign single-level and multi-level (FPN P2-P5),
#    CUDA vs CPU kernel vs torchvision forward and backward, then the timing
#    table, each time beside its memory floor;
# 3. check_proposals.py: proposals CUDA vs CPU, NMS vs torchvision, timings;
# 4. when compute-sanitizer is found (PATH or $CUDA_HOME/bin): memcheck over
#    check_roi_align.py on a small case (64 RoIs, 16 channels), with torch's
#    caching allocator off so that an out-of-bounds access leaves its buffer.
#
# Prints everything, runs every step even after a failure (except a failed
# build), and ends with one line per step; exits 0 only if all passed.
# Env: PYTHON (default python3), CUDA_ARCHS (default 90), NVCC, CUDA_HOME,
# RUNS (timing repetitions, default 20), SANITIZER_TIMEOUT (s, default 300).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
PYTHON="${PYTHON:-python3}"
export CUDA_ARCHS="${CUDA_ARCHS:-90}"
RUNS="${RUNS:-20}"
results=()
status=0

step() {  # step NAME COMMAND...: runs it, prints its exit code and time
  local name="$1"
  shift
  echo
  echo "=== $name: $*"
  local t0=$SECONDS
  "$@"
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
  results+=("$name: $([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)")")
  [[ $rc == 0 ]] || status=1
  return $rc
}

echo "=== machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"$PYTHON" -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| torchvision', torchvision.__version__, '|', torch.cuda.get_device_name())" \
  || echo "torch/torchvision with CUDA not importable by $PYTHON"

if ! step build bash custom_ops/harness/build.sh; then
  echo "build failed; nothing else to run"
  exit 1
fi
step roi_align timeout 480 "$PYTHON" custom_ops/harness/check_roi_align.py --runs "$RUNS"
step proposals timeout 300 "$PYTHON" custom_ops/harness/check_proposals.py --runs "$RUNS"

sanitizer="$(command -v compute-sanitizer || true)"
for c in "${CUDA_HOME:-}" /usr/local/cuda; do
  [[ -z "$sanitizer" && -n "$c" && -x "$c/bin/compute-sanitizer" ]] && sanitizer="$c/bin/compute-sanitizer"
done
if [[ -n "$sanitizer" ]]; then
  flags=(--tool memcheck --error-exitcode 1 --print-limit 20)
  # CUDA API errors that torch provokes and handles itself are not ours.
  "$sanitizer" --help 2>&1 | grep -q -- --report-api-errors && flags+=(--report-api-errors no)
  step memcheck timeout "${SANITIZER_TIMEOUT:-300}" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    "$sanitizer" "${flags[@]}" "$PYTHON" custom_ops/harness/check_roi_align.py \
    --rois 64 --channels 16 --runs 2 --copy-mib 16
else
  results+=("memcheck: skipped (no compute-sanitizer)")
fi

echo
echo "=== summary"
printf '%s\n' "${results[@]}"
exit $status
