"""Figures of notebook 07 (analyses); the style and stamps of :mod:`poyocap.plotting`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .plotting import synthetic_label

COLOURS = {"predictable": "#4c72b0", "reverse": "#c44e52", "unpredictable": "#c44e52"}


def plot_information_and_efficiency(fisher_curves: pd.DataFrame, efficiency: pd.DataFrame, threshold: float,
                                    source: str) -> plt.Figure:
    """Left: bias-corrected linear Fisher information vs neuron count per line group. Right: the common downstream
    probe vs pretraining step per pool, with the threshold the efficiency ratio uses."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for group, g in fisher_curves.groupby("group"):
        a.plot(g["neurons"], g["mean"], "o-", color=COLOURS.get(group), label=f"{group} lines")
    a.set_xlabel("neurons")
    a.set_ylabel("linear Fisher information (rad$^{-2}$)")
    a.set_title("direction 0 vs 45 deg, bias-corrected")
    a.legend(fontsize=8)
    for pool, g in efficiency.groupby("pool"):
        m = g.groupby("step")["probe"].mean()
        b.plot(m.index, m.values, "o-", color=COLOURS.get(pool), label=f"{pool} pool")
    b.axhline(threshold, color="k", ls=":", lw=1, label="common threshold")
    b.set_xlabel("pretraining step")
    b.set_ylabel("downstream grating probe accuracy")
    b.legend(fontsize=8)
    synthetic_label(fig, source)
    fig.tight_layout()
    return fig


def plot_landscapes(surfaces: dict, source: str) -> plt.Figure:
    """Each (pool, plane) loss surface as a contour plot (top; the trajectory drawn on its PCA plane) and as a 3-D
    surface (bottom)."""
    keys = sorted(surfaces)
    fig = plt.figure(figsize=(3.8 * len(keys), 7))
    for i, key in enumerate(keys):
        a, b, z, path = surfaces[key]
        ax = fig.add_subplot(2, len(keys), i + 1)
        cs = ax.contourf(a, b, z.T, levels=20, cmap="viridis")
        fig.colorbar(cs, ax=ax, shrink=0.8)
        if path is not None:
            ax.plot(path[:, 0], path[:, 1], "w.-", lw=1)
        ax.set_title(f"{key[0]} pool\n{key[1]}", fontsize=9)
        ax.set_xlabel("direction 1")
        ax.set_ylabel("direction 2")
        ax3 = fig.add_subplot(2, len(keys), len(keys) + i + 1, projection="3d")
        aa, bb = np.meshgrid(a, b, indexing="ij")
        ax3.plot_surface(aa, bb, z, cmap="viridis", linewidth=0, antialiased=False)
        ax3.set_xlabel("dir. 1", fontsize=7)
        ax3.set_ylabel("dir. 2", fontsize=7)
        ax3.set_zlabel("loss", fontsize=7)
        ax3.tick_params(labelsize=6)
    synthetic_label(fig, source)
    fig.tight_layout()
    return fig


def plot_scaling_dose_transfer(scaling: pd.DataFrame, dose: pd.DataFrame, transfer: pd.DataFrame,
                               source: str, neurons: pd.DataFrame | None = None) -> plt.Figure:
    """Grating accuracy vs encoder parameters per condition and vs pretraining ROIs (unpredictable neurons added);
    vs the median kurtosis of the pretraining neurons; relative encoder weight change in fine-tuning per
    pretraining condition."""
    fig, (a, n_ax, b, c) = plt.subplots(1, 4, figsize=(18, 3.8))
    if neurons is not None and len(neurons):
        m = neurons.groupby("rois")["accuracy"].mean()
        n_ax.plot(m.index, m.values, "o-", color="#8172b2")
        n_ax.set_xscale("log")
    n_ax.set_xlabel("pretraining ROIs (POYO-CAP pool + unpredictable)")
    n_ax.set_ylabel("test accuracy (gratings)")
    for cond, g in scaling.groupby("condition", sort=False):
        m = g.groupby("encoder_params")["accuracy"].mean()
        a.plot(m.index, m.values, "o-", label=cond)
    a.set_xscale("log")
    a.set_xlabel("encoder parameters")
    a.set_ylabel("test accuracy (gratings)")
    a.legend(fontsize=7)
    m = dose.groupby("median_kurtosis")["accuracy"].mean()
    b.plot(m.index, m.values, "o-", color="#55a868")
    b.set_xlabel("median kurtosis of the pretraining neurons")
    b.set_ylabel("test accuracy (gratings)")
    if len(transfer):
        cols = [col for col in transfer.columns if col.startswith("change_")]
        x = np.arange(len(transfer))
        for i, col in enumerate(cols):
            c.bar(x + i / (len(cols) + 1), 100 * transfer[col], width=1 / (len(cols) + 1), label=col[7:])
        c.set_xticks(x + 0.3, transfer["method"], rotation=60, ha="right", fontsize=7)
        c.set_ylabel("weight change in fine-tuning (%)")
        c.legend(fontsize=7)
    synthetic_label(fig, source)
    fig.tight_layout()
    return fig
