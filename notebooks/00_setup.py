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
# # 00 - Setup: environment, scale and configuration
#
# Reports the environment the notebooks run in (package versions, device), the chosen scale and data
# source, where data are cached and outputs written, and the full configuration tree. Every artifact
# written by the later notebooks stores this configuration next to itself.

# %% tags=["parameters"]
scale = "demo"
source = None  # None: the scale's default ("synthetic" for smoke/demo, "allen" for paper)
seeds = None  # e.g. "0,1,2"; None: the scale's default
partition = "computed"  # "computed" or "paper" (used from notebook 02 on)

# %%
from poyocap import stages

cfg = stages.setup_notebook(scale, source, seeds, partition)

# %% [markdown]
# ## Environment
# Versions and device differ between machines, so this cell's output is not compared by the regression tests.

# %%
# NBVAL_IGNORE_OUTPUT
stages.environment_report(cfg)

# %% [markdown]
# ## Configuration
# The presets differ only where `poyocap/config.py` says so (`smoke()`, `demo()`, `paper()`).

# %%
stages.config_table(cfg)
