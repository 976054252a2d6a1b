#!/usr/bin/env bash
# One device call (pretraining issue, positive control): tools/device_pc_sweep.py for seeds 0-2 side by side
# (GPU pretraining and features, CPU probes, 5 threads each), every variant in VARIANTS. Exploration only (GPU
# floats): a variant worth it is confirmed on CPU with tools/transfer_sweep.py.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 PYTHONPATH=$PWD:$PWD/tools OMP_NUM_THREADS=5 MKL_NUM_THREADS=5
export POYOCAP_CACHE=${POYOCAP_CACHE:-$PWD/.cache}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -c "import numpy, torch, sklearn; print('numpy', numpy.__version__, 'torch', torch.__version__, 'sklearn',
sklearn.__version__, 'cuda', torch.cuda.is_available())"
t0=$(date +%s)
python3 -c "from poyocap.config import Config; from poyocap.stages.common import load_recordings
load_recordings(Config.for_scale('demo'), progress=False)" 2>&1 | grep -v -i warn
echo "demo observatory ready after $(( $(date +%s) - t0 )) s"
read -r -a VARIANTS <<< "${VARIANTS:-base}"
args=(); for v in "${VARIANTS[@]}"; do args+=(--variant "$v"); done
for s in 0 1 2; do
  timeout "${JOB_LIMIT:-480}" python3 tools/device_pc_sweep.py --seed "$s" "${args[@]}" --csv "$OUT/probes_seed$s.csv" \
    > "$OUT/seed$s.log" 2>&1 &
done
wait
echo "ended after $(( $(date +%s) - t0 )) s"
for s in 0 1 2; do grep -v -i warn "$OUT/seed$s.log" | grep -v "^ *warnings.warn\|^  " ; done
