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
        good = rec.value_mask(per_roi=True)
        x = np.where(good, rec.dff.astype(np.float64), 0.0)  # (T, N); invalid values add nothing
        cond = np.searchsorted(conditions, labels[own])
        sums = np.zeros((len(conditions), rec.n_units))
        counts = np.zeros((len(conditions), rec.n_units))
        length = table.t1[own] - table.t0[own]
        for n in np.unique(length):  # windows of one length at a time: one gather (W, n, N) each
            w = own[length == n]
            frames = table.t0[w][:, None] + np.arange(n)
            np.add.at(sums, cond[length == n], x[frames].sum(1))
            np.add.at(counts, cond[length == n], good[frames].sum(1))
        with np.errstate(invalid="ignore", divide="ignore"):
            rows.append((sums / counts).T)  # (N, C), NaN where never seen
        ids.extend(rec.unit_ids)
    profiles = np.concatenate(rows) if rows else np.zeros((0, len(conditions)))
    return ids, profiles
