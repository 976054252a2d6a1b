"""One training loop for every stage (pretraining, fine-tuning, baselines).

- AdamW, linear warm-up then cosine decay (to 10 % of the peak), gradient clipping;
- bf16 autocast on CUDA; device chosen automatically (cuda > cpu), overridable;
- ``torchrun`` DDP: every rank draws its share of each epoch's permutation (as ``DistributedSampler``),
  rank 0 alone logs and writes checkpoints;
- deterministic data order: epoch ``e`` uses the permutation of ``Generator(seed, e)``, so the position in the
  data is just (epoch, batch) - checkpoints store it with model, optimizer, scheduler and RNG states, written
  atomically, and ``resume=True`` continues an interrupted run exactly (same numbers as uninterrupted, tested);
- a progress bar with loss and throughput; metrics to ``metrics.csv`` / ``summary.json``;
- optional weight snapshots every k steps (the loss-landscape analysis projects the trajectory on its PCs)
  and optional evaluation with best-model selection.

A *task* is an ``nn.Module`` whose ``forward(batch)`` returns ``(loss, metrics: dict[str, float])``; it may
define ``after_step()`` (e.g. an EMA update) and ``param_groups(lr)``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from .data.windows import collate
from .repro import default_device


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (filled from PretrainConfig / FinetuneConfig)."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.05
    warmup_steps: int = 0
    grad_clip: float = 1.0
    snapshot_every: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0  # 0: only at the end
    log_every: int = 1
    frozen_first_group_steps: int = 0  # LR 0 for the first param group (the encoder) for this many steps


@dataclass
class TrainResult:
    history: pd.DataFrame  # one row per logged step (+ eval rows)
    task: nn.Module  # the trained task (best-by-eval if select_key was given)
    out_dir: Path | None
    steps_done: int
    seconds: float
    resumed_from: int


def lr_lambda(settings: TrainSettings) -> Callable[[int], float]:
    """Warm-up then cosine to 10 % of the peak learning rate."""
    def f(step: int) -> float:
        if settings.warmup_steps and step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        span = max(1, settings.steps - settings.warmup_steps)
        progress = min(1.0, (step - settings.warmup_steps) / span)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Initialise DDP when launched by ``torchrun`` (WORLD_SIZE > 1); returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return _dist()


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """The batches of one epoch: a seeded permutation, split across ranks, then into full batches."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)[rank::world].tolist()
    n_full = len(perm) // batch_size
    if n_full == 0:  # tiny data sets: one (short) batch per epoch
        return [perm] if perm else []
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(n_full)]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp file in the same directory, then rename (never a half-written checkpoint)."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    task: nn.Module,
    dataset: Dataset,
    settings: TrainSettings,
    seed: int,
    out_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    resume: bool = False,
    eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
    select_key: str | None = None,
    config: dict | None = None,
    progress: bool = True,
    desc: str = "train",
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``task`` on ``dataset`` for ``settings.steps`` optimiser steps.

    Args:
        eval_fn: called every ``eval_every`` steps and at the end with (task, step); its floats are logged.
        select_key: keep the task state with the *highest* ``eval_fn()[select_key]`` (best-val selection).
        stop_after: stop (with a checkpoint) after this many steps - used to test interruption + resume.
    """
    from tqdm import tqdm

    device = torch.device(device) if device is not None else default_device()
    rank, world = _dist()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    task.to(device)
    model: nn.Module = task
    if world > 1:
        # find_unused_parameters: e.g. the CE head gets no gradient in a batch without grating windows
        model = nn.parallel.DistributedDataParallel(task, device_ids=[device.index] if device.type == "cuda" else None,
                                                    find_unused_parameters=True)
    groups = task.param_groups(settings.lr) if hasattr(task, "param_groups") else [
        {"params": [p for p in task.parameters() if p.requires_grad]}]
    opt = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    base = lr_lambda(settings)
    lambdas: list[Callable[[int], float]] = [base] * len(opt.param_groups)
    if settings.frozen_first_group_steps and len(lambdas) > 1:  # frozen-encoder warm-up
        k = settings.frozen_first_group_steps
        lambdas[0] = lambda s: 0.0 if s < k else base(s)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
    step, epoch, batch_in_epoch = 0, 0, 0
    history: list[dict[str, Any]] = []
    best_score, best_state = -float("inf"), None
    ckpt_path = out / "checkpoint.pt" if out is not None else None
    resumed_from = 0
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        task.load_state_dict(ckpt["task"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        history = ckpt["history"]
        best_score = ckpt.get("best_score", best_score)
        best_state = ckpt.get("best_state")
        _set_rng_state(ckpt["rng"])
        resumed_from = step

    def checkpoint() -> None:
        if ckpt_path is None or rank != 0:
            return
        save_atomic({
            "task": task.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "rng": _rng_state(),
            "history": history, "settings": asdict(settings), "seed": seed, "config": config,
            "best_score": best_score, "best_state": best_state,
        }, ckpt_path)

    def run_eval() -> None:
        nonlocal best_score, best_state
        if eval_fn is None:
            return
        task.eval()
        with torch.no_grad():
            scores = eval_fn(task, step)
        task.train()
        history.append({"step": step, "kind": "eval", **scores})
        if select_key is not None and scores[select_key] > best_score:
            best_score = scores[select_key]
            best_state = copy.deepcopy(task.state_dict())

    def batches() -> Iterator[list[int]]:
        nonlocal epoch, batch_in_epoch
        while True:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            plan = epoch_batches(len(dataset), settings.batch_size, seed, epoch, rank, world)
            if not plan:
                raise ValueError("the training set is empty")
            while batch_in_epoch < len(plan):
                yield plan[batch_in_epoch]  # the loop advances batch_in_epoch after the step
            epoch, batch_in_epoch = epoch + 1, 0

    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                   enabled=False)
    task.train()
    if step == 0 and eval_fn is not None and settings.eval_every:
        run_eval()
    t_start = time.perf_counter()
    samples = 0
    last = stop_after if stop_after is not None else settings.steps
    bar = tqdm(total=settings.steps, initial=step, desc=desc, disable=not progress or rank != 0, mininterval=2.0)
    it = batches()
    while step < min(settings.steps, last):
        idx = next(it)
        batch = _to(collate([dataset[i] for i in idx]), device)
        with amp:
            loss, metrics = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(task.parameters(), settings.grad_clip) if settings.grad_clip else None
        opt.step()
        sched.step()
        if hasattr(task, "after_step"):
            task.after_step()
        batch_in_epoch += 1
        step += 1
        samples += len(idx) * world
        if step % settings.log_every == 0 or step == settings.steps:
            row = {"step": step, "kind": "train", "loss": float(loss.detach()), "lr": sched.get_last_lr()[0],
                   "epoch": epoch, **{k: float(v) for k, v in metrics.items()}}
            if grad_norm is not None:
                row["grad_norm"] = float(grad_norm)
            history.append(row)
            rate = samples / max(time.perf_counter() - t_start, 1e-9)
            bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{rate:.0f}")
        bar.update(1)
        if settings.snapshot_every and step % settings.snapshot_every == 0 and out is not None and rank == 0:
            (out / "snapshots").mkdir(exist_ok=True)
            save_atomic({k: v.detach().cpu() for k, v in task.state_dict().items()},
                        out / "snapshots" / f"step_{step:06d}.pt")
        if settings.eval_every and step % settings.eval_every == 0 and step < settings.steps:
            run_eval()
        if settings.checkpoint_every and step % settings.checkpoint_every == 0:
            checkpoint()
    bar.close()
    if step >= settings.steps:
        run_eval()
    checkpoint()
    seconds = time.perf_counter() - t_start
    hist = pd.DataFrame(history)
    if out is not None and rank == 0:
        hist.to_csv(out / "metrics.csv", index=False, float_format="%.6g")
        (out / "summary.json").write_text(json.dumps({
            "steps": step, "seed": seed, "seconds": round(seconds, 2), "settings": asdict(settings),
            "samples_per_s": round(samples / max(seconds, 1e-9), 1), "best_score": best_score
            if best_state is not None else None, "config": config,
        }, indent=1, default=str))
    if best_state is not None and step >= settings.steps:
        task.load_state_dict(best_state)
    return TrainResult(hist, task, out, step, seconds, resumed_from)


def eval_batches(dataset: Dataset, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """The dataset in order, collated (evaluation)."""
    for start in range(0, len(dataset), batch_size):
        yield collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])


def settings_from(cfg: Any, snapshot_every: int = 0, eval_every: int = 0) -> TrainSettings:
    """TrainSettings from a PretrainConfig or FinetuneConfig."""
    return TrainSettings(
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip, snapshot_every=snapshot_every,
        eval_every=eval_every,
    )


__all__: Sequence[str] = ("TrainSettings", "TrainResult", "train", "epoch_batches", "init_distributed",
                          "eval_batches", "settings_from", "save_atomic")
