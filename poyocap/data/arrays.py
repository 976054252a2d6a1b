"""Bring your own dF/F: arrays (or one ``.npz`` file) -> a validated :class:`~poyocap.data.recording.Recording`.

::

    rec = recording_from_arrays(
        dff,                                   # (T, N) dF/F, or (N, T) with cells_first=True (Allen's layout)
        rate_hz=30.0,                          # or timestamps=(T,) seconds
        segments=[(0, 10501), (10501, 18106)], # optional [start, stop) frame ranges recorded without a break
        trials={"onset_frame": ..., "direction_deg": ..., "temporal_freq_hz": ...},  # optional, 'blank' allowed
        metadata={"session_id": "527745328", "cre_line": "Cux2-CreERT2", "mouse_id": "...", "area": "VISp",
                  "depth_um": 275, "indicator": "GCaMP6f"},
        cell_ids=[...],                        # optional, default 0..N-1
        movie_frames=None, movie_repeat=None, movie=None,  # optional natural-movie frame table
    )

**Segments.** When ``segments`` are given the time between them is unknown: the timestamps get a gap of
``gap_s`` between segments, and everything downstream treats a gap as a boundary - :meth:`Recording.segment_id`
numbers the contiguous pieces, no window (pretraining, grating, movie) crosses one, and the statistics in
:mod:`poyocap.data.cellstats` never take a difference, lag or correlation across one.

**Trials.** Onsets must increase (an unsorted table is refused: it usually means a misaligned one); blank sweeps
(direction ``'blank'`` / NaN) are dropped and a trial whose stimulus would run past the end of its segment is dropped
too (both counted in one warning).

:func:`load_npz` reads the same arrays from one file with the keys of the Allen sample in ``shared/real`` (see
``docs/architecture.md``): ``dff`` (N, T), ``fs_hz``, optional ``segment_bounds`` (K, 2), ``trial_onset_frame``,
``trial_stimulus_orientation``, ``trial_stimulus_temporal_frequency``, ``cell_specimen_id``, ``meta`` (JSON).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .recording import INHIBITORY_LINES, Recording
TRIAL_DURATION_S = 2.0  # ABO drifting gratings: 2 s on, 1 s grey


def _timestamps(n_t: int, rate_hz: float | None, timestamps: np.ndarray | None,
                segments: Sequence[tuple[int, int]] | None, gap_s: float) -> np.ndarray:
    if timestamps is not None:
        if rate_hz is not None or segments is not None:
            raise ValueError("give timestamps, or rate_hz (with optional segments) - not both")
        return np.asarray(timestamps, dtype=np.float64)
    if rate_hz is None or not np.isfinite(rate_hz) or rate_hz <= 0:
        raise ValueError(f"rate_hz must be a positive number of frames per second, got {rate_hz!r}")
    ts = np.arange(n_t, dtype=np.float64) / rate_hz
    for start, _ in _checked_segments(segments, n_t)[1:]:
        ts[start:] += gap_s  # the true break is unknown: any gap > 1.5 frames marks a boundary
    return ts


def _checked_segments(segments: Sequence[tuple[int, int]] | None, n_t: int) -> list[tuple[int, int]]:
    if segments is None:
        return [(0, n_t)]
    seg = [(int(a), int(b)) for a, b in np.asarray(segments).reshape(-1, 2)]
    if not seg or seg[0][0] != 0 or seg[-1][1] != n_t or any(b <= a for a, b in seg) or any(
            seg[i][1] != seg[i + 1][0] for i in range(len(seg) - 1)):
        raise ValueError(f"segments must be consecutive [start, stop) ranges covering frames 0..{n_t}, got {seg}")
    return seg


def _trial_table(trials: Mapping[str, Any] | None, ts: np.ndarray, segment_id: np.ndarray,
                 duration_s: float) -> tuple[dict[str, np.ndarray], int, int]:
    """The Recording's trial table from onset frames; returns (table, n blank dropped, n crossing a boundary)."""
    empty = {"start": np.zeros(0), "stop": np.zeros(0), "direction_deg": np.zeros(0, np.int64),
             "temporal_freq_hz": np.zeros(0, np.int64)}
    if trials is None:
        return empty, 0, 0
    onset = np.asarray(trials["onset_frame"], dtype=np.int64)
    direction = np.asarray(trials["direction_deg"]).astype(str)
    tf = np.asarray(trials.get("temporal_freq_hz", np.full(len(onset), "1"))).astype(str)
    if not len(onset) == len(direction) == len(tf):
        raise ValueError(f"trial columns differ in length: onset {len(onset)}, direction {len(direction)}, "
                         f"temporal frequency {len(tf)}")
    if len(onset) and (onset.min() < 0 or onset.max() >= len(ts)):
        raise ValueError(f"trial onsets must be frame indices in [0, {len(ts)}), got {onset.min()}..{onset.max()}")
    if (np.diff(onset) <= 0).any():
        k = int(np.flatnonzero(np.diff(onset) <= 0)[0])
        raise ValueError(f"trial onsets must increase (trial {k + 1} at frame {onset[k + 1]} follows frame {onset[k]}): "
                         "is the trial table sorted and aligned with the dF/F?")
    blank = np.isin(np.char.lower(direction), ("blank", "nan", ""))
    keep = ~blank
    try:
        dir_deg = np.where(keep, direction, "0").astype(float).astype(np.int64)
        tf_hz = np.where(keep, tf, "1").astype(float).astype(np.int64)
    except ValueError as err:
        raise ValueError(f"trial directions / temporal frequencies must be numbers or 'blank' ({err})") from None
    n_dur = int(round(duration_s * (1.0 / np.median(np.diff(ts)))))
    end = np.minimum(onset + n_dur, len(ts) - 1)
    crossing = keep & (segment_id[end] != segment_id[onset]) | keep & (onset + n_dur >= len(ts))
    keep &= ~crossing
    start = ts[onset[keep]]
    return ({"start": start, "stop": start + duration_s, "direction_deg": dir_deg[keep],
             "temporal_freq_hz": tf_hz[keep]}, int(blank.sum()), int(crossing.sum()))


