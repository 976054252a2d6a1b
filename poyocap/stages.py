"""One function per notebook stage: config in, cached artifacts + tables out.

The notebooks and the command line (``python -m poyocap``) both call these, so there is one code path.
Every table written here names its data source and scale in its header; figures fed by synthetic data
carry the "SYNTHETIC DATA" stamp.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from . import filtering, paths
from .config import Config, DataConfig
from .data.recording import Recording
from .data.validate import line_statistics
from .plotting import save_table
from .repro import device_description, package_versions, seed_everything


def make_config(scale: str = "demo", source: str | None = None, seeds: str | Sequence[int] | None = None,
                partition: str | None = None) -> Config:
    """The scale's preset with the notebook's parameters applied (``seeds`` as ``"0,1,2"`` or a list)."""
    cfg = Config.for_scale(scale)
    over: dict[str, Any] = {}
    if source:
        over["data"] = {"source": source}
    if seeds is not None and seeds != "":
        seq = [int(s) for s in seeds.split(",")] if isinstance(seeds, str) else [int(s) for s in seeds]
        if not seq:
            raise ValueError("seeds must name at least one seed")
        over["eval"] = {"seeds": tuple(seq)}
        over["seed"] = seq[0]
    if partition:
        over["filtering"] = {"partition": partition}
    return cfg.with_overrides(**over) if over else cfg


def source_label(cfg: Config) -> str:
    """How tables name their data: ``synthetic observatory (SYNTHETIC DATA)`` or ``Allen Brain Observatory``."""
    return ("synthetic observatory (SYNTHETIC DATA)" if cfg.data.source == "synthetic"
            else "Allen Brain Observatory (real data)")


def table_header(cfg: Config, extra: str = "") -> list[str]:
    lines = [f"data source: {source_label(cfg)}", f"scale: {cfg.scale}; config digest {cfg.digest()}"]
    if extra:
        lines.append(extra)
    return lines


# -------------------------------------------------------------------------------------------------- 00 setup
def environment_report(cfg: Config) -> pd.DataFrame:
    """Versions, device, scale, cache and output directories as a two-column table."""
    rows = [("python", platform.python_version()), ("device", device_description()),
            ("scale", cfg.scale), ("data source", cfg.data.source), ("seeds", ", ".join(map(str, cfg.eval.seeds))),
            ("cache dir", str(paths.cache_dir())), ("output root", str(paths.output_root()))]
    rows += [(name, version) for name, version in package_versions().items()]
    return pd.DataFrame(rows, columns=["item", "value"])


def config_table(cfg: Config) -> pd.DataFrame:
    """The config tree flattened to (section, field, value)."""
    rows = []
    for section, value in cfg.to_dict().items():
        if isinstance(value, dict):
            for key, v in value.items():
                rows.append((section, key, ", ".join(map(str, v)) if isinstance(v, list) else str(v)))
        else:
            rows.append(("", section, str(value)))
    return pd.DataFrame(rows, columns=["section", "field", "value"])


# --------------------------------------------------------------------------------------------------- 01 data
def load_recordings(cfg: Config, progress: bool = True) -> list[Recording]:
    """Every session of the configured source (synthetic: generated once, then read from the cache)."""
    data: DataConfig = cfg.data
    if data.source == "synthetic":
        from .data.synthetic import SyntheticObservatory

        return SyntheticObservatory(data, seed=0, cache_dir=paths.cache_dir()).load_all(progress=progress)
    from .data.allen import AllenObservatory

    obs = AllenObservatory(paths.cache_dir() / "allen", cre_lines=data.cre_lines,
                           max_sessions_per_line=data.max_sessions_per_line,
                           frame_hw=(data.frame_height, data.frame_width))
    return obs.load_all(progress=progress)


def sessions_table(recordings: Sequence[Recording]) -> pd.DataFrame:
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
        cfg, "decay_fit_s: mean isolated transient fit; decay_allen_s: Allen event-decay constant (FACTS.md)"))
    return DataStage(recordings, sessions, stats)


# ---------------------------------------------------------------------------------------------- 02 filtering
def partition_path(cfg: Config) -> Path:
    """Where the Partition artifact of this scale/source/method lives."""
    name = f"partition_{cfg.data.source}_{cfg.filtering.partition}.json"
    return paths.artifacts_dir(cfg.scale, "filtering") / name


def load_partition(cfg: Config) -> filtering.Partition:
    """The Partition written by notebook 02 for this config."""
    return filtering.Partition.load(partition_path(cfg))


@dataclass
class FilteringStage:
    neurons: pd.DataFrame
    lines: pd.DataFrame
    partition: filtering.Partition
    bootstrap: pd.DataFrame
    sensitivity: pd.DataFrame
    agreement: pd.DataFrame
    comparison: pd.DataFrame


def filtering_stage(cfg: Config, recordings: Sequence[Recording] | None = None,
                    progress: bool = True) -> FilteringStage:
    """Statistics, knee thresholds, partition, bootstrap and S-sensitivity; saves the Partition artifact."""
    seed_everything(cfg.seed)
    fc = cfg.filtering
    if recordings is None:
        recordings = load_recordings(cfg, progress=progress)
    neurons = filtering.neuron_statistics(recordings, kurtosis=fc.kurtosis_convention)
    lines = filtering.line_table(neurons)
    partition = filtering.compute_partition(
        neurons, method=fc.partition, source=cfg.data.source, kurtosis_convention=fc.kurtosis_convention,
        sensitivity=fc.knee_sensitivity, config=cfg.to_dict(),
    )
    boot = filtering.bootstrap_stability(neurons, fc.n_bootstrap, fc.knee_sensitivity, seed=cfg.seed,
                                         progress=progress)
    sens = filtering.sensitivity_sweep(neurons, fc.sensitivity_grid)
    agree = filtering.label_free_agreement(neurons, partition)
    lines = lines.merge(boot[["cre_line", "p_predictable"]], on="cre_line").merge(
        agree[["cre_line", "frac_neurons_predictable"]], on="cre_line")
    lines["predictable"] = lines["cre_line"].isin(partition.predictable_lines)
    lines["paper_predictable"] = lines["cre_line"].isin(filtering.PAPER_PREDICTABLE_LINES)
    comparison = filtering_comparison(partition)
    partition.save(partition_path(cfg))
    out = paths.results_dir(cfg.scale)
    kurt = f"kurtosis convention: {fc.kurtosis_convention} (normal = {3 if fc.kurtosis_convention == 'pearson' else 0})"
    save_table(lines, out / "filtering_lines", table_header(cfg, kurt))
    save_table(comparison, out / "filtering_thresholds", table_header(cfg, kurt))
    save_table(sens, out / "filtering_sensitivity", table_header(cfg, kurt))
    return FilteringStage(neurons, lines, partition, boot, sens, agree, comparison)


def filtering_comparison(partition: filtering.Partition) -> pd.DataFrame:
    """Our thresholds and lines beside the paper's (real Allen data)."""
    ours = [filtering.short_name(l) for l in partition.predictable_lines]
    paper = [filtering.short_name(l) for l in filtering.PAPER_PREDICTABLE_LINES]
    match = set(partition.predictable_lines) == set(filtering.PAPER_PREDICTABLE_LINES)
    return pd.DataFrame([
        {"quantity": "skewness threshold", "ours": round(partition.thresholds["skewness"], 3),
         "paper": filtering.PAPER_THRESHOLDS["skewness"]},
        {"quantity": "kurtosis threshold", "ours": round(partition.thresholds["kurtosis"], 3),
         "paper": filtering.PAPER_THRESHOLDS["kurtosis"]},
        {"quantity": "predictable lines", "ours": ", ".join(sorted(ours)), "paper": ", ".join(sorted(paper))},
        {"quantity": "partition matches the paper", "ours": "yes" if match else "no", "paper": "-"},
        {"quantity": "method", "ours": partition.method, "paper": "knee (kneed) on per-line means"},
        {"quantity": "label-free skewness threshold (per neuron)",
         "ours": round(partition.neuron_thresholds.get("skewness", float("nan")), 3), "paper": "-"},
        {"quantity": "label-free kurtosis threshold (per neuron)",
         "ours": round(partition.neuron_thresholds.get("kurtosis", float("nan")), 3), "paper": "-"},
        {"quantity": "label-free predictable neurons", "ours": len(partition.predictable_units), "paper": "-"},
    ])
