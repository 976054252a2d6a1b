"""Notebook 02: regularity statistics, knee thresholds, the Partition artifact, bootstrap and sensitivity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from .. import filtering, paths
from ..config import Config
from ..data.recording import Recording
from ..plotting import save_table
from ..repro import seed_everything
from .common import data_version, load_recordings, table_header


def partition_path(cfg: Config) -> Path:
    """Where the Partition artifact of this scale/source/method lives."""
    name = f"partition_{cfg.data.source}_{cfg.filtering.partition}.json"
    return paths.artifacts_dir(cfg.scale, "filtering") / name


def partition_provenance(cfg: Config) -> dict:
    """What a saved Partition records of its input: the config and the data's version (``data_version``)."""
    return cfg.to_dict() | {"data_version": data_version(cfg)}


def load_partition(cfg: Config) -> filtering.Partition:
    """The Partition written by notebook 02 for this config; a clear error when it was computed on other data (another
    data config or synthetic generator version) - a stale partition would silently pick the wrong pools."""
    path = partition_path(cfg)
    partition = filtering.Partition.load(path)
    saved, now = partition.config, partition_provenance(cfg)
    for key in ("data", "data_version"):
        if saved.get(key) != now[key]:
            raise ValueError(f"{path}: computed on other data ({key} differs from this config's) - rerun notebook 02 "
                             f"(./run_all.sh --scale {cfg.scale} --only 02)")
    return partition


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
        sensitivity=fc.knee_sensitivity, config=partition_provenance(cfg),
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
