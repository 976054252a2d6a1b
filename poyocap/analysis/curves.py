"""Curve summaries: steps to reach a score (training efficiency), slopes per log10(parameters) (scaling), trends
(dose-response)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats


def steps_to_reach(steps: Sequence[float], scores: Sequence[float], threshold: float) -> float:
    """First step at which ``scores`` reaches ``threshold``, linearly interpolated between evaluations; NaN if it
    never does (step 0 counts: a curve that starts above the threshold returns its first step)."""
    s, y = np.asarray(steps, float), np.asarray(scores, float)
    above = np.flatnonzero(y >= threshold)
    if not len(above):
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(s[0])
    frac = (threshold - y[i - 1]) / (y[i] - y[i - 1])
    return float(s[i - 1] + frac * (s[i] - s[i - 1]))


def slope_per_decade(n_params: Sequence[float], scores: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Least-squares slope of ``scores`` against log10(``n_params``), its CI half-width (Student t, n - 2 dof) and p."""
    x, y = np.log10(np.asarray(n_params, float)), np.asarray(scores, float)
    if len(x) < 3:
        fit = np.polyfit(x, y, 1) if len(x) == 2 else [np.nan, np.nan]
        return {"slope": float(fit[0]), "ci95": float("nan"), "p": float("nan"), "n": len(x)}
    res = stats.linregress(x, y)
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 2) * res.stderr)
    return {"slope": float(res.slope), "ci95": half, "p": float(res.pvalue), "n": len(x)}


def ratio_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95, n_boot: int = 2000, seed: int = 0
             ) -> dict[str, float]:
    """mean(a) / mean(b) with a percentile bootstrap CI (seeds resampled independently); NaN-free inputs."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ratio = float(a.mean() / b.mean()) if b.mean() != 0 else float("nan")
    if len(a) < 2 or len(b) < 2:
        return {"ratio": ratio, "ci_low": float("nan"), "ci_high": float("nan")}
    rng = np.random.default_rng(seed)
    boots = rng.choice(a, (n_boot, len(a))).mean(1) / rng.choice(b, (n_boot, len(b))).mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return {"ratio": ratio, "ci_low": float(lo), "ci_high": float(hi)}


def monotone_trend(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Spearman rank correlation of ``y`` with ``x`` (the dose-response test: the paper's claim predicts < 0 for
    score vs kurtosis) and its p-value."""
    rho, p = stats.spearmanr(np.asarray(x, float), np.asarray(y, float))
    return {"rho": float(rho), "p": float(p)}
