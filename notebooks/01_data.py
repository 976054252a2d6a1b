# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: poyocap (.venv)
#     language: python
#     name: poyocap
# ---

# %% [markdown]
# # 01 - Data: the observatory
#
# The default source is the **synthetic observatory** (`poyocap/data/synthetic.py`): our machines cannot
# reach the Allen Brain Observatory, so a linear-nonlinear-Poisson model with Gabor receptive fields, line-specific
# physiology, GCaMP kinetics, neuropil, shot noise and the Allen dF/F pipeline stands in for it. Its parameters
# are physiological (one documented table); skewness, kurtosis and which lines are "predictable" are never set.
# Everything shown from it is labelled **SYNTHETIC DATA**. With internet, `--source allen` reads the real
# sessions through `allensdk` instead.

# %% tags=["parameters"]
scale = "demo"
source = None
seeds = None
partition = "computed"  # "computed" (notebook 02's knee) or "paper" (the authors' four lines)

# %%
from poyocap import paths, plotting, plotting_realism, stages

cfg = stages.setup_notebook(scale, source, seeds, partition)

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bar) generated on the first run, then read from the per-session HDF5 cache
result = stages.data_stage(cfg)

# %% [markdown]
# ## Lines x mice x sessions x cells

# %%
result.sessions.round(2)

# %% [markdown]
# ## Example traces
# Sparse, heavy-tailed transients for excitatory lines; denser, more Gaussian activity for the interneuron lines.

# %%
fig = plotting.plot_example_traces(result.recordings, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "01_example_traces")

# %% [markdown]
# ## Stimuli
# Drifting gratings (8 directions x 5 temporal frequencies, 2 s on / 1 s grey, blank sweeps dropped from the
# trial table) and a movie shown in repeats. The synthetic movie pans, zooms and cuts over CC0 / public-domain
# photographs bundled with scikit-image (the real ABO movie is copyrighted and never shipped).

# %%
fig = plotting.plot_stimuli(result.recordings[0], cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "01_movie_frames")

# %%
from poyocap.data.movie import spectral_slope

print(f"movie amplitude-spectrum slope: {spectral_slope(result.recordings[0].movie):.2f} (natural images ~ -1)")

# %% [markdown]
# ## Validation statistics per line
# Means over ROIs. `decay_fit_s` is fitted to each line's isolated dF/F transients and compared with the
# Allen event-decay constant (`decay_allen_s`); `osi` is the global orientation selectivity on drifting
# gratings; `movie_reliability` the mean correlation of a ROI's response between movie repeats.

# %%
result.line_stats.round(3)

# %%
fig = plotting.plot_line_statistics(result.line_stats, cfg.data.source,
                                    kurtosis_col=f"kurtosis_{cfg.filtering.kurtosis_convention}")
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "01_line_statistics")

# %%
worst = result.line_stats["decay_error_pct"].abs().max()
print(f"largest |fitted - Allen| decay error: {worst:.0f} %")

# %% [markdown]
# ## The synthetic observatory beside real Allen data
# One statistics module (`poyocap/data/cellstats.py`) measures every cell of the synthetic observatory and of a real
# Allen sample: 127 Cux2 cells of one session, drifting gratings, statistics committed under
# `poyocap/data/reference/` (provenance there). The generator was calibrated on this sample through physiological
# parameters only (`poyocap/data/synthetic.py`, comment above `LINE_PHYSIOLOGY`); skewness and kurtosis are measured,
# never set. The rule: each median within x1.25 of the real one (pairwise correlation within +-0.04).

# %%
# NBVAL_IGNORE_OUTPUT
# (fits logistic decoders for the decodability curves)
realism = stages.realism_stage(cfg, result.recordings)

# %%
realism.comparison.round(3)

# %%
fig = plotting_realism.plot_realism_ecdf(realism.cells, stages.realism.REAL_GROUP, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "01_real_vs_synthetic")

# %% [markdown]
# Medians per line (interneuron lines have no real counterpart here; they keep literature parameters).

# %%
realism.by_line.round(3)

# %% [markdown]
# **At the same SNR.** The medians above mix two things: how the cells' std/noise is spread, and what a cell of a
# given std/noise looks like. Binned by std/noise (measured at the demo scale), the real cells have more events than the synthetic ones below
# std/noise ~2, far heavier tails (kurtosis) once they are bright, and a pairwise correlation that *falls* with
# brightness (dim real cells share more variance, as a shared contaminating signal would do), where the synthetic
# correlation rises with it (it comes from coupled firing). These are the mechanisms still missing from the
# generator (docs/calibration.md).

# %%
fig = plotting_realism.plot_by_snr(realism.by_snr, stages.realism.REAL_GROUP, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "01_real_vs_synthetic_by_snr")
realism.by_snr[["group", "snr_bin", "n_cells", "event_rate_hz", "kurtosis", "mean_corr", "ac_1frame"]].round(3)

# %% [markdown]
# ## Direction decodability vs number of cells
# Logistic regression on each trial's mean dF/F over 0-1 s after onset, blocks of 8 trials, 70/30. The real
# sample and the synthetic "ABO protocol" session (15 repeats per condition, 127 cells) have ~600 trials; the scale's
# own sessions have fewer, which lowers their curves.

# %%
fig = plotting_realism.plot_decodability(realism.decoding, stages.realism.REAL_GROUP, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "01_decodability")
realism.decoding.pivot_table(index="group", columns="n_cells", values="accuracy").round(3)

