#!/usr/bin/env bash
# Creates (or updates) the virtual environment and builds tfdet into it:
# the pinned dependencies, the dev tools, and `pip install -e .`, which
# compiles the custom ops (CUDA kernels too when nvcc is found; see setup.py
# for TFDET_BUILD_CUDA / TFDET_CUDA_ARCHS).
#
#   tools/setup_env.sh            # venv in .venv (TFDET_VENV overrides)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TFDET_VENV:-.venv}"
python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "tfdet: creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r requirements-dev.txt
echo "tfdet: building the custom ops (pip install -e .)"
"$venv/bin/python" -m pip install -q --no-build-isolation --no-deps -e .
"$venv/bin/python" -c "from tfdet.ops import custom_ops as c; c.load(); print('tfdet: op library', c.library_path(), '(CUDA kernels: %s)' % c.built_with_cuda())"
