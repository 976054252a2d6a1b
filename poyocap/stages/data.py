"""Notebooks 00-01: the environment, the configuration tree, the observatory's sessions and per-line statistics."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import pandas as pd

from .. import paths
from ..config import Config
from ..data.recording import Recording
from ..data.validate import line_statistics
from ..plotting import save_table
from ..repro import device_description, package_versions, seed_everything
from .common import load_recordings, table_header


def environment_report(cfg: Config) -> pd.DataFrame:
    """Versions, device, scale, cache and output directories as a two-column table."""
    rows = [("python", platform.python_version()), ("device", device_description()),
            ("scale", cfg.scale), ("data source", cfg.data.source), ("seeds", ", ".join(map(str, cfg.eval.seeds))),
            ("cache dir", str(paths.cache_dir())), ("output root", str(paths.output_root()))]
    rows += [(name, version) for name, version in package_versions().items()]
    return pd.DataFrame(rows, columns=["item", "value"])


def config_table(cfg: Config) -> pd.DataFrame:
    """The config tree flattened to (section, field, value); nested sections as ``optim.lr``."""
    def flat(prefix: str, value: object) -> list[tuple[str, str]]:
        if isinstance(value, dict):
            return [row for k, v in value.items() for row in flat(f"{prefix}.{k}" if prefix else k, v)]
        return [(prefix, ", ".join(map(str, value)) if isinstance(value, list) else str(value))]

    rows = []
    for section, value in cfg.to_dict().items():
        rows += [(section, key, v) for key, v in flat("", value)] if isinstance(value, dict) else [("", section,
                                                                                                   str(value))]
    return pd.DataFrame(rows, columns=["section", "field", "value"])


def sessions_table(recordings: list[Recording]) -> pd.DataFrame:
    """Lines x mice x sessions x cells."""
    df = pd.DataFrame([r.summary() for r in recordings])
    return (df.groupby("cre_line", sort=False)
              .agg(mice=("mouse_id", "nunique"), sessions=("session_id", "count"), rois=("n_units", "sum"),
                   rois_per_session=("n_units", "mean"), indicator=("indicator", "first"),
                   cell_class=("cell_class", "first"), depth_um=("depth_um", "median"),
                   minutes_per_session=("duration_s", lambda s: s.mean() / 60.0),
                   grating_trials=("n_grating_trials", "mean"), nan_frames=("n_nan_frames", "sum"))
              .reset_index())


@dataclass
class DataStage:
    recordings: list[Recording]
    sessions: pd.DataFrame
    line_stats: pd.DataFrame


def data_stage(cfg: Config, progress: bool = True) -> DataStage:
    """Load/generate the observatory, write the sessions table and the per-line validation statistics."""
    seed_everything(cfg.seed)
    recordings = load_recordings(cfg, progress=progress)
    sessions = sessions_table(recordings)
    stats = line_statistics(recordings, kurtosis=cfg.filtering.kurtosis_convention)
    out = paths.results_dir(cfg.scale)
    save_table(sessions, out / "data_sessions", table_header(cfg))
    save_table(stats, out / "data_line_statistics", table_header(
        cfg, "decay_fit_s: mean isolated transient fit; decay_allen_s: Allen event-decay constant "
             "(docs/architecture.md, 'Reference numbers')"))
    return DataStage(recordings, sessions, stats)
