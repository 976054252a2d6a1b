#!/usr/bin/env bash
# Run every notebook (notebooks/NN_*.py, Jupytext percent format) in order with papermill.
#   ./run_all.sh [--scale smoke|demo|paper] [--source synthetic|allen] [--seeds 0,1,2] [--only NN[,NN]]
#                [--partition computed|paper] [--extended]
# Builds .venv on first use. Executed notebooks go to notebooks/executed/<scale>/, figures to figures/<scale>/,
# tables to results/<scale>/. Stops at the first failing notebook and prints the failing cell's error.
set -euo pipefail
REPO="$(cd "$(dirname "$0")" && pwd)"
"$REPO/tools/venv.sh"
export PYTHONHASHSEED=0
exec "$REPO/.venv/bin/python" -m poyocap.notebook_runner "$@"
