"""Where things live. Notebooks never build paths from their working directory; they ask this module.

- ``repo_root()``: found from the package location (works from any cwd, including papermill's).
- ``cache_dir()``: downloaded / generated data; ``$POYOCAP_CACHE`` overrides ``<repo>/.cache``.
- ``artifacts_dir(scale, stage)``, ``figures_dir(scale)``, ``results_dir(scale)``: outputs per scale.
  ``$POYOCAP_OUTPUT`` moves all three (used by tests so they never touch the committed outputs).
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import SCALES


def repo_root() -> Path:
    """The repository checkout that holds this package."""
    return Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Data cache (synthetic sessions, Allen NWB files); ``$POYOCAP_CACHE`` overrides it."""
    env = os.environ.get("POYOCAP_CACHE")
    path = Path(env).expanduser() if env else repo_root() / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_root() -> Path:
    """Parent of ``artifacts/``, ``figures/`` and ``results/``; ``$POYOCAP_OUTPUT`` overrides the repo root."""
    env = os.environ.get("POYOCAP_OUTPUT")
    return Path(env).expanduser() if env else repo_root()


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")


def artifacts_dir(scale: str, stage: str) -> Path:
    """``artifacts/<scale>/<stage>/`` (checkpoints, partitions, metrics)."""
    _check_scale(scale)
    path = output_root() / "artifacts" / scale / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir(scale: str) -> Path:
    """``figures/<scale>/``."""
    _check_scale(scale)
    path = output_root() / "figures" / scale
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir(scale: str) -> Path:
    """``results/<scale>/`` (tables as CSV + Markdown)."""
    _check_scale(scale)
    path = output_root() / "results" / scale
    path.mkdir(parents=True, exist_ok=True)
    return path
