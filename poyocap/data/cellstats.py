"""Per-cell statistics of dF/F and direction decodability: one module for real and synthetic recordings.

Definitions (every one computed within contiguous segments - :meth:`Recording.segment_id` - over valid values):

- ``skewness``, ``kurtosis`` (Pearson, normal = 3): ``scipy.stats`` moments of the trace.
- ``noise_sd``: robust SD of the frame-to-frame noise, 1.4826 x MAD of first differences / sqrt(2).
- ``snr``: std of the trace / ``noise_sd`` (about 1 for a trace that is noise only).
- ``ac_1frame``, ``ac_1s``: Pearson autocorrelation at a lag of 1 frame and of 1 s.
- ``event_rate_hz``: onsets where the trace reaches median + 4 ``noise_sd`` from below; the detector re-arms once
  the trace falls below median + 2 ``noise_sd`` (hysteresis), per second of recording.
- ``mean_corr``: mean Pearson correlation of the cell with every other cell of the session.

:func:`direction_decodability`: multinomial logistic regression on each trial's mean dF/F in a window after onset
(blank trials are not in the table), trials in blocks of 8 consecutive trials, 70 % of the blocks for training
and 30 % for testing, averaged over random cell subsets and block splits.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .recording import Recording

STATISTICS = ("skewness", "kurtosis", "noise_sd", "snr", "ac_1frame", "ac_1s", "event_rate_hz", "mean_corr")


def _segments(seg_id: np.ndarray) -> list[slice]:
    edges = np.flatnonzero(np.diff(seg_id)) + 1
    bounds = np.r_[0, edges, len(seg_id)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _lagged_corr(x: np.ndarray, ok: np.ndarray, segs: list[slice], lag: int) -> np.ndarray:
    """Per column Pearson correlation of (x[t], x[t + lag]) pairs within segments, both values valid."""
    a_parts, b_parts, m_parts = [], [], []
    for s in segs:
        xs, oks = x[s], ok[s]
        if len(xs) > lag:
            a_parts.append(xs[:-lag])
            b_parts.append(xs[lag:])
            m_parts.append(oks[:-lag] & oks[lag:])
    a, b, m = np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(m_parts)
    n = m.sum(0)
    ma, mb = (a * m).sum(0) / n, (b * m).sum(0) / n
    da, db = (a - ma) * m, (b - mb) * m
    return (da * db).sum(0) / np.sqrt((da * da).sum(0) * (db * db).sum(0))


def _event_counts(x: np.ndarray, segs: list[slice], hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Onsets per column: reaching ``hi`` while armed; armed at each segment start and after falling below ``lo``."""
    counts = np.zeros(x.shape[1], np.int64)
    for s in segs:
        xs = x[s]
        t = np.arange(len(xs))[:, None]
        above, below = xs >= hi, xs < lo
        last_above = np.maximum.accumulate(np.where(above, t, -1), axis=0)
        last_below = np.maximum.accumulate(np.where(below, t, -1), axis=0)
        # armed_before[t]: no crossing of hi since the last fall below lo (or the segment start: both are -1 then)
        armed_before = np.vstack([np.ones((1, xs.shape[1]), bool), (last_below >= last_above)[:-1]])
        counts += (above & armed_before).sum(0)
    return counts


