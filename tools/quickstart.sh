#!/usr/bin/env bash
# The README's main job: sets up the environment (tools/setup_env.sh), then
# generates the synthetic data set, trains a small Mask R-CNN FPN on it,
# evaluates, exports a SavedModel and annotates a few images
# (python -m tfdet.quickstart). Extra arguments go to the quickstart, e.g.
#   bash tools/quickstart.sh --work_dir=/tmp/qs --gin_param='train.run.max_iter=100'
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
venv="${TFDET_VENV:-.venv}"
TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" -m tfdet.quickstart "$@"
