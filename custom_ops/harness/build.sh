#!/usr/bin/env bash
# Builds the standalone kernel harness: the plain CPU kernels and CUDA
# launchers of custom_ops/kernels/ plus the extern "C" shims of
# custom_ops/harness/capi_*.cc, into one shared library that Python drives
# through ctypes (no TensorFlow needed; see check_*.py and run_gpu_checks.sh).
#
#   custom_ops/harness/build.sh [--cpu-only]
#
# Env: NVCC (default: nvcc on PATH), CUDA_ARCHS (default: 90, the H100).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ops="$(cd "$here/.." && pwd)"
out="$here/build"
mkdir -p "$out"
cpu_only=0
[[ "${1:-}" == "--cpu-only" ]] && cpu_only=1
CXX="${CXX:-g++}"
objs=()
cc_srcs=()
for f in "$ops"/kernels/*.cc "$here"/capi_*.cc; do
  [[ -e "$f" && "$f" != *.cu.cc ]] && cc_srcs+=("$f")
done
cu_srcs=()
for f in "$ops"/kernels/*.cu.cc; do [[ -e "$f" ]] && cu_srcs+=("$f"); done
with_cuda=1
if [[ $cpu_only == 1 || ${#cu_srcs[@]} == 0 ]]; then with_cuda=0; fi
cuda_flags=()
if [[ $with_cuda == 1 ]]; then
  NVCC="${NVCC:-nvcc}"
  # nvcc on PATH may be a wrapper script: find the toolkit that has the runtime.
  cudahome=""
  for c in "${CUDA_HOME:-}" "$(dirname "$(dirname "$(readlink -f "$(command -v "$NVCC")")")")" /usr/local/cuda; do
    if [[ -n "$c" && -e "$c/lib64/libcudart_static.a" ]]; then cudahome="$c"; break; fi
  done
  [[ -n "$cudahome" ]] || { echo "no CUDA toolkit with lib64/libcudart_static.a found; set CUDA_HOME" >&2; exit 1; }
  cuda_flags=(-I "$cudahome/include")
fi
for f in "${cc_srcs[@]}"; do
  o="$out/$(basename "$f").o"
  "$CXX" -std=c++17 -O3 -fPIC -Wall -I "$ops" "${cuda_flags[@]}" -DTFDET_HARNESS_WITH_CUDA=$with_cuda -c "$f" -o "$o"
  objs+=("$o")
done
link=()
if [[ $with_cuda == 1 ]]; then
  archs="${CUDA_ARCHS:-90}"
  gencode=()
  for a in ${archs//;/ }; do gencode+=(-gencode "arch=compute_$a,code=sm_$a"); done
  for f in "${cu_srcs[@]}"; do
    o="$out/$(basename "$f").o"
    "$NVCC" -std=c++17 -O3 -Xcompiler -fPIC -I "$ops" --expt-relaxed-constexpr -x cu "${gencode[@]}" -c "$f" -o "$o"
    objs+=("$o")
  done
  link=(-L"$cudahome/lib64" -lcudart_static -ldl -lrt -lpthread)
fi
"$CXX" -shared -o "$out/libtfdet_kernels.so" "${objs[@]}" "${link[@]}"
echo "built $out/libtfdet_kernels.so (cuda=$with_cuda)"
