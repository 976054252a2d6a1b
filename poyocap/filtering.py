"""Regularity filtering: the paper's first idea ("select neurons first, then train").

1. Per-neuron skewness and kurtosis of dF/F (``scipy.stats``; NaN frames excluded; flat or short traces are
   reported and excluded, never a crash).
2. Per-line summary (n, mean, median, IQR, rank).
3. Knee detection (``kneed.KneeLocator``, Satopaa et al. 2011) on the per-line means sorted ascending:
   the value at the knee is the threshold; lines at or below *both* thresholds are "predictable".
4. Stability: bootstrap over neurons and mice, and kneed's sensitivity ``S``.
5. Beyond the paper, *label-free* mode: the knee is found on the per-neuron distribution (no Cre-line labels)
   and each neuron is called predictable by its own statistics; the pretrain pool becomes a set of neurons.

**Kurtosis convention.** We use Pearson kurtosis (normal = 3) by default. The paper's numbers point to it: for
a gamma-like dF/F distribution Pearson kurtosis ~ 3 + 1.5 skew^2, which gives 8.2 for the paper's predictable-
line mean skew 1.87 (paper: kurtosis 7.32; excess would predict 5.2) and 21.5 at its skew threshold 3.51 (paper:
22.62; excess: 18.5). ``FilterConfig.kurtosis_convention = "excess"`` switches; every table states which.

The :class:`Partition` saved here (``artifacts/<scale>/filtering/partition.json``) is the only place the
partition is decided; the splits receive it as plain data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .config import PAPER_PREDICTABLE_LINES
from .data.recording import Recording
from .data.validate import neuron_moments

#: The paper's numbers (real Allen data), shown beside ours in every table.
PAPER_THRESHOLDS = {"skewness": 3.51, "kurtosis": 22.62}
PAPER_PREDICTABLE_MEANS = {"skewness": 1.87, "kurtosis": 7.32, "kurtosis_max": 148.51}
STATS = ("skewness", "kurtosis")


class KneeNotFoundError(RuntimeError):
    """kneed found no knee: the curve has no clear elbow (the partition cannot be computed)."""


class EmptyGroupError(RuntimeError):
    """The thresholds put every line (or no line) in the predictable group."""


# ------------------------------------------------------------------------------------------------ statistics
def neuron_statistics(recordings: Sequence[Recording], kurtosis: str = "pearson") -> pd.DataFrame:
    """One row per ROI: unit_id, cre_line, mouse_id, session_id, skewness, kurtosis, ok (False = excluded)."""
    frames = []
    for rec in recordings:
        sk, ku, ok = neuron_moments(rec.dff, rec.value_mask(), kurtosis=kurtosis)
        frames.append(pd.DataFrame({
            "unit_id": rec.unit_ids, "cre_line": rec.cre_line, "mouse_id": rec.mouse_id,
            "session_id": rec.session_id, "skewness": sk, "kurtosis": ku, "ok": ok,
        }))
    if not frames:
        raise ValueError("no recordings given")
    return pd.concat(frames, ignore_index=True)


def line_table(neurons: pd.DataFrame) -> pd.DataFrame:
    """Per-line summary of the per-neuron statistics (excluded ROIs counted, not used), ranked by mean skewness."""
    rows = []
    for line, g in neurons.groupby("cre_line", sort=False):
        good = g[g["ok"]]
        row = {"cre_line": line, "n_cells": int(len(good)), "n_excluded": int((~g["ok"]).sum()),
               "n_mice": int(g["mouse_id"].nunique())}
        for s in STATS:
            v = good[s].to_numpy()
            row[f"{s}_mean"] = float(np.mean(v)) if len(v) else np.nan
            row[f"{s}_median"] = float(np.median(v)) if len(v) else np.nan
            row[f"{s}_iqr"] = float(np.subtract(*np.percentile(v, [75, 25]))) if len(v) else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    table["rank_skewness"] = table["skewness_mean"].rank(method="min").astype(int)
    table["rank_kurtosis"] = table["kurtosis_mean"].rank(method="min").astype(int)
    return table.sort_values("skewness_mean").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- knees
def knee_threshold(values: np.ndarray, sensitivity: float = 1.0) -> float:
    """The largest value still "regular": the end of the flat segment of ``values`` sorted ascending.

    Kneedle (``kneed.KneeLocator``, Satopaa et al. 2011) on the sorted curve. The curve's shape is read from
    the data - *concave* when it lies above its chord (a jump early, then a plateau of heavy-tailed lines),
    *convex* when below (a late, accelerating rise) - because kneed needs it stated. kneed (``online=True``)
    may report several knees; endpoints are discarded (kneed marks index 0 of concave curves) and the most
    prominent one (largest distance from the chord in normalised coordinates) is kept. For a convex curve the
    knee is the elbow, the last point before the rise; for a concave one it is the first point after the rise,
    so the regular segment ends one point earlier. Lines ``<=`` the returned value are predictable.
    """
    from kneed import KneeLocator

    y = np.sort(np.asarray(values, dtype=float))
    y = y[np.isfinite(y)]
    if len(y) < 3:
        raise KneeNotFoundError(f"need at least 3 finite values for knee detection, got {len(y)}")
    if np.ptp(y) <= 0:
        raise KneeNotFoundError("all values are equal: there is no knee")
    x = np.arange(len(y), dtype=float)
    distance = (y - y[0]) / np.ptp(y) - x / x[-1]  # > 0 above the chord
    shape = "concave" if distance.mean() > 0 else "convex"
    locator = KneeLocator(x, y, S=sensitivity, curve=shape, direction="increasing", online=True)
    knees = [int(k) for k in locator.all_knees if 0 < int(k) < len(y) - 1]
    if not knees:
        raise KneeNotFoundError(f"kneed found no interior knee in {len(y)} sorted values (S={sensitivity}, {shape})")
    knee = max(knees, key=lambda k: (abs(distance[k]), -k))
    return float(y[knee] if shape == "convex" else y[knee - 1])


def thresholds_from_lines(lines: pd.DataFrame, sensitivity: float = 1.0) -> dict[str, float]:
    """Skewness and kurtosis thresholds from the per-line means."""
    return {s: knee_threshold(lines[f"{s}_mean"].to_numpy(), sensitivity) for s in STATS}


def classify_lines(lines: pd.DataFrame, thresholds: dict[str, float]) -> list[str]:
    """Lines at or below both thresholds (the predictable group)."""
    mask = (lines["skewness_mean"] <= thresholds["skewness"] + 1e-12) & (
        lines["kurtosis_mean"] <= thresholds["kurtosis"] + 1e-12)
    return sorted(lines.loc[mask, "cre_line"])


# ------------------------------------------------------------------------------------------------ partition
@dataclass(frozen=True)
class Partition:
    """The decision: which lines (and which neurons) are predictable, and how it was made."""

    predictable_lines: tuple[str, ...]
    unpredictable_lines: tuple[str, ...]
    thresholds: dict[str, float]
    method: str  # "computed" (knee on per-line means) | "paper" (the authors' four lines)
    source: str  # "synthetic" | "allen"
    kurtosis_convention: str
    sensitivity: float
    neuron_thresholds: dict[str, float] = field(default_factory=dict)  # label-free knee (per-neuron)
    predictable_units: tuple[str, ...] = ()  # label-free: neurons below both per-neuron thresholds
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.predictable_lines:
            raise EmptyGroupError("no line is predictable: the knee put every line above a threshold")
        if not self.unpredictable_lines:
            raise EmptyGroupError("every line is predictable: nothing is left for fine-tuning")
        overlap = set(self.predictable_lines) & set(self.unpredictable_lines)
        if overlap:
            raise ValueError(f"lines in both groups: {sorted(overlap)}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @staticmethod
    def from_dict(d: dict) -> "Partition":
        d = dict(d)
        for key in ("predictable_lines", "unpredictable_lines", "predictable_units"):
            d[key] = tuple(d.get(key, ()))
        return Partition(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))
        tmp.replace(path)
        return path

    @staticmethod
    def load(path: str | Path) -> "Partition":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no partition yet - run notebook 02 (./run_all.sh --only 02) first")
        return Partition.from_dict(json.loads(path.read_text()))


def compute_partition(
    neurons: pd.DataFrame,
    method: str = "computed",
    source: str = "synthetic",
    kurtosis_convention: str = "pearson",
    sensitivity: float = 1.0,
    config: dict | None = None,
) -> Partition:
    """Decide the partition from per-neuron statistics (``method="computed"``) or take the authors' four
    lines (``method="paper"``). The label-free per-neuron call is computed in both cases."""
    lines = line_table(neurons)
    all_lines = list(lines["cre_line"])
    ok = neurons[neurons["ok"]]
    neuron_thr = {s: knee_threshold(ok[s].to_numpy(), sensitivity) for s in STATS}
    unit_mask = (ok["skewness"] <= neuron_thr["skewness"]) & (ok["kurtosis"] <= neuron_thr["kurtosis"])
    units = tuple(sorted(ok.loc[unit_mask, "unit_id"]))
    if method == "computed":
        thresholds = thresholds_from_lines(lines, sensitivity)
        predictable = classify_lines(lines, thresholds)
    elif method == "paper":
        thresholds = dict(PAPER_THRESHOLDS)
        predictable = sorted(set(PAPER_PREDICTABLE_LINES) & set(all_lines))
    else:
        raise ValueError(f"method must be 'computed' or 'paper', got {method!r}")
    unpredictable = sorted(set(all_lines) - set(predictable))
    return Partition(
        predictable_lines=tuple(predictable), unpredictable_lines=tuple(unpredictable), thresholds=thresholds,
        method=method, source=source, kurtosis_convention=kurtosis_convention, sensitivity=sensitivity,
        neuron_thresholds=neuron_thr, predictable_units=units, config=config or {},
    )


# ------------------------------------------------------------------------------------------------ stability
def bootstrap_stability(
    neurons: pd.DataFrame, n_boot: int, sensitivity: float = 1.0, seed: int = 0, progress: bool = False,
) -> pd.DataFrame:
    """How often each line is called predictable when mice (within line) and then neurons (within the drawn
    mice) are resampled with replacement. Replicates where kneed finds no knee are counted, not hidden."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    ok = neurons[neurons["ok"]]
    groups = {line: {m: g[list(STATS)].to_numpy() for m, g in lg.groupby("mouse_id")}
              for line, lg in ok.groupby("cre_line", sort=False)}
    lines = list(groups)
    counts = dict.fromkeys(lines, 0)
    no_knee = 0
    for _ in tqdm(range(n_boot), desc="bootstrap", disable=not progress, mininterval=1.0):
        means = []
        for line in lines:
            mice = list(groups[line])
            drawn = rng.choice(len(mice), size=len(mice), replace=True)
            vals = np.concatenate([groups[line][mice[i]] for i in drawn])
            vals = vals[rng.integers(0, len(vals), size=len(vals))]
            means.append(vals.mean(axis=0))
        table = pd.DataFrame({"cre_line": lines, "skewness_mean": [m[0] for m in means],
                              "kurtosis_mean": [m[1] for m in means]})
        try:
            thr = thresholds_from_lines(table, sensitivity)
        except KneeNotFoundError:
            no_knee += 1
            continue
        for line in classify_lines(table, thr):
            counts[line] += 1
    return pd.DataFrame({
        "cre_line": lines, "p_predictable": [counts[l] / n_boot for l in lines],
        "n_boot": n_boot, "n_no_knee": no_knee,
    })


