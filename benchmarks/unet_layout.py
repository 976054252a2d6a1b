"""The movie decoder's U-Net in its three memory layouts - ``mixed`` (the default: convolutions channels-last,
GroupNorm / GELU contiguous), all ``channels_last``, all ``contiguous`` - : one demo movie training step (encoder +
readout + U-Net + loss, fused AdamW, one thread), side by side in one run.

    .venv/bin/python benchmarks/unet_layout.py [--batch 64] [--steps 8]
"""
from __future__ import annotations

import argparse
import time

import torch

from poyocap.config import Config
from poyocap.data.windows import UnitVocab, collate
from poyocap.model.encoder import CalciumEncoder
from poyocap.stages.common import load_recordings
from poyocap.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=0, help="0: the demo movie batch")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--sessions", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = Config.for_scale("demo")
    batch_size = args.batch or cfg.finetune.task_optim("movie").batch_size
    recs = load_recordings(cfg, progress=False)[: args.sessions]
    task = get_task("movie", cfg)
    table = task.windows(recs)
    vocab = UnitVocab([u for r in recs for u in r.unit_ids])
    vocab.session_rows([r.session_id for r in recs])
    ds = task.dataset(recs, table, "train", vocab, train=True)
    batches = [collate([ds[i] for i in range(j * batch_size, (j + 1) * batch_size)]) for j in range(args.steps + 2)]
    times: dict[str, list[float]] = {}
    layouts = ("contiguous", "channels_last", "mixed")
    for layout in layouts * 2:  # twice, interleaved
        torch.manual_seed(0)
        model = task.build(CalciumEncoder(cfg.encoder, len(vocab)), n_sessions=len(vocab.sessions))
        model.unet.layout = layout
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        for i, b in enumerate(batches):
            if i == 2:
                t = time.perf_counter()
            loss, _ = model(b)
            loss.backward()
            opt.step()
            opt.zero_grad()
        times.setdefault(layout, []).append((time.perf_counter() - t) / args.steps)
    best = {k: min(v) for k, v in times.items()}
    print(f"demo movie training step, batch {batch_size}, 1 thread (best of 2): "
          + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in best.items())
          + f"; mixed vs channels-last {best['channels_last'] / best['mixed']:.2f}x, "
          f"vs contiguous {best['contiguous'] / best['mixed']:.2f}x")

if __name__ == "__main__":
    main()
