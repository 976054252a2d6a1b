"""What every stage shares: the config a notebook asks for, table headers, the recordings, artifact directories.

See ``docs/architecture.md`` for how stages, methods and downstream tasks fit together.
"""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from .. import paths
from ..config import Config, parse_seeds, stable_digest
from ..data.recording import Recording
from ..data import synthetic
from ..data.windows import WindowDataset

log = logging.getLogger("poyocap")
T = TypeVar("T")


def make_config(scale: str = "demo", source: str | None = None, seeds: str | Sequence[int] | None = None,
                partition: str | None = None) -> Config:
    """The scale's preset with the notebook's parameters applied (``seeds`` as ``"0,1,2"`` or a list)."""
    cfg = Config.for_scale(scale)
    over: dict[str, Any] = {}
    if source:
        over["data"] = {"source": source}
    if seeds is not None and seeds != "":
        seq = parse_seeds(seeds)
        over["eval"] = {"seeds": seq}
        over["seed"] = seq[0]
    if partition:
        over["filtering"] = {"partition": partition}
    return cfg.with_overrides(**over) if over else cfg


def setup_notebook(scale: str = "demo", source: str | None = None, seeds: str | Sequence[int] | None = None,
                   partition: str | None = None) -> Config:
    """The preamble of every notebook: display options, the config from its parameters cell, one summary line."""
    import pandas as pd

    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 200)
    cfg = make_config(scale, source, seeds, partition=partition)
    print(f"scale={cfg.scale} source={cfg.data.source} ({source_label(cfg)}) seeds={list(cfg.eval.seeds)} "
          f"partition={cfg.filtering.partition} config digest={cfg.digest()}")
    return cfg


def data_version(cfg: Config) -> dict[str, int]:
    """What the config cannot say about the data: the synthetic generator's version (``{}`` for Allen data, a fixed
    release). Artifact directories and table headers carry it, so a changed generator never reuses old runs."""
    return {"synthetic_version": synthetic.SYNTHETIC_VERSION} if cfg.data.source == "synthetic" else {}


def source_label(cfg: Config) -> str:
    """How tables name their data: ``synthetic observatory v<N> (SYNTHETIC DATA)`` or ``Allen Brain Observatory``."""
    return (f"synthetic observatory v{synthetic.SYNTHETIC_VERSION} (SYNTHETIC DATA)" if cfg.data.source == "synthetic"
            else "Allen Brain Observatory (real data)")


def table_header(cfg: Config, extra: str = "") -> list[str]:
    """The lines every saved table starts with: data source, scale, config digest (+ ``extra``)."""
    lines = [f"data source: {source_label(cfg)}", f"scale: {cfg.scale}; config digest {cfg.digest()}"]
    if extra:
        lines.append(extra)
    return lines


def step_budget(cfg: Config) -> str:
    """The step budget a table header names: ``pretraining P / fine-tuning F steps (movie M)``."""
    ft = cfg.finetune
    return (f"pretraining {cfg.pretrain.optim.steps} / fine-tuning {ft.optim.steps} steps (movie "
            f"{ft.task_optim('movie').steps})")


def load_recordings(cfg: Config, progress: bool = True) -> list[Recording]:
    """Every session of the configured source (synthetic: generated once, then read from the cache)."""
    data = cfg.data
    if data.source == "synthetic":
        from ..data.synthetic import SyntheticObservatory

        return SyntheticObservatory(data, seed=0, cache_dir=paths.cache_dir()).load_all(progress=progress)
    from ..data.allen import AllenObservatory

    obs = AllenObservatory(paths.cache_dir() / "allen", cre_lines=data.cre_lines,
                           max_sessions_per_line=data.max_sessions_per_line,
                           frame_hw=(data.frame_height, data.frame_width))
    return obs.load_all(progress=progress)


def artifact_dir(cfg: Config, stage: str, sections: Sequence[str], version: int, name: str,
                 **extra: Any) -> Path:
    """``artifacts/<scale>/<stage>/<digest><name>``: the digest covers the named config sections (with ``"data"``,
    also :func:`data_version`), the stage's artifact ``version`` and ``extra`` (e.g. the predictable lines), so a
    changed input gets a new directory."""
    d = cfg.to_dict()
    payload = {k: d[k] for k in sections} | {"version": version} | extra
    if "data" in sections:
        payload |= data_version(cfg)
    return paths.artifacts_dir(cfg.scale, stage) / f"{stable_digest(payload)}{name}"


def is_cached(out_dir: Path, files: Sequence[str], force: bool = False) -> bool:
    """A finished run is reused when every file it wrote is there (and ``force`` is off)."""
    return not force and all((out_dir / f).exists() for f in files)


#: what reading a damaged artifact raises (torch.load, pandas, json, numpy)
UNREADABLE = (OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError)


def load_cached(out_dir: Path, files: Sequence[str], force: bool, loader: Callable[[], T]) -> T | None:
    """``loader()`` when the finished run in ``out_dir`` can be reused; None (with one log line saying why, when
    part of a run is there) when it must be built again: ``force``, a file missing, or a file unreadable."""
    if force or not out_dir.exists():
        return None
    missing = [f for f in files if not (out_dir / f).exists()]
    if missing:
        if len(missing) < len(files):
            log.warning("%s: %s missing - rebuilding this run", out_dir, ", ".join(missing))
        return None
    try:
        return loader()
    except UNREADABLE as err:
        log.warning("%s: cached run unreadable (%s: %s) - rebuilding it", out_dir, type(err).__name__, err)
        return None


def _with_windows(dataset: WindowDataset, keep: np.ndarray) -> WindowDataset:
    """A shallow copy of ``dataset`` with only the windows where ``keep (n_windows,)`` is True (``dataset`` itself is
    left whole, so a subset taken for one purpose never shrinks a set used for another)."""
    kept = copy.copy(dataset)
    kept.table = dataset.table.select(keep)
    return kept


def keep_every(dataset: WindowDataset, every: int) -> WindowDataset:
    """Every ``every``-th window (in table order) of ``dataset``, as a copy (:func:`_with_windows`)."""
    if every <= 1:
        return dataset
    return _with_windows(dataset, np.arange(len(dataset.table)) % every == 0)


def keep_evenly(dataset: WindowDataset, n_windows: int) -> WindowDataset:
    """Exactly ``n_windows`` windows spread evenly over ``dataset``'s table order (all of them when it has no more),
    as a copy (:func:`_with_windows`)."""
    n = len(dataset.table)
    if n <= n_windows:
        return dataset
    keep = np.zeros(n, bool)
    keep[np.round(np.linspace(0, n - 1, n_windows)).astype(int)] = True
    return _with_windows(dataset, keep)


def subsample(dataset: WindowDataset, max_windows: int) -> WindowDataset:
    """Keep every k-th window so that at most ``max_windows`` remain (the same windows for every method)."""
    if max_windows > 0 and len(dataset) > max_windows:
        return keep_every(dataset, int(np.ceil(len(dataset) / max_windows)))
    return dataset
