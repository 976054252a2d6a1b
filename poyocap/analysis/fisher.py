"""Fisher information, two readings of the paper's "Fisher information per data point" (64.5 vs 33.5).

- :func:`empirical_fisher_per_sample` - the authors' reading (their code does not contain it; the paper says "per
  data point"): the trace of the empirical Fisher of the pretraining loss with respect to the parameters,
  ``mean_i ||grad_theta loss_i||^2``, one data point (window) at a time.
- :func:`linear_fisher` - the neuroscience-standard quantity: linear Fisher information about a stimulus variable
  carried by a population, ``I = f'^T Sigma^-1 f'``, with the bias-corrected estimator of Kanitscheider, Coen-Cagli,
  Kohn & Pouget (2015, eq. 6 / 12): from ``T`` trials at each of two stimuli ``s +- ds/2`` and ``N`` neurons,
  ``I = ((2T - N - 3) / (2T - 2)) * dmu^T S^-1 dmu / ds^2 - 2N / (T ds^2)`` with ``S`` the pooled covariance.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn


def empirical_fisher_per_sample(model: nn.Module, loss_fn: Callable[[dict], torch.Tensor],
                                samples: Sequence[dict]) -> float:
    """``mean_i sum_theta (d loss_i / d theta)^2`` over ``samples`` (each a batch of one data point).

    Args:
        model: whose trainable parameters the gradient is taken with respect to.
        loss_fn: one sample -> scalar loss (the pretraining objective).
        samples: batches of size 1.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total = 0.0
    for sample in samples:
        grads = torch.autograd.grad(loss_fn(sample), params, allow_unused=True)
        total += float(sum((g.double() ** 2).sum() for g in grads if g is not None))
    return total / max(1, len(samples))


def linear_fisher(r1: np.ndarray, r2: np.ndarray, ds: float, bias_corrected: bool = True) -> float:
    """Linear Fisher information between two stimuli ``ds`` apart from responses ``r1, r2 (T, N)`` (trials x
    neurons, the same T for both). ``bias_corrected``: Kanitscheider et al. (2015); else the plug-in estimate
    (biased upward when N is not << T). Needs ``2T > N + 3``."""
    r1, r2 = np.asarray(r1, float), np.asarray(r2, float)
    if r1.shape != r2.shape:
        raise ValueError(f"r1 {r1.shape} and r2 {r2.shape} must have the same trials x neurons")
    t, n = r1.shape
    if 2 * t <= n + 3:
        raise ValueError(f"{n} neurons need more than {(n + 3) / 2:.0f} trials per stimulus (got {t})")
    dmu = r2.mean(0) - r1.mean(0)
    cov = 0.5 * (np.cov(r1, rowvar=False) + np.cov(r2, rowvar=False))
    cov = np.atleast_2d(cov)
    plug_in = float(dmu @ np.linalg.solve(cov, dmu)) / ds**2
    if not bias_corrected:
        return plug_in
    return (2 * t - n - 3) / (2 * t - 2) * plug_in - 2 * n / (t * ds**2)


def linear_fisher_vs_neurons(responses: np.ndarray, labels: np.ndarray, pair: tuple[int, int], ds: float,
                             neuron_counts: Sequence[int], n_trials: int, n_draws: int = 20, seed: int = 0
                             ) -> np.ndarray:
    """Mean bias-corrected linear Fisher information over ``n_draws`` random neuron subsets (and trial subsets of
    ``n_trials`` per stimulus) for each count in ``neuron_counts``; ``responses (trials, N)``, ``labels (trials,)``.
    NaN where a count is infeasible (too few neurons or trials)."""
    rng = np.random.default_rng(seed)
    a, b = (np.flatnonzero(labels == c) for c in pair)
    out = []
    for n in neuron_counts:
        if n > responses.shape[1] or min(len(a), len(b)) < n_trials or 2 * n_trials <= n + 3:
            out.append(np.nan)
            continue
        vals = []
        for _ in range(n_draws):
            cells = rng.choice(responses.shape[1], n, replace=False)
            ta, tb = rng.choice(a, n_trials, replace=False), rng.choice(b, n_trials, replace=False)
            vals.append(linear_fisher(responses[np.ix_(ta, cells)], responses[np.ix_(tb, cells)], ds))
        out.append(float(np.mean(vals)))
    return np.asarray(out)
