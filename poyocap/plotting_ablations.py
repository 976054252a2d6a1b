"""Figures of notebook 06 (baselines and ablations); the style and stamps of :mod:`poyocap.plotting`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .plotting import synthetic_label


def plot_ablation_bars(table: pd.DataFrame, references: pd.DataFrame, source: str, title: str = "") -> plt.Figure:
    """One panel per task: each row's mean with its 95 % CI, the paper's value (real data) as a hollow marker, the
    per-session linear reference (dashed) and the mean-frame floor (dotted) as horizontal lines."""
    panels = [(task, col) for task, col in (("movie", "ssim"), ("gratings", "acc")) if f"{col}_mean" in table]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 0.32 * len(table) + 1.8), squeeze=False)
    for ax, (task, col) in zip(axes[0], panels):
        rows = table.dropna(subset=[f"{col}_mean"]).iloc[::-1]
        y = np.arange(len(rows))
        ax.barh(y, rows[f"{col}_mean"], xerr=rows[f"{col}_ci95"], color="#4c72b0", alpha=0.8, capsize=2,
                label="ours (95 % CI)")
        paper = rows.get(f"paper_{col}")
        if paper is not None and paper.notna().any():
            ax.plot(paper, y, "o", mfc="none", mec="#c44e52", label="paper (real data)")
        for _, ref in references[references["task"] == task].iterrows():
            style = "--" if ref["role"] == "reference" else ":"
            ax.axvline(ref["score"], color="k", ls=style, lw=1, label=ref["method"])
        if task == "gratings":
            ax.axvline(1 / 8, color="grey", ls=":", lw=1, label="chance (1/8)")
        ax.set_yticks(y, rows["method"], fontsize=8)
        ax.set_xlabel("test SSIM" if task == "movie" else "test accuracy (8 directions)")
        ax.set_title(task)
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    synthetic_label(fig, source)
    fig.tight_layout()
    return fig


def plot_cebra_curves(curves: dict[str, np.ndarray], source: str, smooth: int = 20) -> plt.Figure:
    """CEBRA's InfoNCE training loss per mode (moving average over ``smooth`` iterations): has it plateaued?"""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for mode, curve in sorted(curves.items()):
        k = max(1, min(smooth, len(curve) // 5))
        ax.plot(np.convolve(curve, np.ones(k) / k, mode="valid"), label=f"CEBRA-{mode}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("InfoNCE loss")
    ax.legend(fontsize=8)
    synthetic_label(fig, source)
    fig.tight_layout()
    return fig
