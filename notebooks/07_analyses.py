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
# # 07 - Analyses: why would predictable neurons help?
#
# The paper explains its gains with six measurements; we run each with a definition written down
# (`poyocap/analysis/`, every function tested on a case with a known answer), on notebook 06's pretrainings of
# POYO-CAP's pool and the size-matched unpredictable (reverse) pool at the same budget:
#
# 1. **Fisher information** - the authors' reading (trace of the empirical Fisher of the pretraining loss per
#    window) and the standard bias-corrected linear Fisher information about grating direction
#    (Kanitscheider et al. 2015) per line group at matched neuron and trial counts.
# 2. **Training efficiency** - pretraining steps each pool needs to reach one common score of one common
#    downstream probe (grating direction on the downstream mice, frozen trunk, the same response-profile unit
#    embeddings for every encoder), never a pool's own loss.
# 3. **Loss landscapes** - the pretraining loss on the trajectory's PCA plane (the authors' figure) and on
#    filter-normalised random directions (Li et al. 2018); roughness = std of the residual after a quadratic fit.
# 4. **Scaling** - grating accuracy vs encoder width (>= 10x parameters) for POYO-CAP's pool, the mixed pool and
#    scratch at fixed steps, slope per decade of parameters; and vs the number of pretraining neurons as
#    unpredictable neurons are added to POYO-CAP's pool (the paper's "scaling collapse").
# 5. **Dose-response** (beyond the paper) - pretraining on neurons binned by kurtosis, windows matched.
# 6. **Transfer mechanism** - relative weight change per encoder module in fine-tuning, the readout bias norm vs
#    scratch, CKA between pretrained and fine-tuned latents.
#
# The authors' repository contains none of these analyses, so "the authors' reading" is ours from the paper's text.
# By default the grids are reduced and one seed runs (labelled); `./run_all.sh --extended` runs every seed and the
# full grids. **Read the table's last header line first**: while notebook 03's pretraining does not count, these
# numbers describe a pretraining that learned nothing useful, on synthetic data.

# %% tags=["parameters"]
scale = "demo"
source = None
seeds = None
partition = "computed"
extended = False  # True: every seed, full grids

# %%
from poyocap import paths, plotting, plotting_analyses, stages

cfg = stages.setup_notebook(scale, source, seeds, partition)

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bars) reuses notebook 06's pretrainings / fine-tunings; trains the scaling and dose-response runs
result = stages.analyses_stage(cfg, extended=extended)
verdicts = stages.pretraining_verdicts(stages.pretrain_stage(cfg).summary)

# %% [markdown]
# ## Fisher information and training efficiency

# %%
result.fisher_curves.round(3)

# %%
eff = stages.analyses.efficiency_summary(result.efficiency)
fig = plotting_analyses.plot_information_and_efficiency(result.fisher_curves, result.efficiency, eff["threshold"],
                                                        cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "07_information_efficiency")

# %% [markdown]
# ## Loss landscapes (pretraining loss, fixed held-out batch, eval mode)

# %%
fig = plotting_analyses.plot_landscapes(result.surfaces, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "07_landscapes")

# %% [markdown]
# ## Scaling, dose-response, transfer mechanism

# %%
result.scaling.round(3)

# %%
result.neurons.round(3)

# %%
result.dose.round(3)

# %%
result.transfer.round(4)

# %%
fig = plotting_analyses.plot_scaling_dose_transfer(result.scaling, result.dose, result.transfer, cfg.data.source,
                                                   result.neurons)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "07_scaling_dose_transfer")

# %% [markdown]
# ## The analyses table (`results/<scale>/analyses.md`)

# %%
table = stages.save_analyses_table(result, verdicts)
print("\n".join(verdicts))
table
