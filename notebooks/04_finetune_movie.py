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
# # 04 - Fine-tuning on the unpredictable lines: natural-movie frame reconstruction
#
# The pretrained encoder (notebook 03) is loaded with `strict=False` (exactly the readout's weights are new),
# the downstream pool's units get new embeddings (demo: started from each unit's response profile on the training
# windows, `finetune.unit_init`; paper preset: random), the latents are centred per session before the readout (demo,
# `finetune.session_centring`), and encoder + POYO+ query readout (with a session embedding) +
# latent-injection U-Net are trained on the downstream mice's training repeats (0-7) with the configured movie loss
# (demo: `L1 + (1 - SSIM)`, chosen on validation; the paper's `50 focal + 50 L1 + 50 FFT + perceptual +
# 0.1 (1 - SSIM)` is the paper preset - `docs/decoders.md`); the best checkpoint on repeat 8 (never step 0) is
# tested on repeat 9 and on the *novel frames* block that no training window saw. Every method gets the same number
# of steps; baselines get the same architecture from random init: **Scratch (all lines)** (the paper's baseline),
# **Scratch (downstream)**, and one labelled row with the pretraining's steps added (first seed). Floors: the mean
# training frame, and POYO-CAP fed time-shuffled neurons (first seed). **References** (`poyocap/references.py`), the
# bar every deep row must clear, on the same windows: ridge regression per session from the raw dF/F window to the
# pixels, the same on all sessions side by side matched by frame and repeat (pseudo-population), and a frozen
# random-init encoder with a per-session linear head; regularisation chosen on validation.
# The main table is written by notebook 05.

# %% tags=["parameters"]
scale = "demo"
source = None
seeds = None
partition = "computed"

# %%
from poyocap import paths, plotting, stages

cfg = stages.setup_notebook(scale, source, seeds, partition)
optim = cfg.finetune.task_optim("movie")
steps = optim.steps
print(f"frames {cfg.data.frame_height}x{cfg.data.frame_width}; window {cfg.data.movie_window_s} s ending "
      f"{cfg.data.movie_lag_s} s after the frame; batch {optim.batch_size}, peak LR {optim.lr:g}; "
      f"{steps} steps per method "
      f"({steps + cfg.pretrain.optim.steps} for the labelled + pretraining's steps row)")

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bars, a warning when lpips is not installed) trains or reuses every (method, seed) run
result = stages.finetune_stage(cfg, "movie")
print("movie loss:", result.loss_spec)

# %% [markdown]
# ## Test metrics per method and seed
# `ssim`: headline SSIM (frames in [0, 1], data_range 1, Gaussian 11 / 1.5) on repeat 9; `ssim_torchmetrics`: the
# authors' variant (torchmetrics defaults on 0-255 frames); `frame_id`: the reconstruction is closest to its own
# frame among the test frames (`frame_id_k`: within +-k frames); `ssim_novel`: the held-out block of frames;
# `diversity`: per-pixel SD of the predictions over test frames / that of the true frames (0 = one constant frame).

# %%
cols = [c for c in ["method", "seed", "steps", "n_test", "ssim", "ssim_torchmetrics", "pixel_corr", "frame_id",
                    "frame_id_k", "ssim_novel", "diversity"] if c in result.per_seed]
result.per_seed[cols].round(3)

# %%
fig = plotting.plot_reconstructions(result.examples, result.targets, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "04_reconstructions")

# %%
fig = plotting.plot_strip(result.examples, result.targets, cfg.data.source)
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "04_reconstruction_strip")

# %% [markdown]
# Learning curves: validation SSIM per method and seed; the dashed lines are the linear references' validation
# SSIM (the bar to clear).

# %%
fig = plotting.plot_learning_curves(result.histories, cfg.data.source, "SSIM", result.reference_scores())
png = plotting.save_figure(fig, paths.figures_dir(cfg.scale) / "04_learning_curves")
