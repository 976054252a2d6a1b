"""Torch Datasets of context windows, and the collate function that pads them into token batches.

A *window* is ``[t0, t1)`` frames of one session. Its tokens are one per (frame, ROI) of at most
``max_units`` ROIs (unit dropout as POYO+: a random subset per draw in training, a fixed subset at
evaluation). Tokens are kept as a (frame x unit) *grid*, which the encoder exploits (its cross-attention
never materialises per-token embeddings). A batch (after :func:`collate`) carries::

    values      float32 (B, T, U)  dF/F of each token (frame t, unit u)
    unit_index  int64   (B, U)     index into the UnitVocab (the model's unit-embedding table)
    times       float32 (B, T)     frame time in seconds relative to the window start
    mask        bool    (B, T, U)  True for real tokens, False for padding or NaN frames (torch_brain's
                                   keep-mask convention)
    session_index int64 (B,)     row of the window's session in ``UnitVocab.sessions`` (session embeddings)
    + the task's targets: ``direction`` (B,) (-1 = no grating trial), ``frame`` (B,), ``image`` (B, H, W) ...

:func:`flatten_tokens` gives the POYO-style flat token lists ``(B, K = T*U)`` when a model wants them.

Windows are pre-sliced in memory (the dF/F arrays are shared, not copied); at paper scale the sessions
would be read lazily from the per-session HDF5 cache instead (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .recording import Recording
from .splits import SPLIT_CODE, SessionSplit


class UnitVocab:
    """Global unit-id -> embedding-row mapping; new units (fine-tuning) are appended, old rows never move."""

    def __init__(self, unit_ids: Sequence[str] = ()) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.sessions: dict[str, int] = {}  # session id -> row of a decoder's session-embedding table
        self.extend(unit_ids)

    def session_rows(self, session_ids: Sequence[str]) -> np.ndarray:
        """Rows of ``session_ids`` in the session table (unknown sessions are appended, in order)."""
        for sid in session_ids:
            self.sessions.setdefault(sid, len(self.sessions))
        return np.array([self.sessions[s] for s in session_ids], dtype=np.int64)

    def extend(self, unit_ids: Sequence[str]) -> list[int]:
        """Register ``unit_ids`` (duplicates of known ids are ignored); returns their rows."""
        rows = []
        for u in unit_ids:
            if u not in self.index:
                self.index[u] = len(self.ids)
                self.ids.append(u)
            rows.append(self.index[u])
        return rows

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, unit_id: str) -> bool:
        return unit_id in self.index

    def lookup(self, unit_ids: Sequence[str]) -> np.ndarray:
        missing = [u for u in unit_ids if u not in self.index]
        if missing:
            raise KeyError(f"{len(missing)} units not in the vocabulary, e.g. {missing[:3]}")
        return np.array([self.index[u] for u in unit_ids], dtype=np.int64)


@dataclass
class WindowTable:
    """Flat table of windows: session position, first frame, end frame (exclusive), split, targets."""

    session: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    split: np.ndarray
    direction: np.ndarray  # direction class 0..7, or -1
    frame: np.ndarray  # movie frame index of the decoded frame, or -1
    frame_time: np.ndarray  # time (s, relative to window start) at which the decoded frame was shown

    def select(self, mask: np.ndarray) -> "WindowTable":
        return WindowTable(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return int(len(self.t0))


def _direction_class(direction_deg: np.ndarray) -> np.ndarray:
    return (np.asarray(direction_deg) // 45).astype(np.int64)


def pretrain_windows(
    recordings: Sequence[Recording], splits: Sequence[SessionSplit], window_s: float, stride_s: float,
    min_overlap_s: float = 0.5,
) -> WindowTable:
    """Windows tiling each session with ``stride_s``; the grating label is set when a trial's stimulus
    covers at least ``min_overlap_s`` of the window (else -1, so the CE term skips it)."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in WindowTable.__dataclass_fields__}
    for si, (rec, sp) in enumerate(zip(recordings, splits)):
        fps = rec.sampling_rate_hz
        length, stride = int(round(window_s * fps)), max(1, int(round(stride_s * fps)))
        t0 = np.arange(0, rec.n_frames - length + 1, stride)
        t1 = t0 + length
        direction = np.full(len(t0), -1, np.int64)
        start_f = np.searchsorted(rec.timestamps, rec.grating_trials["start"])
        stop_f = np.searchsorted(rec.timestamps, rec.grating_trials["stop"])
        best = np.zeros(len(t0))
        for a, b, d in zip(start_f, stop_f, _direction_class(rec.grating_trials["direction_deg"])):
            overlap = (np.minimum(t1, b) - np.maximum(t0, a)) / fps
            better = (overlap >= min_overlap_s) & (overlap > best)
            direction[better] = d
            best = np.where(better, overlap, best)
        _append(cols, si, t0, t1, sp.window_splits(t0, t1), direction, -1, 0.0, rec)
    return _table(cols)


