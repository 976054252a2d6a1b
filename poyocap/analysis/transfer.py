"""Transfer mechanism (the paper: encoder weights change ~0.18 % in fine-tuning, readout bias x12.4): relative weight
change per module, linear CKA between representations."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


def relative_change_per_module(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor],
                               depth: int = 1) -> dict[str, float]:
    """``||after - before|| / ||before||`` over the parameters shared by both state dicts, grouped by the first
    ``depth`` components of their names (``cross``, ``blocks``, ...); unit embeddings of new units are left out
    (rows beyond ``before``'s)."""
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for name, b in before.items():
        if name not in after or not torch.is_floating_point(b):
            continue
        a = after[name]
        if a.shape != b.shape:  # grown tables (new units): compare the old rows
            a = a[: b.shape[0]]
        group = ".".join(name.split(".")[:depth])
        num[group] = num.get(group, 0.0) + float(((a.double() - b.double()) ** 2).sum())
        den[group] = den.get(group, 0.0) + float((b.double() ** 2).sum())
    return {g: float(np.sqrt(num[g] / den[g])) if den[g] > 0 else float("nan") for g in sorted(num)}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between representations ``x (n, p)`` and ``y (n, q)`` of the same n items:
    1 for identical representations up to rotation and isotropic scale, ~0 for unrelated ones."""
    x = np.asarray(x, float) - np.mean(x, 0)
    y = np.asarray(y, float) - np.mean(y, 0)
    hsic = np.linalg.norm(y.T @ x, "fro") ** 2
    return float(hsic / (np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")))
