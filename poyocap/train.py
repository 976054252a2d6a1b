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

What ``train()`` optimises is an *objective* (:class:`Objective`): an ``nn.Module`` whose ``forward(batch)``
returns ``(loss, metrics: dict[str, float])``, with ``param_groups(lr)`` and ``after_step()`` (e.g. an EMA
update); :class:`ObjectiveBase` gives both their defaults. The optimiser and step budget come from
:class:`poyocap.config.OptimConfig`, the loop's own settings from :class:`TrainSettings`.

Layout (see ``docs/architecture.md``): :func:`build_optimizer`, :class:`Checkpointer` (save / restore),
:func:`train_step`, :func:`write_outputs`; :func:`train` only strings them together.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pickle
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from .config import OptimConfig
from .data.windows import collate
from .repro import default_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Loop settings (the optimiser and step budget are an :class:`~poyocap.config.OptimConfig`)."""

    snapshot_every: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0  # 0: only at the end
    log_every: int = 1
    frozen_first_group_steps: int = 0  # LR 0 for the first param group (the encoder) for this many steps


@runtime_checkable
class Objective(Protocol):
    """What :func:`train` optimises."""

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]: ...

    def param_groups(self, lr: float) -> list[dict]: ...

    def after_step(self) -> None: ...


class ObjectiveBase(nn.Module):
    """Defaults of the :class:`Objective` protocol: one parameter group, nothing after a step."""

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def after_step(self) -> None:
        return None


@runtime_checkable
class EpochAware(Protocol):
    """Datasets that draw new random choices per epoch (``WindowDataset``: unit subsets)."""

    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class TrainResult:
    history: pd.DataFrame  # one row per logged step (+ eval rows)
    objective: nn.Module  # the trained objective (best-by-eval if select_key was given)
    out_dir: Path | None
    steps_done: int
    seconds: float
    resumed_from: int


@dataclass
class LoopState:
    """Where the loop is: everything a checkpoint needs besides model, optimiser and RNG states."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = -float("inf")
    best_state: dict[str, torch.Tensor] | None = None
    done: bool = False  # the final evaluation has run (a resumed finished run must not repeat it)


