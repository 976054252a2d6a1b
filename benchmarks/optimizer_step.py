"""AdamW on CPU: the default per-parameter loop vs ``fused=True``, inside a demo fine-tuning step, side by side.

On CPU torch's AdamW defaults to its per-parameter for-loop (``foreach`` is CUDA-only); the demo movie model has
many small parameters (U-Net), so the optimiser is a visible share of a step. Builds the demo's scratch
(downstream) model for each task, times forward + backward + optimiser step with both AdamW variants on the same
batch, interleaved, and prints ms per step and their ratio. Run:

    .venv/bin/python benchmarks/optimizer_step.py [--tasks movie,gratings] [--steps 20]
"""

from __future__ import annotations

import argparse
import copy

import torch

from poyocap.data.splits import make_pools
from poyocap.data.windows import UnitVocab, collate
from poyocap.model.encoder import CalciumEncoder
from poyocap.tasks import get_task

from common import observatory, seconds_per_step


def time_steps(model: torch.nn.Module, batch: dict, fused: bool, steps: int) -> float:
    """Mean seconds of forward + backward + AdamW step over ``steps`` steps (after 3 warm-up steps)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)
    return seconds_per_step(model, batch, opt, steps, warmup=3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="demo")
    p.add_argument("--tasks", default="movie,gratings")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    cfg, recs, partition = observatory(args.scale)
    pools = make_pools(recs, partition.predictable_lines)
    down = [r for r in recs if r.session_id in pools.downstream]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, scale {args.scale}, "
          f"batch {cfg.finetune.optim.batch_size}")
    for name in args.tasks.split(","):
        task = get_task(name, cfg)
        table = task.windows(down)
        vocab = UnitVocab([u for r in down for u in r.unit_ids])
        vocab.session_rows([r.session_id for r in down])
        torch.manual_seed(0)
        model = task.build(CalciumEncoder(cfg.encoder, len(vocab)), n_sessions=len(vocab.sessions))
        ds = task.dataset(down, table, "train", vocab, train=True)
        batch = collate([ds[i] for i in range(cfg.finetune.optim.batch_size)])
        n_params = sum(1 for _ in model.parameters())
        loop = [time_steps(copy.deepcopy(model), batch, False, args.steps) for _ in range(2)]
        fused = [time_steps(copy.deepcopy(model), batch, True, args.steps) for _ in range(2)]
        a, b = min(loop), min(fused)
        print(f"{name:9s} {n_params} parameter tensors: for-loop AdamW {a * 1e3:6.1f} ms/step, fused {b * 1e3:6.1f} "
              f"ms/step, ratio {a / b:.2f}x")


if __name__ == "__main__":
    main()
