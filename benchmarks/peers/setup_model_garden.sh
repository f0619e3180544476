#!/usr/bin/env bash
# Creates (or reuses) the virtual environment of the "TF Model Garden" benchmark peer.
#
# The Model Garden (tf-models-official) pins TensorFlow 2.20 and builds tf_keras (Keras 2)
# models, so it cannot share tfdet's environment (TF 2.21 / Keras 3); it gets its own, at
# .venv-model-garden in the repository root unless MG_VENV names another path. Installs
# exactly the versions in benchmarks/peers/model_garden_requirements.txt (tensorflow==2.20.0,
# tf-models-official==2.20.0, tf-keras==2.20.1 and what `import official.vision` needs) with
# `pip install --no-deps`, so nothing unpinned is pulled in (no CUDA extras either).
#
#   benchmarks/peers/setup_model_garden.sh                 # -> .venv-model-garden
#   MG_VENV=/tmp/mg benchmarks/peers/setup_model_garden.sh # -> /tmp/mg
#   PYTHON=python3.11 benchmarks/peers/setup_model_garden.sh
#
# Idempotent: an existing venv is reused and pip leaves the packages already at their pinned
# versions alone (a rerun takes seconds). It ends by importing official.vision and building
# the `retinanet_resnetfpn_coco` config, and prints where the venv is. Then:
#
#   .venv-model-garden/bin/python benchmarks/peers/model_garden_retinanet.py --runs 5
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${MG_VENV:-$ROOT/.venv-model-garden}"
REQS="$ROOT/benchmarks/peers/model_garden_requirements.txt"
PYTHON="${PYTHON:-python3}"

# TF 2.20 ships wheels for CPython 3.9-3.13; the pins were resolved on 3.11.
if ! "$PYTHON" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 13))'; then
  echo "error: $PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())')" \
       "but TF 2.20 needs 3.9-3.13 (the pins were resolved on 3.11); set PYTHON=" >&2
  exit 1
fi

if [[ -x "$VENV/bin/python" ]]; then
  echo "Reusing the Model Garden venv at $VENV"
else
  echo "Creating the Model Garden venv at $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  "$PYTHON" -m venv "$VENV"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install --quiet --no-deps --no-input -r "$REQS"

# Quiet TF's start-up logging for the check.
TF_CPP_MIN_LOG_LEVEL=2 "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md

import tensorflow as tf
import tf_keras
from official.core import exp_factory
from official.vision import configs  # noqa: F401 (registers the vision experiments)
from official.vision.modeling import factory  # noqa: F401

exp_factory.get_exp_config("retinanet_resnetfpn_coco")
print(f"tensorflow {tf.__version__}, tf-models-official {md.version('tf-models-official')}, "
      f"tf-keras {tf_keras.__version__}: official.vision imports")
EOF

echo "Model Garden venv: $VENV"
echo "Run: $VENV/bin/python $ROOT/benchmarks/peers/model_garden_retinanet.py"
