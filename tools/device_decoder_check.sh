#!/usr/bin/env bash
# One device call (decoders issue): the CUDA path of the fine-tuned decoders (bf16 autocast, session embedding,
# multi-query readout, batches moved to the GPU in evaluation) and how far the demo decoders get with 10x the
# demo's step budget. Validation scores only. Usage on the device: bash tools/device_decoder_check.sh
# (run on an H100 on 2026-11-26 before the bf16 SSIM fix, in two calls; again in one call with the session-centring /
# response-profile defaults: docs/decoders.md, "GPU")
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1 POYOCAP_CACHE=/tmp/poyocap_cache
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
# generating the demo observatory on the device takes ~2 min of the first call; the movie reference another ~1 min
timeout 200 python3 tools/decoder_sweep.py --device cuda --task gratings --steps 3000 --eval-every 250 --references \
  --variant base 2>&1 | grep -v Warn | tee "$OUT/gratings.log"
timeout 240 python3 tools/decoder_sweep.py --device cuda --task movie --steps 3000 --eval-every 500 --references \
  --variant base 2>&1 | grep -v Warn | tee "$OUT/movie.log"