def grating_windows(
    recordings: Sequence[Recording], splits: Sequence[SessionSplit], window_s: float, offset_s: float = 0.0,
) -> WindowTable:
    """One window per grating trial: ``[start + offset, start + offset + window_s)``."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in WindowTable.__dataclass_fields__}
    for si, (rec, sp) in enumerate(zip(recordings, splits)):
        fps = rec.sampling_rate_hz
        start_f = np.searchsorted(rec.timestamps, rec.grating_trials["start"] + offset_s)
        t1 = np.minimum(start_f + int(round(window_s * fps)), rec.n_frames)
        _append(cols, si, start_f, t1, sp.window_splits(start_f, t1),
                _direction_class(rec.grating_trials["direction_deg"]), -1, 0.0, rec)
    return _table(cols)


def movie_windows(
    recordings: Sequence[Recording], splits: Sequence[SessionSplit], window_s: float, lag_s: float,
) -> WindowTable:
    """One window per movie frame shown: it ends ``lag_s`` after the frame's onset (calcium lags)."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in WindowTable.__dataclass_fields__}
    for si, (rec, sp) in enumerate(zip(recordings, splits)):
        fps = rec.sampling_rate_hz
        onset = np.flatnonzero((rec.movie_frames >= 0) & np.r_[True, np.diff(rec.movie_frames) != 0])
        length, lag = max(1, int(round(window_s * fps))), int(round(lag_s * fps))
        t1 = onset + lag + 1
        t0 = t1 - length
        ok = (t0 >= 0) & (t1 <= rec.n_frames)
        onset, t0, t1 = onset[ok], t0[ok], t1[ok]
        # the window's split is the split of its own frame; it must not see another split's stimulus
        split = sp.window_splits(t0, t1)
        own = sp.stim_label[onset]
        split = np.where(split == own, split, -2)
        frame_time = (onset - t0) / fps
        _append(cols, si, t0, t1, split, -1, rec.movie_frames[onset], frame_time, rec)
    return _table(cols)


def _append(cols, si, t0, t1, split, direction, frame, frame_time, rec) -> None:  # noqa: ANN001
    n = len(t0)
    seg = rec.segment_id
    if n and seg[-1] > 0:  # a window that spans a gap between recorded segments is dropped (split -2)
        t0a, t1a = np.asarray(t0, np.int64), np.asarray(t1, np.int64)
        split = np.where(seg[t0a] == seg[np.maximum(t1a - 1, t0a)], split, -2)
    cols["session"].append(np.full(n, si, np.int64))
    cols["t0"].append(np.asarray(t0, np.int64))
    cols["t1"].append(np.asarray(t1, np.int64))
    cols["split"].append(np.asarray(split, np.int64))
    cols["direction"].append(np.broadcast_to(np.asarray(direction, np.int64), (n,)).copy())
    cols["frame"].append(np.broadcast_to(np.asarray(frame, np.int64), (n,)).copy())
    cols["frame_time"].append(np.broadcast_to(np.asarray(frame_time, np.float64), (n,)).copy())


def _table(cols: dict[str, list[np.ndarray]]) -> WindowTable:
    return WindowTable(**{k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()})


