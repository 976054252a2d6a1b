#!/usr/bin/env bash
# Unit tests + notebook regression checks, in .venv (built on first use).
#   ./run_tests.sh                 -> pytest tests/  and  pytest --nbval notebooks/executed/smoke/*.ipynb
#   ./run_tests.sh [pytest args]   -> pytest with your own arguments only (e.g. tests/test_config.py -k presets)
# pytest's exit code 5 ("no tests collected") counts as a failure.
set -euo pipefail
REPO="$(cd "$(dirname "$0")" && pwd)"
cd "$REPO"
"$REPO/tools/venv.sh"
PY="$REPO/.venv/bin/python"
export PYTHONHASHSEED=0
if [ "$#" -gt 0 ]; then
  exec "$PY" -m pytest "$@"
fi
echo "[poyocap] unit tests"
"$PY" -m pytest tests -q
shopt -s nullglob
notebooks=(notebooks/executed/smoke/*.ipynb)
if [ "${#notebooks[@]}" -eq 0 ]; then
  echo "[poyocap] no executed smoke notebooks under notebooks/executed/smoke/ - run ./run_all.sh --scale smoke" >&2
  exit 1
fi
# The notebooks re-run against a fresh cache and a scratch output tree, so the committed figures are not touched.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
echo "[poyocap] nbval on ${#notebooks[@]} smoke notebooks"
POYOCAP_CACHE="$scratch/cache" POYOCAP_OUTPUT="$scratch/out" \
  "$PY" -m pytest -q -p no:cacheprovider --nbval --nbval-kernel-name poyocap \
  --sanitize-with tests/nbval_sanitize.cfg "${notebooks[@]}"
