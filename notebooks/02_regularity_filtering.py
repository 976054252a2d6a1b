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
# # 02 - Regularity filtering: which lines are "predictable"?
#
# The paper's first idea: measure the skewness and kurtosis of every neuron's dF/F, average per Cre line,
# find the knee of the sorted per-line means (kneed, Satopaa et al. 2011) and call the lines below both
# thresholds *predictable*. On real Allen data the paper found skewness <= 3.51, kurtosis <= 22.62 and
# SST, VIP, PVALB, NTSR1. Here the thresholds are **computed** from whatever data the source provides.
# On the synthetic observatory the result is a check of the pipeline, **not evidence for the paper's claim**.
#
# `partition = "paper"` takes the authors' four lines instead of the computed ones (the statistics are still shown).

# %% tags=["parameters"]
scale = "demo"
source = None
seeds = None
partition = "computed"  # "computed" (knee detection) or "paper" (the authors' four lines)

# %%
from poyocap import filtering, paths, plotting, stages

cfg = stages.setup_notebook(scale, source, seeds, partition)
print(f"kurtosis={cfg.filtering.kurtosis_convention} (Pearson: normal = 3)")

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bars) reads the observatory cached by notebook 01, then bootstraps
result = stages.filtering_stage(cfg)

# %% [markdown]
# ## Partition

# %%
p = result.partition
print("thresholds:", {k: round(v, 3) for k, v in p.thresholds.items()})
print("predictable:  ", ", ".join(filtering.short_name(l) for l in p.predictable_lines))
print("unpredictable:", ", ".join(filtering.short_name(l) for l in p.unpredictable_lines))
print("saved to", stages.partition_path(cfg).relative_to(paths.output_root()))

# %% [markdown]
# ## Our thresholds beside the paper's

# %%
result.comparison

# %% [markdown]
# ## Per-line statistics
# `p_predictable`: fraction of bootstrap replicates (mice, then neurons, resampled) calling the line predictable;
# `frac_neurons_predictable`: the label-free per-neuron call (no Cre labels used).

# %%
cols = ["cre_line", "n_cells", "n_excluded", "skewness_mean", "skewness_median", "skewness_iqr", "kurtosis_mean",
        "kurtosis_median", "kurtosis_iqr", "predictable", "paper_predictable", "p_predictable",
        "frac_neurons_predictable"]
result.lines[cols].round(3)

# %%
fig = plotting.plot_regularity_scatter(result.neurons, result.lines, p, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "02_regularity_scatter")

# %%
fig = plotting.plot_knees(result.lines, p, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "02_knees")

# %% [markdown]
# ## Stability
# Bootstrap over mice and neurons, and kneed's sensitivity parameter `S`.

# %%
fig = plotting.plot_bootstrap(result.bootstrap, p, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "02_bootstrap")

# %%
result.sensitivity.round(3)

# %% [markdown]
# ## Label-free filtering (beyond the paper)
# The knee is found on the per-neuron distribution and each neuron is classified by its own statistics, so no
# Cre-line label is needed; the pretrain pool can then be a set of neurons. Agreement with the line-level call:

# %%
result.agreement.round(3)
