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
# # 05 - Fine-tuning on the unpredictable lines: drifting-grating direction, and the main table
#
# Same protocol as notebook 04 with a POYO+ query readout at the trial -> 8 directions (cross-entropy), on 1 s
# windows from trial onset; grating trials are split 70/10/20 in blocks of consecutive trials. The demo's three
# deviations that made the grating decoders leave chance (session centring, response-profile unit embeddings, a slow
# learning rate for the unit embeddings) are measured in `docs/decoders.md`. References: logistic
# regression per session on each window's mean dF/F, and a frozen random-init encoder + linear head. Then the paper's
# main table: POYO-CAP vs training from scratch, mean +- 95 % CI over seeds, paired t-test over seeds and a paired
# bootstrap over test items, with the paper's real-data numbers beside ours (a reference, not a target).

# %% tags=["parameters"]
scale = "demo"
source = None
seeds = None
partition = "computed"

# %%
from poyocap import paths, plotting, stages

cfg = stages.setup_notebook(scale, source, seeds, partition)

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bars) trains or reuses every (method, seed) run; the movie runs of notebook 04 are reused from cache
gratings = stages.finetune_stage(cfg, "gratings")
movie = stages.finetune_stage(cfg, "movie")

# %% [markdown]
# ## Direction accuracy per method and seed (chance = 0.125)

# %%
gratings.per_seed[["method", "seed", "steps", "n_test", "accuracy"]].round(3)

# %%
fig = plotting.plot_confusion(gratings.confusion, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "05_confusion")

# %%
fig = plotting.plot_learning_curves(gratings.histories, cfg.data.source, "accuracy", gratings.reference_scores())
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "05_learning_curves")

# %% [markdown]
# ## Main results table (`results/<scale>/main_results.md`)

# %%
table = stages.main_table(cfg, movie, gratings)
table.round(3)

# %%
print("\n".join(stages.headline(table)))

# %% [markdown]
# ## The positive control in the main table
#
# Fine-tuned from the encoder pretrained on the downstream mice's own training windows (notebook 03) against the
# same fine-tuning from random init, paired by seed; then POYO-CAP against the same scratch row.

# %%
for a, b in (stages.results.POSITIVE_CONTROL, ("POYO-CAP", stages.results.POSITIVE_CONTROL[1])):
    print("\n".join(stages.results.paired_comparison([movie, gratings], a, b)))
