#!/usr/bin/env bash
# One device call (pretraining issue, item 5): encoder throughput at paper size and demo size, poyocap vs
# torch_brain 0.1.2's CalciumPOYOPlus side by side in one run (benchmarks/encoder_throughput.py, bf16 autocast).
# torch_brain and its pure-Python dependencies travel as wheels in .whl/tb (python 3.12 on the device):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl/tb torch_brain==0.1.2 temporaldata
#   hydra-core omegaconf pydantic pydantic_core torchtyping typeguard annotated-types typing-inspection typing_extensions
#   (versions as in .venv) + pip wheel antlr4-python3-runtime==4.9.3
# Usage on the device: bash tools/device_encoder_speed.sh  (carry .whl)
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/tb/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
PAPER="--dim 1024 --depth 6 --cross-heads 2 --self-heads 8 --latents-per-step 16 --latent-step 0.125 --frames 30 --units 300 --batch 32 --steps 10"
{
  echo "== paper size, cross-attention widths matched to torch_brain (ours 2 x 128)"
  timeout 120 python3 benchmarks/encoder_throughput.py --device cuda $PAPER 2>&1 | grep -v -i warn
  echo "== paper size, ours as wide as the model (2 x 512, the presets' default)"
  timeout 120 python3 benchmarks/encoder_throughput.py --device cuda $PAPER --cross-dim-head 0 2>&1 | grep -v -i warn
  echo "== demo size, matched widths"
  timeout 60 python3 benchmarks/encoder_throughput.py --device cuda --steps 20 2>&1 | grep -v -i warn
  echo "== demo size, presets' default width"
  timeout 60 python3 benchmarks/encoder_throughput.py --device cuda --steps 20 --cross-dim-head 0 2>&1 | grep -v -i warn
  echo "== paper size, matched widths, eager and torch.compile (last: may run out of time)"
  timeout 240 python3 benchmarks/encoder_throughput.py --device cuda $PAPER --compile 2>&1 | grep -v -i warn
} | tee "$OUT/encoder_speed.log"
