"""Figures of notebook 01's second half (the synthetic observatory beside the real Allen sample); the style and
stamps of :mod:`poyocap.plotting`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .plotting import synthetic_label


def plot_realism_ecdf(cells: pd.DataFrame, real_group: str, source: str, highlight: str = "synthetic Cux2-CreERT2"
                      ) -> plt.Figure:
    """ECDF of every per-cell statistic: the real sample (black) beside each synthetic line (grey; ``highlight``
    in colour)."""
    import seaborn as sns

    from .data.cellstats import STATISTICS

    fig, axes = plt.subplots(2, 4, figsize=(13, 5.6))
    log_scale = {"kurtosis", "snr", "event_rate_hz"}
    for ax, stat in zip(axes.flat, STATISTICS):
        for group, df in cells.groupby("group", sort=True):
            style = ({"color": "black", "lw": 2.2, "zorder": 3} if group == real_group else
                     {"color": "#d95f02", "lw": 1.8, "zorder": 2} if group == highlight else
                     {"color": "0.7", "lw": 0.8, "zorder": 1})
            v = df[stat].dropna()
            sns.ecdfplot(x=v[v > 0] if stat in log_scale else v, ax=ax, log_scale=stat in log_scale, **style)
        ax.set_title(stat, fontsize=9)
        ax.set_xlabel("")
    axes.flat[0].legend(handles=[plt.Line2D([], [], color="black", lw=2.2, label=real_group),
                                 plt.Line2D([], [], color="#d95f02", lw=1.8, label=highlight),
                                 plt.Line2D([], [], color="0.7", lw=0.8, label="other synthetic lines")],
                        fontsize=7, loc="lower right")
    fig.suptitle("Per-cell statistics: real Allen sample vs synthetic observatory (ECDF)")
    fig.tight_layout()
    synthetic_label(fig, source)
    return fig


def plot_decodability(decoding: pd.DataFrame, real_group: str, source: str) -> plt.Figure:
    """Direction decoding accuracy vs number of cells per group (chance 1/8)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for group, df in decoding.groupby("group", sort=True):
        style = ({"color": "black", "lw": 2.2, "marker": "o"} if group == real_group else
                 {"color": "#d95f02", "lw": 1.8, "marker": "s"} if "ABO protocol" in group else
                 {"color": "0.6", "lw": 0.8, "marker": "."})
        ax.plot(df["n_cells"], df["accuracy"], label=f"{group} ({int(df['n_trials'].iloc[0])} trials)", **style)
    ax.axhline(1 / 8, color="0.4", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("cells")
    ax.set_ylabel("direction accuracy (test blocks)")
    ax.legend(fontsize=6, ncol=1, loc="upper left")
    fig.tight_layout()
    synthetic_label(fig, source)
    return fig


def plot_by_snr(by_snr: pd.DataFrame, real_group: str, source: str,
                stats: tuple[str, ...] = ("event_rate_hz", "kurtosis", "mean_corr")) -> plt.Figure:
    """Median of ``stats`` per std/noise bin, real sample (black) vs synthetic Cux2 (colour): where along the
    SNR axis the generator departs from the real cells. ``by_snr``: :func:`poyocap.stages.realism.by_snr`."""
    fig, axes = plt.subplots(1, len(stats), figsize=(3.6 * len(stats), 3.3))
    for ax, stat in zip(axes, stats):
        for group, df in by_snr.groupby("group", sort=True):
            real = group == real_group
            ax.plot(df["snr_median"], df[stat], "o-" if real else "s-", color="black" if real else "#d95f02",
                    lw=2.0 if real else 1.6, label=group)
        ax.set_xscale("log")
        ax.set_xlabel("std / noise (bin median)")
        ax.set_title(stat, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle("Per-cell statistics binned by SNR: real Allen sample vs synthetic Cux2", fontsize=10)
    fig.tight_layout()
    synthetic_label(fig, source)
    return fig
