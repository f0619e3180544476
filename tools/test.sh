#!/usr/bin/env bash
# The README's test command: sets up the environment (tools/setup_env.sh),
# lints, and runs the test suite in TFDET_TEST_WORKERS (default 2) processes
# (pytest-xdist; each process steals the others' queued tests when it runs dry).
# Extra arguments go to pytest and come last, so `-n 0` runs in one process.
#
#   bash tools/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
venv="${TFDET_VENV:-.venv}"
echo "tfdet: ruff check"
"$venv/bin/ruff" check .
echo "tfdet: pytest"
TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  -n "${TFDET_TEST_WORKERS:-2}" --dist worksteal "$@"
