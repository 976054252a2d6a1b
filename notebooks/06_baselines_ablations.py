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
# # 06 - Baselines and ablations
#
# Every row of the paper's ablation table, plus controls it lacks, on the main table's protocol: the same downstream
# test windows, fine-tuning step budget, model selection on validation (never step 0) and evaluation code
# (`poyocap.methods.ABLATIONS`, `poyocap.stages.ablations`). A row changes one thing: its pretraining pool (reverse:
# the unpredictable lines' held-out mice; mixed: half of each; inhibitory-only; time-shuffled; the label-free
# per-neuron pool; in-domain: the downstream mice's own training windows), its objective (random masking, no
# orientation cross-entropy), its encoder or pixel decoder (MLP, U-Net without latent injection), or its input
# (CEBRA embeddings from the real `cebra` package, fitted on the downstream training frames only). Reverse, mixed
# and time-shuffled pools are size-matched to POYO-CAP's pool in ROIs and training windows.
#
# **Budget.** By default the table runs the first seed with a third of the pretraining and fine-tuning steps for every
# row, POYO-CAP and scratch included (the rows are comparable with each other, not with the main table); CIs are then
# a bootstrap over test items. `./run_all.sh --extended` runs every seed at the full budget (Student-t CIs, paired
# t-tests over seeds). **Read the header line of the table first:** while the deep decoders stay below the linear
# references (the decoders issue) no row of this table can be interpreted.

# %% tags=["parameters"]
scale = "demo"
source = None
seeds = None
partition = "computed"
extended = False  # True: every seed, full step budget

# %%
from poyocap import paths, plotting, plotting_ablations, stages

cfg = stages.setup_notebook(scale, source, seeds, partition)

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bars) pretrains every pool / objective, fits CEBRA, fine-tunes every row - or reuses the cached runs
result = stages.ablation_stage(cfg, extended=extended)
print(f"seeds {list(result.seeds)}; pretraining {result.cfg.pretrain.optim.steps} / fine-tuning "
      f"{result.cfg.finetune.optim.steps} steps (movie {result.cfg.finetune.task_optim('movie').steps}) for every row")

# %% [markdown]
# ## Pretraining pools (none holds a downstream mouse except the in-domain control)

# %%
result.pools

# %% [markdown]
# ## Collapse of each pretraining (notebook 03's monitor: within-session std and effective rank of the latents of
# 256 held-out grating windows at the last snapshot, relative to the initialisation; < 0.5 = collapsed by our rule)

# %%
result.pretraining.round(3)

# %% [markdown]
# ## CEBRA training loss (has it plateaued?)

# %%
fig = plotting_ablations.plot_cebra_curves(result.cebra_curves, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "06_cebra_loss")

# %% [markdown]
# ## The ablation table (`results/<scale>/ablations.md`)

# %%
table = stages.ablation_table(result)
stages.save_ablation_table(result, table)
print(stages.ablations.interpretability(table, result.references))
table.round(3)

# %%
fig = plotting_ablations.plot_ablation_bars(table, result.references, cfg.data.source,
                                            stages.ablations.interpretability(table, result.references))
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "06_ablations")

# %% [markdown]
# Linear references and the mean-frame floor are the main table's (same test windows). The paper's values are on
# real Allen data at 128 x 256 pixels; ours on the synthetic observatory at the scale's frame size - compare
# orderings, not numbers, and only once the header line says the rows can be compared.
