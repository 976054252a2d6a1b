"""Per-neuron and per-line statistics of any observatory (synthetic or Allen): the data's report card.

Used by notebook 01 to show that the synthetic observatory lands in the real ranges, and (for
:func:`neuron_moments`) by the filtering step. Works on any list of :class:`Recording`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, signal, stats

from .recording import GRATING_DIRECTIONS, Recording

#: Allen event-detection decay constants (s), per line (docs/architecture.md; midpoints where a range is given).
ALLEN_DECAY_S: dict[str, float] = {
    "Slc17a7-IRES2-Cre": 0.347, "Emx1-IRES-Cre": 0.317, "Cux2-CreERT2": 0.346, "Rorb-IRES2-Cre": 0.405,
    "Rbp4-Cre_KL100": 0.450, "Scnn1a-Tg3-Cre": 0.406, "Nr5a1-Cre": 0.420, "Sst-IRES-Cre": 0.464,
    "Vip-IRES-Cre": 0.520, "Ntsr1-Cre_GN220": 0.378, "Tlx3-Cre_PL56": 0.376, "Fezf2-CreER": 0.433,
    "Pvalb-IRES-Cre": 0.715,
}


def neuron_moments(dff: np.ndarray, valid: np.ndarray | None = None, kurtosis: str = "pearson",
                   min_frames: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skewness and kurtosis of each column of ``dff (T, N)`` over valid frames (``valid`` (T,) or per value (T, N),
    as :meth:`Recording.value_mask` gives it).

    Returns ``(skew (N,), kurt (N,), ok (N,) bool)``. ``kurtosis="pearson"`` gives a normal distribution 3,
    ``"excess"`` gives 0. Columns that are flat (zero variance) or have fewer than ``min_frames`` valid
    frames get NaN and ``ok = False`` (reported by the caller, never a crash).
    """
    if kurtosis not in ("pearson", "excess"):
        raise ValueError("kurtosis must be 'pearson' or 'excess'")
    x = np.asarray(dff, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"dff must be (T, N), got shape {x.shape}")
    if valid is not None:
        valid = np.asarray(valid, bool)
        x = x[valid] if valid.ndim == 1 else np.where(valid, x, np.nan)[valid.any(axis=1)]
    finite = np.isfinite(x)
    n = finite.sum(axis=0)
    x = np.where(finite, x, np.nan)
    sd = np.nanstd(x, axis=0) if x.shape[0] else np.zeros(x.shape[1])
    ok = (n >= min_frames) & (sd > 1e-12)
    skew = np.full(x.shape[1], np.nan)
    kurt = np.full(x.shape[1], np.nan)
    if ok.any():
        xs = x[:, ok]
        skew[ok] = stats.skew(xs, axis=0, nan_policy="omit")
        kurt[ok] = stats.kurtosis(xs, axis=0, fisher=(kurtosis == "excess"), nan_policy="omit")
    return np.asarray(skew, float), np.asarray(kurt, float), ok


def noise_sd(dff: np.ndarray) -> np.ndarray:
    """Robust noise SD per column: MAD of first differences / sqrt(2) (insensitive to slow transients)."""
    d = np.diff(dff, axis=0)
    return 1.4826 * np.median(np.abs(d - np.median(d, axis=0)), axis=0) / np.sqrt(2)


def fit_decay(recordings: Sequence[Recording], max_cells: int = 300, max_peak_dff: float = 1.0
              ) -> tuple[float, int, np.ndarray]:
    """Decay constant (s) of the average isolated, unsaturated transient of these recordings (one line).

    Events: peaks > 6 noise SD (prominence > 4 SD) below ``max_peak_dff`` (saturated events decay slower in
    normalised units); isolated means no other peak > 3 SD within 1 s before or 2 s after. Each segment is
    normalised by its peak; the mean is fitted with ``a * exp(-t / tau) + c`` from 2 frames after the peak.
    Returns ``(tau_s, n_events, mean_transient)``; tau is NaN if fewer than 5 events are found.
    """
    segments = []
    fps = recordings[0].sampling_rate_hz if recordings else 30.0
    pre, post = int(1.0 * fps), int(2.0 * fps)
    count = 0
    for rec in recordings:
        nz = noise_sd(rec.dff)
        for j in range(rec.n_units):
            if count >= max_cells:
                break
            count += 1
            tr = rec.dff[:, j]
            small, _ = signal.find_peaks(tr, height=3 * nz[j], prominence=3 * nz[j])
            big, _ = signal.find_peaks(tr, height=6 * nz[j], prominence=4 * nz[j], distance=int(0.2 * fps))
            for p in big:
                if p < pre or p + post >= len(tr) or tr[p] > max_peak_dff:
                    continue
                near = small[(small > p - pre) & (small < p + post)]
                if (near != p).any():
                    continue
                seg = tr[p:p + post]
                segments.append(seg / seg[0])
    if len(segments) < 5:
        return float("nan"), len(segments), np.zeros(post)
    mean = np.mean(segments, axis=0)
    t = np.arange(post) / fps
    sl = slice(2, post)
    try:
        (_, tau, _), _ = optimize.curve_fit(lambda t, a, tau, c: a * np.exp(-t / tau) + c, t[sl], mean[sl],
                                            p0=(1.0, 0.4, 0.0), bounds=([0, 0.02, -1], [10, 5, 1]))
    except RuntimeError:
        tau = float("nan")
    return float(tau), len(segments), mean