class WindowDataset(Dataset):
    """Token windows of one split.

    Args:
        recordings: the sessions (their dF/F is shared, not copied).
        table: windows from :func:`pretrain_windows`, :func:`grating_windows` or :func:`movie_windows`.
        split: ``train`` | ``val`` | ``test`` | ``novel``; windows of other or mixed splits are excluded.
        vocab: unit vocabulary; every unit of ``recordings`` must be in it.
        max_units: unit dropout cap per window.
        train: random unit subsets per draw (True) or a fixed subset per window (False).
        units: optional allow-list of unit ids (label-free pretraining on predictable neurons only).
        with_images: also return the decoded movie frame as float32 (H, W) in [0, 1].
        normalize: z-score each ROI's dF/F with its mean and SD over the frames of ``table``'s *training* windows
            of that session (all frames when it has none), so every split is scaled by training statistics only.
    """

    def __init__(
        self,
        recordings: Sequence[Recording],
        table: WindowTable,
        split: str,
        vocab: UnitVocab,
        max_units: int,
        train: bool = False,
        units: set[str] | frozenset[str] | None = None,
        with_images: bool = False,
        seed: int = 0,
        normalize: bool = False,
    ) -> None:
        if split not in SPLIT_CODE:
            raise ValueError(f"split must be one of {tuple(SPLIT_CODE)}, got {split!r}")
        if max_units < 1:
            raise ValueError("max_units must be >= 1")
        self.recordings = list(recordings)
        self.table = table.select(table.split == SPLIT_CODE[split])
        self.max_units = max_units
        self.train = train
        self.with_images = with_images
        self.seed = seed
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        for rec in self.recordings:
            cols = np.arange(rec.n_units) if units is None else np.flatnonzero([u in units for u in rec.unit_ids])
            self.cols.append(cols)
            self.rows.append(vocab.lookup([rec.unit_ids[c] for c in cols]) if len(cols) else np.zeros(0, np.int64))
        self.session_index = vocab.session_rows([r.session_id for r in self.recordings])
        self.norm = [training_stats(r, table, si, c) for si, (r, c) in enumerate(zip(self.recordings, self.cols))
                     ] if normalize else None
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.table)

    def set_epoch(self, epoch: int) -> None:
        """New unit subsets each epoch in training mode (deterministic given seed and epoch)."""
        self.epoch = epoch

    def _units(self, idx: int, n_avail: int) -> np.ndarray:
        k = min(self.max_units, n_avail)
        if n_avail <= k:
            return np.arange(n_avail)
        rng = np.random.default_rng([self.seed, self.epoch if self.train else 0, idx])
        return np.sort(rng.choice(n_avail, size=k, replace=False))

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        s = int(self.table.session[idx])
        t0, t1 = int(self.table.t0[idx]), int(self.table.t1[idx])
        rec = self.recordings[s]
        sel = self._units(idx, len(self.cols[s]))
        cols = self.cols[s][sel]
        vals = rec.dff[t0:t1][:, cols]  # (L, U)
        if self.norm is not None:
            mu, sd = self.norm[s]
            vals = (vals - mu[sel]) / sd[sel]
        mask = np.repeat(rec.valid[t0:t1, None], len(cols), axis=1)
        if rec.roi_valid is not None:  # this ROI's own NaN values are not tokens either
            mask &= rec.roi_valid[t0:t1][:, cols]
        times = (rec.timestamps[t0:t1] - rec.timestamps[t0]).astype(np.float32)
        item = {
            "values": torch.from_numpy(np.ascontiguousarray(vals, dtype=np.float32)),
            "unit_index": torch.from_numpy(self.rows[s][sel]),
            "times": torch.from_numpy(times),
            "mask": torch.from_numpy(mask),
            "direction": torch.tensor(int(self.table.direction[idx])),
            "frame": torch.tensor(int(self.table.frame[idx])),
            "session_index": torch.tensor(int(self.session_index[s])),
            "frame_time": torch.tensor(float(self.table.frame_time[idx]), dtype=torch.float32),
            "window_s": torch.tensor(float((t1 - t0) / rec.sampling_rate_hz), dtype=torch.float32),
        }
        if self.with_images:
            frame = int(self.table.frame[idx])
            if rec.movie is None or frame < 0:
                raise ValueError(f"window {idx} of session {rec.session_id} has no movie frame")
            item["image"] = torch.from_numpy(rec.movie[frame].astype(np.float32) / 255.0)
        return item


def training_stats(rec: Recording, table: WindowTable, session: int, cols: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-ROI mean and SD ``(len(cols),)`` of ``rec``'s dF/F over the frames covered by ``table``'s training
    windows of ``session`` (every frame when there are none); invalid values are left out; SD floored at 1e-6."""
    own = (table.session == session) & (table.split == SPLIT_CODE["train"])
    cover = np.zeros(rec.n_frames + 1, np.int64)
    np.add.at(cover, table.t0[own], 1)
    np.add.at(cover, table.t1[own], -1)
    frames = np.cumsum(cover[:-1]) > 0
    if not frames.any():
        frames[:] = True
    x = rec.dff[frames][:, cols].astype(np.float64)
    x[~rec.value_mask(per_roi=True)[frames][:, cols]] = np.nan
    mu, sd = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    return np.nan_to_num(mu).astype(np.float32), np.maximum(np.nan_to_num(sd, nan=1.0), 1e-6).astype(np.float32)


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad frames and units to the batch maximum; padding has ``mask = False``, value 0, unit 0."""
    t_max = max(int(it["values"].shape[0]) for it in items)
    u_max = max(int(it["values"].shape[1]) for it in items)
    b = len(items)
    out = {
        "values": torch.zeros((b, t_max, u_max), dtype=torch.float32),
        "unit_index": torch.zeros((b, u_max), dtype=torch.int64),
        "times": torch.zeros((b, t_max), dtype=torch.float32),
        "mask": torch.zeros((b, t_max, u_max), dtype=torch.bool),
    }
    for i, it in enumerate(items):
        n_t, n_u = it["values"].shape
        out["values"][i, :n_t, :n_u] = it["values"]
        out["unit_index"][i, :n_u] = it["unit_index"]
        out["times"][i, :n_t] = it["times"]
        out["mask"][i, :n_t, :n_u] = it["mask"]
    for key in items[0]:
        if key not in out:
            out[key] = torch.stack([it[key] for it in items])
    return out


def flatten_tokens(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Grid batch -> POYO-style flat tokens: values, unit_index, times, mask each ``(B, K = T*U)``."""
    b, n_t, n_u = batch["values"].shape
    return {
        "values": batch["values"].reshape(b, -1),
        "unit_index": batch["unit_index"][:, None, :].expand(b, n_t, n_u).reshape(b, -1),
        "times": batch["times"][:, :, None].expand(b, n_t, n_u).reshape(b, -1),
        "mask": batch["mask"].reshape(b, -1),
    }