def sensitivity_sweep(neurons: pd.DataFrame, grid: Sequence[float]) -> pd.DataFrame:
    """Thresholds and predictable lines for each kneed sensitivity ``S`` in ``grid``."""
    lines = line_table(neurons)
    rows = []
    for s in grid:
        try:
            thr = thresholds_from_lines(lines, s)
            pred = classify_lines(lines, thr)
            rows.append({"S": s, "skewness_threshold": thr["skewness"], "kurtosis_threshold": thr["kurtosis"],
                         "n_predictable": len(pred), "predictable_lines": ", ".join(short_name(l) for l in pred)})
        except KneeNotFoundError:
            rows.append({"S": s, "skewness_threshold": np.nan, "kurtosis_threshold": np.nan, "n_predictable": 0,
                         "predictable_lines": "no knee"})
    return pd.DataFrame(rows)


def label_free_agreement(neurons: pd.DataFrame, partition: Partition) -> pd.DataFrame:
    """Per line: fraction of its neurons the label-free (per-neuron) call finds predictable, beside the line call."""
    units = set(partition.predictable_units)
    ok = neurons[neurons["ok"]]
    rows = []
    for line, g in ok.groupby("cre_line", sort=False):
        frac = float(g["unit_id"].isin(units).mean())
        line_call = line in partition.predictable_lines
        rows.append({"cre_line": line, "line_call": "predictable" if line_call else "unpredictable",
                     "frac_neurons_predictable": frac,
                     "agreement": frac if line_call else 1.0 - frac})
    return pd.DataFrame(rows)


def short_name(line: str) -> str:
    """``'Sst-IRES-Cre'`` -> ``'Sst'``."""
    return line.split("-")[0]
