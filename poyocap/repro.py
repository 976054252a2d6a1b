"""Reproducibility: seeding, deterministic torch, and the metadata every artifact carries."""

from __future__ import annotations

import hashlib
import os
import platform
import random
import subprocess
from importlib import metadata
from typing import Any

import numpy as np
import torch

from .paths import repo_root

#: Packages whose versions go into every artifact's metadata.
TRACKED_PACKAGES: tuple[str, ...] = (
    "torch", "numpy", "scipy", "pandas", "matplotlib", "scikit-image", "scikit-learn", "kneed", "h5py",
    "allensdk", "torch-brain", "cebra", "pytorch-msssim", "torchmetrics", "papermill", "jupytext", "nbval",
)


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed python, numpy and torch; optionally force deterministic torch kernels.

    Returns a ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        set_deterministic()
    return torch.Generator().manual_seed(seed)


def set_deterministic() -> None:
    """Deterministic algorithms where torch has them (warn, not fail, where it does not)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed version of each package, or ``"not installed"``."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_sha() -> str:
    """Commit of the checkout (``+dirty`` when it has uncommitted changes), or ``"unknown"``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root(), capture_output=True,
            text=True, timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def default_device() -> torch.device:
    """cuda > cpu; ``$POYOCAP_DEVICE`` overrides."""
    env = os.environ.get("POYOCAP_DEVICE")
    if env:
        return torch.device(env)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_description(device: torch.device | None = None) -> str:
    """Human-readable device name, e.g. ``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100)``."""
    device = device or default_device()
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads, {platform.machine()})"


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """Short sha256 of a model's weights (names, dtypes, shapes, values): the identity of a checkpoint's content,
    independent of the file it was saved in."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:12]


def run_metadata(config: Any = None, seed: int | None = None, device: torch.device | None = None) -> dict[str, Any]:
    """What made an artifact: config, seed, versions, git sha, device, python. No timestamps (byte-stable)."""
    meta: dict[str, Any] = {
        "seed": seed,
        "git_sha": git_sha(),
        "device": device_description(device),
        "python": platform.python_version(),
        "packages": package_versions(),
    }
    if config is not None:
        meta["config"] = config.to_dict() if hasattr(config, "to_dict") else config
    return meta
