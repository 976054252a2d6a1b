"""Data loading vs model step: windows/s of WindowDataset + collate, beside the encoder's training step.

Data loading must never be the bottleneck. Prints windows/s of the loader (pretraining windows of the demo
observatory's pretrain pool) and of one forward+backward+AdamW step of the demo-size pretraining task, and
their ratio (> 1 means the loader is faster than the model). Run:

    .venv/bin/python benchmarks/data_throughput.py [--scale demo]
"""

from __future__ import annotations

import argparse
import time

import torch

from poyocap import stages
from poyocap.data.windows import collate
from poyocap.model.encoder import CalciumEncoder
from poyocap.model.pretrain import TwinMaskedPretrainer

from common import observatory, seconds_per_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="demo")
    p.add_argument("--batches", type=int, default=20)
    args = p.parse_args()
    cfg, recs, partition = observatory(args.scale)
    _, _, vocab, data = stages.pretrain_data(cfg, recs, partition)
    ds = data["train"]
    bs = cfg.pretrain.optim.batch_size
    t0 = time.perf_counter()
    for i in range(args.batches):
        batch = collate([ds[(i * bs + j) % len(ds)] for j in range(bs)])
    load_s = (time.perf_counter() - t0) / args.batches
    task = TwinMaskedPretrainer(CalciumEncoder(cfg.encoder, len(vocab)), cfg.pretrain)
    step_s = seconds_per_step(task, batch, torch.optim.AdamW(task.parameters()), args.batches // 2, warmup=2)
    print(f"scale={args.scale} batch={bs} window={cfg.data.pretrain_window_s}s max_units={cfg.data.max_units} "
          f"threads={torch.get_num_threads()}")
    print(f"loader: {bs / load_s:9.0f} windows/s ({load_s * 1e3:.1f} ms/batch)")
    print(f"model : {bs / step_s:9.0f} windows/s ({step_s * 1e3:.1f} ms/step, pretraining forward+backward+AdamW)")
    print(f"loader / model: {step_s / load_s:.1f}x")


if __name__ == "__main__":
    main()
