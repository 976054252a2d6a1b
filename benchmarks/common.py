"""Set-up and timing shared by the benchmark scripts (run as ``.venv/bin/python benchmarks/<script>.py``)."""

from __future__ import annotations

import time
from typing import Any

import torch

from poyocap import stages
from poyocap.config import Config
from poyocap.data.recording import Recording
from poyocap.filtering import Partition


def observatory(scale: str) -> tuple[Config, list[Recording], Partition]:
    """The config of ``scale``, its recordings (cached) and the computed predictable / unpredictable partition."""
    cfg = stages.make_config(scale)
    recs = stages.load_recordings(cfg, progress=False)
    return cfg, recs, stages.filtering_stage(cfg, recs, progress=False).partition


def seconds_per_step(objective: torch.nn.Module, batch: dict[str, Any], opt: torch.optim.Optimizer, steps: int,
                     warmup: int) -> float:
    """Mean seconds of forward + backward + optimiser step of an objective returning ``(loss, metrics)``, over
    ``steps`` steps after ``warmup`` untimed ones, all on the same ``batch``."""
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss, _ = objective(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps
