"""Notebook 01, second half: the synthetic observatory beside the real Allen sample (``poyocap/data/reference``).

One statistics module (:mod:`poyocap.data.cellstats`) computes every number for both; the real sample's per-cell
statistics and decodability curve are committed files, so this runs without ``shared/``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources

import pandas as pd

from .. import paths
from ..config import Config
from ..data.cellstats import STATISTICS, cell_statistics, direction_decodability, summarise
from ..data.recording import Recording
from ..plotting import save_table
from .common import table_header

REAL_GROUP = "real Cux2 (Allen sample)"
#: the acceptance rule of the calibration: median within x1.25 (pairwise correlation within +-0.04)
RATIO_TOLERANCE, CORR_TOLERANCE = 1.25, 0.04
DECODING_CELLS = (8, 16, 32, 64, 127)


def reference_cells() -> pd.DataFrame:
    """Per-cell statistics of the real sample (committed, derived by ``tools/make_reference.py``)."""
    with resources.as_file(resources.files("poyocap.data") / "reference" / "cux2_sample_cells.csv") as p:
        return pd.read_csv(p)


def reference_decoding() -> pd.DataFrame:
    with resources.as_file(resources.files("poyocap.data") / "reference" / "cux2_sample_decoding.csv") as p:
        return pd.read_csv(p)


@dataclass
class Realism:
    cells: pd.DataFrame  # one row per cell, real and synthetic, with its group
    comparison: pd.DataFrame  # per statistic: real median [p10, p90] beside synthetic Cux2, and the verdict
    by_line: pd.DataFrame  # median of every statistic per group
    decoding: pd.DataFrame  # accuracy vs cell count: real, synthetic ABO-protocol Cux2, synthetic lines (demo)
    by_snr: pd.DataFrame  # medians per std/noise bin, real vs synthetic Cux2 (:func:`by_snr`)


def _within(stat: str, synthetic: float, real: float) -> bool:
    if stat == "mean_corr":
        return abs(synthetic - real) <= CORR_TOLERANCE
    return max(synthetic, real) / min(synthetic, real) <= RATIO_TOLERANCE


def compare_cux2(cells: pd.DataFrame, synthetic_group: str = "synthetic Cux2-CreERT2") -> pd.DataFrame:
    """Median and p10-p90 of each statistic, real vs synthetic Cux2, with the calibration rule's verdict."""
    s = summarise(cells[cells["group"].isin([REAL_GROUP, synthetic_group])]).set_index(["group", "statistic"])
    rows = []
    for stat in STATISTICS:
        r, y = s.loc[(REAL_GROUP, stat)], s.loc[(synthetic_group, stat)]
        overlap = min(r["p90"], y["p90"]) >= max(r["p10"], y["p10"])
        rows.append({"statistic": stat, "real_median": r["median"], "real_p10": r["p10"], "real_p90": r["p90"],
                     "synthetic_median": y["median"], "synthetic_p10": y["p10"], "synthetic_p90": y["p90"],
                     "ratio": y["median"] / r["median"], "within_rule": _within(stat, y["median"], r["median"]),
                     "ranges_overlap": bool(overlap)})
    return pd.DataFrame(rows)


#: std / noise bin edges of :func:`by_snr` (the real sample's cells spread over 1.0-5; ~10-40 cells per bin)
SNR_BINS = (0.0, 1.2, 1.4, 1.7, 2.2, 3.0, float("inf"))


def by_snr(cells: pd.DataFrame, groups: tuple[str, ...] = (REAL_GROUP, "synthetic Cux2-CreERT2"),
           bins: tuple[float, ...] = SNR_BINS) -> pd.DataFrame:
    """Median of every statistic per std/noise bin and group: compares real and synthetic cells *at the same SNR*,
    which the overall medians cannot (they mix an SNR distribution with what each SNR does). One row per (group, bin)
    with ``n_cells`` and the bin's median ``snr_median``; empty bins are left out."""
    df = cells[cells["group"].isin(groups)].assign(snr_bin=lambda d: pd.cut(d["snr"], list(bins)))
    grouped = df.groupby(["group", "snr_bin"], observed=True, sort=True)
    out = grouped[list(STATISTICS)].median().rename(columns={"snr": "snr_median"})
    return out.assign(n_cells=grouped.size()).reset_index().assign(snr_bin=lambda d: d["snr_bin"].astype(str))


def abo_protocol_session(cfg: Config, line: str = "Cux2-CreERT2", n_cells: int = 127) -> Recording:
    """One synthetic session of ``line`` with the real sample's protocol (15 grating repeats, ``n_cells`` ROIs), so
    decodability is compared at the same trial and cell counts."""
    from ..data.synthetic import LINE_PHYSIOLOGY, SyntheticObservatory

    scale = n_cells / LINE_PHYSIOLOGY[line].rois_per_session / 0.8  # the plan draws counts in [0.8, 1.2] x
    data = dataclasses.replace(cfg.data, cre_lines=(line,), mice_per_line=1, grating_repeats=15, movie_repeats=1,
                               cell_count_scale=scale)
    obs = SyntheticObservatory(data, seed=0, cache_dir=None)
    return obs.generate(obs.sessions[0])


def realism_stage(cfg: Config, recordings: list[Recording], window_s: tuple[float, float] = (0.0, 1.0)) -> Realism:
    """Statistics of every synthetic cell beside the real sample's; decodability vs cell count; saved tables."""
    real = reference_cells().assign(group=REAL_GROUP)
    syn = pd.concat([cell_statistics(r) for r in recordings]).assign(
        group=lambda d: "synthetic " + d["cre_line"])
    cells = pd.concat([real, syn], ignore_index=True)
    comparison = compare_cux2(cells)
    by_line = summarise(cells).pivot(index="group", columns="statistic", values="median")[list(STATISTICS)]
    window = f"{window_s[0]:g}-{window_s[1]:g} s"
    dec = [reference_decoding().query("window == @window").assign(group=REAL_GROUP)]
    abo = abo_protocol_session(cfg)
    dec.append(direction_decodability(abo, DECODING_CELLS, window_s).assign(
        group="synthetic Cux2-CreERT2, ABO protocol"))
    largest: dict[str, int] = {}  # the largest session of every excitatory line, at the scale's protocol
    for i, r in enumerate(recordings):
        best = largest.get(r.cre_line)
        if r.cell_class == "excitatory" and (best is None or r.n_units > recordings[best].n_units):
            largest[r.cre_line] = i
    for i in sorted(largest.values()):
        r = recordings[i]
        dec.append(direction_decodability(r, DECODING_CELLS, window_s).assign(group=f"synthetic {r.cre_line}"))
    decoding = pd.concat(dec, ignore_index=True)
    snr_table = by_snr(cells)
    out = paths.results_dir(cfg.scale)
    note = ("real: 127 Cux2 cells of one Allen session (poyocap/data/reference/README.md); synthetic: SYNTHETIC DATA; "
            f"rule: median within x{RATIO_TOLERANCE} (mean_corr +-{CORR_TOLERANCE})")
    save_table(comparison, out / "data_real_vs_synthetic", table_header(cfg, note))
    save_table(by_line.reset_index(), out / "data_statistics_by_line", table_header(cfg, note))
    save_table(decoding, out / "data_decodability", table_header(
        cfg, f"direction decodability, window {window}; n_trials per row (the real sample and the ABO-protocol "
             "session have ~600 trials, demo sessions fewer); " + note))
    save_table(snr_table, out / "data_real_vs_synthetic_by_snr", table_header(cfg, "medians per std/noise bin; " + note))
    return Realism(cells, comparison, by_line, decoding, snr_table)


# ------------------------------------------------------------------------------------------- your own dF/F
#: the SNR-aware label-free call leaves cells below this std / noise out ("too noisy to judge"); beyond the paper
SNR_MIN = 1.5


@dataclass
class OwnData:
    recordings: list[Recording]
    cells: pd.DataFrame  # per cell: statistics, label-free call (plain and SNR-aware)
    thresholds: dict[str, float]  # the per-neuron knee thresholds used for the label-free call
    partition: object | None  # a line-level Partition when the files hold >= 3 Cre lines


def label_free_calls(cells: pd.DataFrame, thresholds: dict[str, float], snr_min: float = SNR_MIN) -> pd.DataFrame:
    """Per cell: ``predictable`` when skewness and kurtosis are both at or below the thresholds (the paper's rule,
    applied per neuron); the SNR-aware call (beyond the paper) says ``too noisy`` below ``snr_min``, because a
    noise-dominated trace has near-Gaussian moments whatever the cell does."""
    regular = (cells["skewness"] <= thresholds["skewness"]) & (cells["kurtosis"] <= thresholds["kurtosis"])
    out = cells.assign(label_free="unpredictable")
    out.loc[regular, "label_free"] = "predictable"
    out["snr_aware"] = out["label_free"].where(out["snr"] >= snr_min, "too noisy")
    return out


def own_data_stage(files: list, thresholds: dict[str, float] | None = None, snr_min: float = SNR_MIN) -> OwnData:
    """Your own recordings (``.npz`` files, keys of :func:`poyocap.data.arrays.load_npz`) through the regularity
    filter: per-cell statistics, the label-free call with ``thresholds`` (default: the knee of these cells' own
    distributions), and the line-level partition when the files hold at least 3 Cre lines."""
    from .. import filtering
    from ..data.arrays import load_npz

    recordings = [load_npz(f) for f in files]
    neurons = filtering.neuron_statistics(recordings)
    cells = pd.concat([cell_statistics(r) for r in recordings], ignore_index=True)
    partition = None
    if neurons["cre_line"].nunique() >= 3:
        partition = filtering.compute_partition(neurons, source="user")
    if thresholds is None:
        ok = neurons[neurons["ok"]]
        thresholds = {s: filtering.knee_threshold(ok[s].to_numpy()) for s in ("skewness", "kurtosis")}
    return OwnData(recordings, label_free_calls(cells, thresholds, snr_min), thresholds, partition)
