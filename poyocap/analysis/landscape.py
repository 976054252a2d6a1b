"""Loss landscapes and their roughness (the paper: sigma_L 14.85 predictable vs 2048 unpredictable, undefined).

Two planes through the trained parameters ``theta*``:
- :func:`trajectory_plane` - the authors' figure: the first two principal components of the training trajectory
  (weight snapshots minus the final weights), as in Li et al. (2018, section 7);
- :func:`filter_normalised_directions` - Li et al. (2018): random Gaussian directions with every filter (row of a
  weight matrix; whole vector for biases and norms, which are zeroed as in the paper) rescaled to the norm of the
  matching filter of ``theta*``.
:func:`loss_surface` evaluates ``L(theta* + a d1 + b d2)`` on a grid. :func:`roughness` is our definition of
sigma_L: the standard deviation of the residual after a least-squares quadratic fit in (a, b) - zero for any convex or
concave quadratic bowl, large for a rugged surface - also reported divided by the surface's range (scale-free).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

Params = list[torch.Tensor]


def flat(params: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in params])


def unflat(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> Params:
    out, i = [], 0
    for p in like:
        out.append(vector[i:i + p.numel()].view_as(p).to(p.dtype))
        i += p.numel()
    return out


def trajectory_plane(snapshots: Sequence[Sequence[torch.Tensor]], final: Sequence[torch.Tensor]
                     ) -> tuple[Params, Params, np.ndarray]:
    """First two principal directions of ``snapshot - final`` over the trajectory, and each snapshot's coordinates
    ``(n, 2)`` in that plane (the path drawn on the contour plot)."""
    end = flat(final)
    m = torch.stack([flat(s) - end for s in snapshots])  # (n, P)
    _, _, vh = torch.linalg.svd(m - m.mean(0), full_matrices=False)
    d1, d2 = vh[0], vh[1] if vh.shape[0] > 1 else torch.zeros_like(vh[0])
    coords = torch.stack([m @ d1, m @ d2], dim=1).numpy()
    return unflat(d1, final), unflat(d2, final), coords


def filter_normalised_directions(params: Sequence[torch.Tensor], seed: int = 0) -> tuple[Params, Params]:
    """Two random directions, filter-normalised to ``params`` (Li et al. 2018); 1-D tensors get zero direction."""
    g = torch.Generator().manual_seed(seed)
    dirs = []
    for _ in range(2):
        d = []
        for p in params:
            r = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.dim() <= 1:
                r.zero_()
            else:
                pr, rr = p.detach().double().reshape(p.shape[0], -1), r.reshape(p.shape[0], -1)
                rr *= pr.norm(dim=1, keepdim=True) / rr.norm(dim=1, keepdim=True).clamp_min(1e-12)
            d.append(r.to(p.dtype))
        dirs.append(d)
    return dirs[0], dirs[1]


@torch.no_grad()
def loss_surface(model: nn.Module, loss_fn: Callable[[], float], d1: Params, d2: Params,
                 alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """``L(theta* + a d1 + b d2)`` on the grid ``(len(alphas), len(betas))``; the model's parameters (those with
    ``requires_grad``, in order) are restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    base = [p.detach().clone() for p in params]
    out = np.zeros((len(alphas), len(betas)))
    try:
        for i, a in enumerate(alphas):
            for j, b in enumerate(betas):
                for p, p0, u, v in zip(params, base, d1, d2):
                    p.copy_(p0 + float(a) * u + float(b) * v)
                out[i, j] = loss_fn()
    finally:
        for p, p0 in zip(params, base):
            p.copy_(p0)
    return out


def roughness(surface: np.ndarray, alphas: np.ndarray, betas: np.ndarray) -> dict[str, float]:
    """sigma_L: std of the residual of a quadratic fit ``c0 + c1 a + c2 b + c3 a^2 + c4 ab + c5 b^2`` to
    ``surface``, and that divided by the surface's range (max - min)."""
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    x = np.stack([np.ones_like(a), a, b, a * a, a * b, b * b], axis=-1).reshape(-1, 6)
    y = surface.reshape(-1)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    span = float(y.max() - y.min())
    return {"sigma": float(resid.std()), "sigma_rel": float(resid.std() / span) if span > 0 else 0.0,
            "range": span}