def orientation_selectivity(rec: Recording) -> np.ndarray:
    """Global OSI per ROI from mean dF/F during the grating's on-period per direction (0 = untuned, 1 = sharp)."""
    start = np.searchsorted(rec.timestamps, rec.grating_trials["start"])
    stop = np.searchsorted(rec.timestamps, rec.grating_trials["stop"])
    resp = np.stack([rec.dff[a:b].mean(axis=0) for a, b in zip(start, stop)])  # (M, N)
    dirs = rec.grating_trials["direction_deg"]
    tuning = np.stack([resp[dirs == d].mean(axis=0) if (dirs == d).any() else np.zeros(rec.n_units)
                       for d in GRATING_DIRECTIONS])  # (8, N)
    tuning = np.maximum(tuning - tuning.min(axis=0, keepdims=True), 0)
    theta = np.deg2rad(np.array(GRATING_DIRECTIONS))[:, None]
    num = np.abs((tuning * np.exp(2j * theta)).sum(axis=0))
    return num / np.maximum(tuning.sum(axis=0), 1e-12)


def movie_reliability(rec: Recording) -> np.ndarray:
    """Mean pairwise correlation of each ROI's response across movie repeats (NaN without a movie)."""
    if (rec.movie_repeat < 0).all():
        return np.full(rec.n_units, np.nan)
    n_rep = int(rec.movie_repeat.max()) + 1
    per_rep = [rec.dff[rec.movie_repeat == r] for r in range(n_rep)]
    n = min(len(x) for x in per_rep)
    stack = np.stack([x[:n] for x in per_rep])  # (R, F, N)
    z = (stack - stack.mean(axis=1, keepdims=True)) / (stack.std(axis=1, keepdims=True) + 1e-12)
    corr = np.einsum("rfn,sfn->rsn", z, z) / n  # (R, R, N)
    iu = np.triu_indices(n_rep, 1)
    return corr[iu].mean(axis=0)


def autocorrelation(dff: np.ndarray, lag_frames: int) -> np.ndarray:
    """Autocorrelation of each column at ``lag_frames``."""
    x = dff - dff.mean(axis=0)
    return (x[lag_frames:] * x[:-lag_frames]).mean(axis=0) / (x.var(axis=0) + 1e-12)


def line_statistics(recordings: Sequence[Recording], kurtosis: str = "pearson") -> pd.DataFrame:
    """One row per Cre line: ROIs, transient rate, skew, kurtosis, noise, ACF(0.5 s), fitted decay vs Allen,
    orientation selectivity and movie repeat reliability (means over ROIs)."""
    rows = []
    lines = sorted({r.cre_line for r in recordings}, key=lambda l: list(ALLEN_DECAY_S).index(l)
                   if l in ALLEN_DECAY_S else 99)
    for line in lines:
        recs = [r for r in recordings if r.cre_line == line]
        sk, ku, nz, ac, osi, rel, ev = [], [], [], [], [], [], []
        for r in recs:
            s, k, _ = neuron_moments(r.dff, r.value_mask(), kurtosis=kurtosis)
            sk.append(s)
            ku.append(k)
            n_sd = noise_sd(r.dff)
            nz.append(n_sd)
            ac.append(autocorrelation(r.dff, int(round(0.5 * r.sampling_rate_hz))))
            osi.append(orientation_selectivity(r))
            rel.append(movie_reliability(r))
            dur_min = r.n_frames / r.sampling_rate_hz / 60.0
            ev.append(np.array([len(signal.find_peaks(r.dff[:, j], height=4 * n_sd[j], distance=6)[0]) / dur_min
                                for j in range(r.n_units)]))
        tau, n_events, _ = fit_decay(recs)
        allen = ALLEN_DECAY_S.get(line, np.nan)
        rows.append({
            "cre_line": line, "mice": len({r.mouse_id for r in recs}), "sessions": len(recs),
            "rois": int(sum(r.n_units for r in recs)),
            "events_per_min": float(np.mean(np.concatenate(ev))),
            "skewness": float(np.nanmean(np.concatenate(sk))), f"kurtosis_{kurtosis}": float(np.nanmean(np.concatenate(ku))),
            "noise_sd_dff": float(np.mean(np.concatenate(nz))), "acf_0.5s": float(np.mean(np.concatenate(ac))),
            "decay_fit_s": tau, "decay_allen_s": allen, "decay_error_pct": 100 * (tau - allen) / allen,
            "n_events_fit": n_events,
            "osi": float(np.nanmean(np.concatenate(osi))), "movie_reliability": float(np.nanmean(np.concatenate(rel))),
        })
    return pd.DataFrame(rows)
