"""Data-informed initial unit embeddings for fine-tuning (a demo deviation; ``finetune.unit_init``).

POYO+ learns a new unit's embedding from zero. With few steps per session that is the slowest part of
fine-tuning (``docs/decoders.md``): a shared readout only decodes once each unit's embedding says what the
unit responds to. :func:`profile_embeddings` starts each embedding from the unit's stimulus-response profile on
the training windows (:func:`poyocap.data.profiles.response_profiles`): the profiles of all units are z-scored per
unit, reduced to their leading shared components by SVD, and scaled to the random initialisation's size, so
units that respond alike start alike. Training then proceeds exactly as from a random start.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch


def profile_embeddings(profiles: np.ndarray, dim: int, std: float = 0.02, noise: float = 0.25,
                       seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Embeddings ``(n_units, dim)`` from profiles ``(n_units, n_conditions)`` (NaN = condition not seen).

    Each unit's profile is z-scored over its seen conditions (unseen ones become 0); the unit x condition matrix's
    top ``min(dim, n_conditions, n_units)`` left singular vectors times their singular values are the
    informative coordinates; the rest of the dims are 0. The result is scaled to an element SD of ``std`` (as
    ``trunc_normal_(0, std)``) and a random part of SD ``noise * std`` is added so that units with the same
    profile still differ. Returns the embeddings and a bool mask ``(n_units,)`` of units that had a usable
    profile (>= 2 seen conditions and a non-zero SD); other rows are purely random and should be left as they are.
    """
    if profiles.ndim != 2:
        raise ValueError(f"profiles must be (n_units, n_conditions), got shape {profiles.shape}")
    n, c = profiles.shape
    seen = np.isfinite(profiles)
    x = np.where(seen, profiles, np.nan)  # inf (not produced by response_profiles) counts as unseen too
    with warnings.catch_warnings():  # all-NaN rows (units never seen) are expected: they become unusable
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.nanmean(x, axis=1, keepdims=True) if c else np.zeros((n, 1))
        sd = np.nanstd(x, axis=1, keepdims=True) if c else np.zeros((n, 1))
    usable = (seen.sum(1) >= 2) & (np.nan_to_num(sd[:, 0]) > 1e-8)
    z = np.zeros((n, c))
    z[usable] = np.nan_to_num((x[usable] - mu[usable]) / sd[usable])
    out = np.zeros((n, dim))
    k = min(dim, c, int(usable.sum()))
    if k > 0:
        u, s, _ = np.linalg.svd(z[usable], full_matrices=False)
        coords = u[:, :k] * s[:k]
        out[np.flatnonzero(usable), :k] = coords / max(float(np.sqrt((coords ** 2).sum(1).mean() / dim)), 1e-12) * std
    rng = np.random.default_rng(seed)
    out += rng.standard_normal((n, dim)) * noise * std
    return torch.from_numpy(out.astype(np.float32)), usable