def cell_statistics(rec: Recording) -> pd.DataFrame:
    """One row per ROI of ``rec`` with the statistics of :data:`STATISTICS` (module docstring)."""
    x = rec.dff.astype(np.float64)
    ok = rec.value_mask(per_roi=True)
    segs = _segments(rec.segment_id)
    fps = rec.sampling_rate_hz
    masked = np.where(ok, x, np.nan)
    diffs = np.concatenate([np.diff(masked[s], axis=0) for s in segs if s.stop - s.start > 1])
    d_med = np.nanmedian(diffs, axis=0)
    noise = 1.4826 * np.nanmedian(np.abs(diffs - d_med), axis=0) / np.sqrt(2)
    med = np.nanmedian(masked, axis=0)
    std = np.nanstd(masked, axis=0)
    corr = np.corrcoef(np.where(ok, x, med).T) if x.shape[1] > 1 else np.ones((1, 1))
    np.fill_diagonal(corr, np.nan)
    duration_s = ok.any(axis=1).sum() / fps
    return pd.DataFrame({
        "unit_id": rec.unit_ids, "cre_line": rec.cre_line, "session_id": rec.session_id, "source": rec.source,
        "skewness": stats.skew(masked, axis=0, nan_policy="omit"),
        "kurtosis": stats.kurtosis(masked, axis=0, fisher=False, nan_policy="omit"),
        "noise_sd": noise, "snr": std / noise,
        "ac_1frame": _lagged_corr(x, ok, segs, 1), "ac_1s": _lagged_corr(x, ok, segs, int(round(fps))),
        "event_rate_hz": _event_counts(np.where(ok, x, med), segs, med + 4 * noise, med + 2 * noise) / duration_s,
        "mean_corr": np.nanmean(corr, axis=1) if x.shape[1] > 1 else np.nan,
    })


def summarise(cells: pd.DataFrame, by: str = "group") -> pd.DataFrame:
    """Median, 10th and 90th percentile of every statistic per ``by`` group (long format)."""
    rows = []
    for group, df in cells.groupby(by, sort=False):
        for stat in STATISTICS:
            v = df[stat].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            rows.append({by: group, "statistic": stat, "n_cells": len(v), "median": np.median(v),
                         "p10": np.percentile(v, 10), "p90": np.percentile(v, 90)})
    return pd.DataFrame(rows)


def trial_responses(rec: Recording, window_s: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Mean dF/F of every cell in ``[onset + a, onset + b)`` per grating trial: ``(n_trials, N)``, directions
    ``(n_trials,)`` in trial order; trials whose window leaves the trial's segment are dropped."""
    fps = rec.sampling_rate_hz
    onset = np.searchsorted(rec.timestamps, rec.grating_trials["start"] - 0.5 / fps)
    a, b = int(round(window_s[0] * fps)), int(round(window_s[1] * fps))
    seg = rec.segment_id
    keep = (onset + b <= rec.n_frames) & (seg[np.minimum(onset + b - 1, rec.n_frames - 1)] == seg[onset])
    x = np.stack([rec.dff[o + a:o + b].mean(axis=0) for o in onset[keep]]) if keep.any() else np.zeros((0, rec.n_units))
    return x, rec.grating_trials["direction_deg"][keep] // 45


def direction_decodability(rec: Recording, n_cells: Sequence[int], window_s: tuple[float, float] = (0.0, 1.0),
                           n_draws: int = 10, block: int = 8, train_fraction: float = 0.7, seed: int = 0,
                           c: float = 1.0) -> pd.DataFrame:
    """Test accuracy of direction decoding vs number of cells (module docstring); chance = 1/8."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = trial_responses(rec, window_s)
    n_blocks = int(np.ceil(len(y) / block))
    if n_blocks < 4:
        raise ValueError(f"session {rec.session_id}: {len(y)} trials are too few for blocks of {block}")
    rng = np.random.default_rng(seed)
    rows = []
    for n in n_cells:
        if n > rec.n_units:
            continue
        accs = []
        for _ in range(n_draws):
            cells = rng.choice(rec.n_units, size=n, replace=False)
            train_blocks = rng.permutation(n_blocks)[:int(round(train_fraction * n_blocks))]
            is_train = np.isin(np.arange(len(y)) // block, train_blocks)
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
            clf.fit(x[is_train][:, cells], y[is_train])
            accs.append(float((clf.predict(x[~is_train][:, cells]) == y[~is_train]).mean()))
        rows.append({"session_id": rec.session_id, "cre_line": rec.cre_line, "source": rec.source, "n_cells": n,
                     "window": f"{window_s[0]:g}-{window_s[1]:g} s", "accuracy": float(np.mean(accs)),
                     "accuracy_sd": float(np.std(accs)), "n_trials": len(y)})
    return pd.DataFrame(rows)
