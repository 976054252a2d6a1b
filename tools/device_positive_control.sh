#!/usr/bin/env bash
# One device call (pretraining issue): the positive control's pretraining variants x seeds 0-2 side by side on the
# device's 16 CPU cores (one thread per run; CPU float32 as the demo, the GPU is not used). Each run prints its
# probes on the VALIDATION windows (what a choice may use) and on the test windows (the reported result).
# Usage on the device: bash tools/device_positive_control.sh   (no packages to carry: transfer_sweep imports none
# beyond the device image's)
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 POYOCAP_CACHE=/tmp/poyocap_cache PYTHONPATH=$PWD:$PWD/tools
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
OUT=${OUT:-/tmp/out}; LOGS=/tmp/pc_logs; mkdir -p "$OUT" "$LOGS"
python3 -c "import numpy, torch, pandas, sklearn; print('numpy', numpy.__version__, 'torch', torch.__version__,
'pandas', pandas.__version__, 'sklearn', sklearn.__version__, 'cores', __import__('os').cpu_count())"
t0=$(date +%s)
timeout 220 python3 -c "from poyocap.config import Config; from poyocap.stages.common import load_recordings
load_recordings(Config.for_scale('demo'), progress=False)" > "$LOGS/data.log" 2>&1 || { cat "$LOGS/data.log"; exit 1; }
echo "demo observatory generated in $(( $(date +%s) - t0 )) s"
# JOB_LIMIT: on 2026-11-27 (H200 machine) 400 s stopped every run after its test probes, before the per-session
# validation probes that a choice needs (pretraining + evaluation took 253-325 s per run); give more where time allows
VARIANTS=(${VARIANTS:-base pretrain.mask_ratio=0.75 pretrain.mask_ratio=0.75,pretrain.ce_weight=0.0
          pretrain.unit_mask_ratio=0.5 pretrain.mask_ratio=0.75,pretrain.unit_mask_ratio=0.5})
i=0
for v in "${VARIANTS[@]}"; do
  for s in 0 1 2; do
    timeout "${JOB_LIMIT:-400}" python3 tools/transfer_sweep.py --pool downstream --tasks "" --seed "$s" --variant "$v" \
      > "$LOGS/run_${i}_seed${s}.log" 2>&1 &
  done
  i=$((i + 1))
done
wait
echo "all runs ended after $(( $(date +%s) - t0 )) s"
for f in "$LOGS"/*.log; do echo "== $f"; grep -v -i warn "$f" | tail -4; done | tee "$OUT/positive_control.log"
