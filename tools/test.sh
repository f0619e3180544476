#!/usr/bin/env bash
# The README's test command: sets up the environment (tools/setup_env.sh),
# lints, and runs the test suite. Extra arguments go to pytest.
#
#   bash tools/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
venv="${TFDET_VENV:-.venv}"
echo "tfdet: ruff check"
"$venv/bin/ruff" check .
echo "tfdet: pytest"
TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
