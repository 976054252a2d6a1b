"""The movie loss's SSIM term: pytorch_msssim (ten grouped convolutions) vs :func:`poyocap.losses.ssim_frames`
(two matrix products), forward + backward at the demo's frame size, side by side in one run, one thread.

    .venv/bin/python benchmarks/ssim_loss.py [--batch 64] [--height 32 --width 64]
"""
from __future__ import annotations

import argparse
import time

import torch
from pytorch_msssim import ssim

from poyocap.losses import ssim_frames


def seconds(fn, pred: torch.Tensor, target: torch.Tensor, reps: int) -> float:  # noqa: ANN001
    for _ in range(3):
        fn(pred, target).backward()
    t = time.perf_counter()
    for _ in range(reps):
        fn(pred, target).backward()
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--height", type=int, default=32)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(args.batch, args.height, args.width, generator=g, requires_grad=True)
    target = torch.rand(args.batch, args.height, args.width, generator=g)
    library = lambda p, t: 1 - ssim(p[:, None], t[:, None], data_range=1.0, win_size=11, win_sigma=1.5)  # noqa: E731
    ours = lambda p, t: 1 - ssim_frames(p, t).mean()  # noqa: E731
    a, b = seconds(library, pred, target, args.reps), seconds(ours, pred, target, args.reps)
    with torch.no_grad():
        diff = float((library(pred, target) - ours(pred, target)).abs())
    print(f"batch {args.batch} x {args.height}x{args.width}, forward+backward, 1 thread: pytorch_msssim "
          f"{a * 1e3:.2f} ms, matrix products {b * 1e3:.2f} ms, speed-up {a / b:.2f}x; |loss difference| {diff:.1e}")


if __name__ == "__main__":
    main()