def lr_lambda(optim: OptimConfig) -> Callable[[int], float]:
    """Warm-up then cosine to 10 % of the peak learning rate."""
    def f(step: int) -> float:
        if optim.warmup_steps and step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        span = max(1, optim.steps - optim.warmup_steps)
        progress = min(1.0, (step - optim.warmup_steps) / span)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def build_optimizer(objective: Objective, optim: OptimConfig, frozen_first_group_steps: int = 0
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``objective.param_groups`` and its warm-up + cosine schedule; the first group (the encoder)
    optionally held at LR 0 for ``frozen_first_group_steps`` (frozen-encoder warm-up)."""
    # fused=True: one kernel over all parameters instead of torch's per-parameter loop (CPU's default; foreach is
    # CUDA-only). benchmarks/optimizer_step.py: 1.17x per demo movie step (many small U-Net tensors), 0.98x gratings
    opt = torch.optim.AdamW(objective.param_groups(optim.lr), lr=optim.lr, weight_decay=optim.weight_decay,
                            fused=True)
    base = lr_lambda(optim)
    lambdas: list[Callable[[int], float]] = [base] * len(opt.param_groups)
    if frozen_first_group_steps and len(lambdas) > 1:
        lambdas[0] = lambda s: 0.0 if s < frozen_first_group_steps else base(s)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambdas)


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


def _batch_plan(dataset: Dataset, batch_size: int, seed: int, state: LoopState, rank: int, world: int
                ) -> Iterator[list[int]]:
    """Index lists from ``state``'s (epoch, batch) on; the caller advances ``state.batch_in_epoch`` per step."""
    while True:
        if isinstance(dataset, EpochAware):
            dataset.set_epoch(state.epoch)
        plan = epoch_batches(len(dataset), batch_size, seed, state.epoch, rank, world)
        if not plan:
            raise ValueError("the training set is empty")
        while state.batch_in_epoch < len(plan):
            yield plan[state.batch_in_epoch]
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0


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


def load_state_exactly(module: nn.Module, state: dict[str, Any]) -> None:
    """``module.load_state_dict(state)`` only if the keys match exactly (else KeyError, module untouched)."""
    if set(state) != set(module.state_dict()):
        raise KeyError("the saved weights belong to another model")
    module.load_state_dict(state)


class Checkpointer:
    """Saves / restores everything an exact resume needs to ``<out_dir>/checkpoint.pt`` (rank 0 writes)."""

    def __init__(self, out_dir: Path | None, enabled: bool = True, **extra: Any) -> None:
        self.path = out_dir / "checkpoint.pt" if out_dir is not None else None
        self.enabled = enabled and self.path is not None
        self.extra = extra  # settings, seed, config: stored for the record

    def save(self, objective: nn.Module, opt: torch.optim.Optimizer, sched: Any, state: LoopState) -> None:
        if not self.enabled:
            return
        save_atomic({
            "objective": objective.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch, "rng": _rng_state(),
            "history": state.history, "best_score": state.best_score, "best_state": state.best_state,
            "done": state.done, **self.extra,
        }, self.path)

    def restore(self, objective: nn.Module, opt: torch.optim.Optimizer, sched: Any, device: torch.device
                ) -> LoopState | None:
        """The saved loop state (model, optimiser, scheduler and RNGs restored in place), or None if none."""
        if self.path is None or not self.path.exists():
            return None
        try:
            ckpt = torch.load(self.path, map_location=device, weights_only=False)
            load_state_exactly(objective, ckpt["objective"])
        except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
            log.warning("checkpoint %s is unreadable (%s: %s): training starts again from step 0", self.path,
                        type(err).__name__, err)
            return None
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        return LoopState(ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["history"],
                         ckpt.get("best_score", -float("inf")), ckpt.get("best_state"), ckpt.get("done", False))


def train_step(model: nn.Module, objective: Objective, batch: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
               sched: Any, grad_clip: float, amp: Any) -> tuple[torch.Tensor, dict[str, float], float | None]:
    """One optimiser step; ``model`` is the objective or its DDP wrapper. Returns (loss, metrics, grad norm)."""
    with amp:
        loss, metrics = model(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(objective.parameters(), grad_clip) if grad_clip else None
    opt.step()
    sched.step()
    objective.after_step()
    return loss, metrics, None if grad_norm is None else float(grad_norm)


def _evaluate(objective: nn.Module, eval_fn: Callable | None, state: LoopState, select_key: str | None) -> None:
    """Log ``eval_fn``'s scores; keep the state with the highest ``select_key``."""
    if eval_fn is None:
        return
    objective.eval()
    with torch.no_grad():
        scores = eval_fn(objective, state.step)
    objective.train()
    state.history.append({"step": state.step, "kind": "eval", **scores})
    if select_key is not None and scores[select_key] > state.best_score:
        state.best_score = scores[select_key]
        state.best_state = copy.deepcopy(objective.state_dict())


def write_outputs(out: Path, history: pd.DataFrame, summary: dict[str, Any]) -> None:
    """``metrics.csv`` (the history, full precision: read back by :func:`read_history` it is equal to the
    in-memory history, so cached and fresh runs draw the same figures) and ``summary.json`` of a run."""
    history.to_csv(out / "metrics.csv", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


def train(objective: Objective, dataset: Dataset, optim: OptimConfig, settings: TrainSettings = TrainSettings(), *,
          seed: int, out_dir: str | Path | None = None, device: torch.device | str | None = None,
          resume: bool = False, eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
          select_key: str | None = None, config: dict | None = None, progress: bool = True, desc: str = "train",
          stop_after: int | None = None) -> TrainResult:
    """Train ``objective`` on ``dataset`` for ``optim.steps`` optimiser steps.

    Args:
        eval_fn: called every ``settings.eval_every`` steps and at the end with (objective, step); floats logged.
        select_key: keep the state with the *highest* ``eval_fn()[select_key]`` (best-val selection).
        stop_after: stop (with a checkpoint) after this many steps - used to test interruption + resume.
    """
    from tqdm import tqdm

    device = torch.device(device) if device is not None else default_device()
    rank, world = _dist()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    objective.to(device)
    model: nn.Module = objective
    if world > 1:  # find_unused_parameters: e.g. the CE head gets no gradient in a batch without grating windows
        model = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda"
                                                    else None, find_unused_parameters=True)
    opt, sched = build_optimizer(objective, optim, settings.frozen_first_group_steps)
    record = {"settings": {**asdict(optim), **asdict(settings)}, "seed": seed, "config": config}
    ckpt = Checkpointer(out, enabled=rank == 0, **record)
    state = (ckpt.restore(objective, opt, sched, device) if resume else None) or LoopState()
    resumed_from = state.step
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                   enabled=False)
    objective.train()
    if state.step == 0 and settings.eval_every:  # logged for the curves, never selected: it is the untrained model
        _evaluate(objective, eval_fn, state, None)
    t_start, samples = time.perf_counter(), 0
    last = min(optim.steps, stop_after if stop_after is not None else optim.steps)
    bar = tqdm(total=optim.steps, initial=state.step, desc=desc, disable=not progress or rank != 0, mininterval=2.0)
    plan = _batch_plan(dataset, optim.batch_size, seed, state, rank, world)
    while state.step < last:
        idx = next(plan)
        loss, metrics, grad_norm = train_step(model, objective, _to(collate([dataset[i] for i in idx]), device),
                                              opt, sched, optim.grad_clip, amp)
        state.batch_in_epoch += 1
        state.step += 1
        samples += len(idx) * world
        if state.step % settings.log_every == 0 or state.step == optim.steps:
            row = {"step": state.step, "kind": "train", "loss": float(loss.detach()), "lr": sched.get_last_lr()[0],
                   "epoch": state.epoch, **{k: float(v) for k, v in metrics.items()}}
            if grad_norm is not None:
                row["grad_norm"] = grad_norm
            state.history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}",
                            samples_s=f"{samples / max(time.perf_counter() - t_start, 1e-9):.0f}")
        bar.update(1)
        if settings.snapshot_every and state.step % settings.snapshot_every == 0 and out is not None and rank == 0:
            (out / "snapshots").mkdir(exist_ok=True)
            save_atomic({k: v.detach().cpu() for k, v in objective.state_dict().items()},
                        out / "snapshots" / f"step_{state.step:06d}.pt")
        if settings.eval_every and state.step % settings.eval_every == 0 and state.step < optim.steps:
            _evaluate(objective, eval_fn, state, select_key)
        if settings.checkpoint_every and state.step % settings.checkpoint_every == 0:
            ckpt.save(objective, opt, sched, state)
    bar.close()
    finished = state.step >= optim.steps
    if finished and not state.done:
        _evaluate(objective, eval_fn, state, select_key)
        state.done = True
    ckpt.save(objective, opt, sched, state)
    seconds = time.perf_counter() - t_start
    hist = pd.DataFrame(state.history)
    if out is not None and rank == 0:
        write_outputs(out, hist, {"steps": state.step, "seed": seed, "seconds": round(seconds, 2),
                                  "settings": record["settings"],
                                  "samples_per_s": round(samples / max(seconds, 1e-9), 1),
                                  "best_score": state.best_score if state.best_state is not None else None,
                                  "config": config})
    if state.best_state is not None and finished:
        objective.load_state_dict(state.best_state)
    return TrainResult(hist, objective, out, state.step, seconds, resumed_from)


def read_history(path: Path) -> pd.DataFrame:
    """A ``metrics.csv`` written by :func:`write_outputs`, every float exactly as it was logged."""
    return pd.read_csv(path, float_precision="round_trip")


def eval_batches(dataset: Dataset, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """The dataset in order, collated (evaluation)."""
    for start in range(0, len(dataset), batch_size):
        yield collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])


__all__: Sequence[str] = ("TrainSettings", "TrainResult", "Objective", "ObjectiveBase", "Checkpointer", "train",
                          "train_step", "build_optimizer", "write_outputs", "read_history", "load_state_exactly", "epoch_batches", "init_distributed",
                          "eval_batches", "save_atomic")
