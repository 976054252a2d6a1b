#!/usr/bin/env bash
# Shared by run_all.sh and run_tests.sh: make sure .venv exists and matches requirements/constraints.
# (Re)installs when .venv is missing or requirements.txt / constraints.txt / pyproject.toml changed (a stamp file).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.poyocap-stamp"
want="$(cat "$REPO/requirements.txt" "$REPO/constraints.txt" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ ! -x "$VENV/bin/python" ] || [ "$want" != "$have" ]; then
  echo "[poyocap] setting up $VENV (first run or requirements changed; a cold install takes ~2 min)"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  start=$(date +%s)
  # (grep drops pip's "Location ... is ignored" noise about absent local indexes; pipefail keeps pip's status)
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REPO/requirements.txt" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$REPO" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name poyocap --display-name "poyocap (.venv)" >/dev/null
  echo "$want" > "$STAMP"
  echo "[poyocap] environment ready in $(( $(date +%s) - start )) s"
fi