def recording_from_arrays(dff: np.ndarray, *, metadata: Mapping[str, Any], rate_hz: float | None = None,
                          timestamps: np.ndarray | None = None, segments: Sequence[tuple[int, int]] | None = None,
                          trials: Mapping[str, Any] | None = None, cell_ids: Sequence[Any] | None = None,
                          cells_first: bool = False, movie_frames: np.ndarray | None = None,
                          movie_repeat: np.ndarray | None = None, movie: np.ndarray | None = None,
                          gap_s: float = 10.0, trial_duration_s: float = TRIAL_DURATION_S,
                          source: str = "user") -> Recording:
    """One :class:`Recording` from arrays (see the module docstring); bad input raises ``ValueError``."""
    dff = np.asarray(dff)
    if dff.ndim != 2:
        raise ValueError(f"dff must be 2-D, got shape {dff.shape}")
    dff = (dff.T if cells_first else dff).astype(np.float32)
    n_t, n = dff.shape
    ts = _timestamps(n_t, rate_hz, timestamps, segments, gap_s)
    if ts.shape != (n_t,):
        raise ValueError(f"{len(ts)} timestamps for {n_t} frames (is dff (T, N)? pass cells_first=True for (N, T))")
    missing = [k for k in ("session_id", "cre_line") if not metadata.get(k)]
    if missing:
        raise ValueError(f"metadata needs {missing}")
    sid = str(metadata["session_id"])
    ids = [f"{sid}/{c}" for c in (cell_ids if cell_ids is not None else range(n))]
    seg_id = Recording.segments_of(ts)
    table, n_blank, n_cross = _trial_table(trials, ts, seg_id, trial_duration_s)
    if n_blank or n_cross:
        warnings.warn(f"session {sid}: dropped {n_blank} blank trial(s) and {n_cross} trial(s) running past the end "
                      "of their segment", stacklevel=2)
    line = str(metadata["cre_line"])
    return Recording(
        dff=dff, timestamps=ts, unit_ids=ids, cre_line=line, mouse_id=str(metadata.get("mouse_id", sid)),
        session_id=sid, depth_um=float(metadata.get("depth_um", 0.0)), area=str(metadata.get("area", "unknown")),
        indicator=str(metadata.get("indicator", "unknown")),
        cell_class=str(metadata.get("cell_class", "inhibitory" if line in INHIBITORY_LINES else "excitatory")),
        grating_trials=table,
        movie_frames=np.full(n_t, -1) if movie_frames is None else np.asarray(movie_frames),
        movie_repeat=np.full(n_t, -1) if movie_repeat is None else np.asarray(movie_repeat),
        movie=movie, source=source,
    )


def load_npz(path: str | Path, **overrides: Any) -> Recording:
    """A Recording from one ``.npz`` with the Allen sample's keys (module docstring); ``overrides`` go to
    :func:`recording_from_arrays` (e.g. ``metadata``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if "dff" not in keys:
            raise ValueError(f"{path}: no 'dff' array (keys: {sorted(keys)})")
        meta = json.loads(str(f["meta"])) if "meta" in keys else {}
        kwargs: dict[str, Any] = {
            "dff": f["dff"], "cells_first": True,
            "rate_hz": float(f["fs_hz"]) if "fs_hz" in keys else meta.get("fs_hz"),
            "segments": f["segment_bounds"] if "segment_bounds" in keys else None,
            "cell_ids": f["cell_specimen_id"].tolist() if "cell_specimen_id" in keys else None,
            "metadata": {"session_id": meta.get("session_id", path.stem), "cre_line": meta.get("cre_line", "unknown"),
                         "mouse_id": meta.get("container_id", meta.get("session_id", path.stem)),
                         "area": meta.get("area", "unknown"), "depth_um": meta.get("imaging_depth_um", 0.0),
                         "indicator": "GCaMP6s" if "6s" in meta.get("reporter", "") else "GCaMP6f"},
        }
        if "trial_onset_frame" in keys:
            kwargs["trials"] = {"onset_frame": f["trial_onset_frame"],
                                "direction_deg": f["trial_stimulus_orientation"],
                                "temporal_freq_hz": f["trial_stimulus_temporal_frequency"]}
    kwargs.update(overrides)
    return recording_from_arrays(**kwargs)


__all__ = ["recording_from_arrays", "load_npz"]
