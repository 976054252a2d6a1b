#!/usr/bin/env bash
# One device call (pretraining issue): does the paper's pretraining help fine-tuning when both decoders get far more
# steps than the demo's 300 CPU steps? Scratch vs POYO-CAP (predictable pool, the paper's objective) on the demo data,
# validation scores only (tools/transfer_sweep.py). Usage on the device: bash tools/device_transfer_check.sh (carry .whl)
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1 POYOCAP_CACHE=/tmp/poyocap_cache
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# ~2 min of data generation, then scratch (gratings, movie), one pretraining, POYO-CAP (gratings, movie)
timeout ${LIMIT:-520} python3 tools/transfer_sweep.py --device cuda --pool predictable --scratch --tasks gratings,movie \
  --steps 1000 --eval-every 250 --variant optim.steps=1500 2>&1 | grep -v -i warn | tee "$OUT/transfer.log"
