"""Per-unit stimulus-response profiles from *training* windows only (for data-informed unit embeddings).

A unit's profile is its mean dF/F over a window, averaged over the training windows of each stimulus condition
(movie frame index, or grating direction class). Every session of a task sees the same stimulus set, so profiles
are comparable across sessions: units that respond alike get alike profiles, whichever mouse they come from.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .recording import Recording
from .splits import SPLIT_CODE
from .windows import WindowTable


def response_profiles(recordings: Sequence[Recording], table: WindowTable, condition: str
                      ) -> tuple[list[str], np.ndarray]:
    """Unit ids and their profiles ``(n_units, n_conditions)`` from ``table``'s training windows.

    Args:
        recordings: the sessions ``table`` indexes (``table.session`` is a position in this list).
        table: task windows; only ``split == train`` rows are used.
        condition: ``"frame"`` (movie frame index) or ``"direction"`` (grating direction class).
    Conditions a session never shows in training are NaN in its units' rows; a session without training windows
    contributes all-NaN rows (the caller keeps the random initialisation for them).
    """
    if condition not in ("frame", "direction"):
        raise ValueError(f"condition must be 'frame' or 'direction', got {condition!r}")
    labels = getattr(table, condition)
    train = (table.split == SPLIT_CODE["train"]) & (labels >= 0)
    conditions = np.unique(labels[train])
    ids: list[str] = []
    rows: list[np.ndarray] = []
    for si, rec in enumerate(recordings):
        own = np.flatnonzero(train & (table.session == si))
        sums = np.zeros((len(conditions), rec.n_units))
        counts = np.zeros((len(conditions), rec.n_units))
        ok = rec.value_mask()
        for i in own:
            t0, t1 = int(table.t0[i]), int(table.t1[i])
            x = rec.dff[t0:t1].astype(np.float64)
            good = ok[t0:t1] if ok.ndim == 2 else np.repeat(ok[t0:t1, None], rec.n_units, axis=1)
            c = np.searchsorted(conditions, labels[i])
            sums[c] += np.where(good, x, 0.0).sum(0)
            counts[c] += good.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rows.append((sums / counts).T)  # (N, C), NaN where never seen
        ids.extend(rec.unit_ids)
    profiles = np.concatenate(rows) if rows else np.zeros((0, len(conditions)))
    return ids, profiles
