"""Independent fine-tuning runs on CPU: one process with 2 threads (before), one process with 1 thread per run, and
one-thread runs in worker processes (``poyocap.parallel``, the default), side by side in one run.

Each "run" is ``--steps`` forward + backward + AdamW steps of the demo's scratch (downstream) model on a fixed batch;
``--runs`` of them per task. Prints wall seconds per layout and the ratio to the first. Run on an idle machine:

    .venv/bin/python benchmarks/parallel_runs.py [--tasks movie,gratings] [--runs 4] [--steps 40]
"""

from __future__ import annotations

import argparse
import time

import torch

from poyocap import parallel
from poyocap.data.splits import make_pools
from poyocap.data.windows import UnitVocab, collate
from poyocap.model.encoder import CalciumEncoder
from poyocap.tasks import get_task

from common import observatory, seconds_per_step


def one_run(scale: str, task_name: str, steps: int, threads: int) -> float:
    """Seconds of ``steps`` training steps of a fresh model with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    cfg, recs, partition = parallel.memo(("observatory", scale), lambda: observatory(scale))
    pools = make_pools(recs, partition.predictable_lines)
    down = [r for r in recs if r.session_id in pools.downstream]
    task = get_task(task_name, cfg)
    vocab = UnitVocab([u for r in down for u in r.unit_ids])
    vocab.session_rows([r.session_id for r in down])
    torch.manual_seed(0)
    model = task.build(CalciumEncoder(cfg.encoder, len(vocab)), n_sessions=len(vocab.sessions))
    ds = task.dataset(down, task.windows(down), "train", vocab, train=True)
    batch = collate([ds[i] for i in range(cfg.finetune.optim.batch_size)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    return seconds_per_step(model, batch, opt, steps, warmup=2) * steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="demo")
    p.add_argument("--tasks", default="movie,gratings")
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args()
    cfg = observatory(args.scale)[0]  # builds the cache once, before any timing
    print(f"torch {torch.__version__}, scale {args.scale}, {args.runs} runs x {args.steps} steps per task")
    for task in args.tasks.split(","):
        times = {}
        for label, threads in (("1 process, 2 threads", 2), ("1 process, 1 thread", 1)):
            start = time.perf_counter()
            for _ in range(args.runs):
                one_run(args.scale, task, args.steps, threads)
            times[label] = time.perf_counter() - start
        workers = parallel.n_workers(cfg, args.runs)
        jobs = [(one_run, (args.scale, task, args.steps, 1))] * args.runs
        start = time.perf_counter()
        parallel.prefill(cfg, jobs, task, progress=False)
        times[f"{workers} workers, 1 thread each (incl. start-up)"] = time.perf_counter() - start
        base = times["1 process, 2 threads"]
        print(task + ": " + "; ".join(f"{k} {v:.1f} s ({base / v:.2f}x)" for k, v in times.items()))


if __name__ == "__main__":
    main()
