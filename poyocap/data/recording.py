"""``Recording``: the one contract every data source returns (one imaging session).

Fields (T frames, N ROIs, F movie frames of H x W pixels)::

    dff            float32 (T, N)   dF/F; NaN values are set to 0 and masked (``valid``, ``roi_valid``)
    timestamps     float64 (T,)     seconds, strictly increasing
    unit_ids       list[str] (N)    globally unique, "<session_id>/<cell>"
    cre_line, mouse_id, session_id, area, indicator, cell_class: str; depth_um: float
    grating_trials dict of arrays (M,): start, stop (s), direction_deg (0..315 step 45), temporal_freq_hz
                   (1, 2, 4, 8, 15); blank sweeps are dropped before they get here
    movie_frames   int64 (T,)       natural-movie frame shown at each timestamp, -1 when no movie
    movie_repeat   int64 (T,)       which repeat of the movie is on screen (-1 when none)
    movie          uint8 (F, H, W) or None

Validation happens on construction. NaN dF/F is repaired by clear rules: a ROI that is NaN in every frame is
dropped (with a warning naming it); a frame where every remaining ROI is NaN is marked invalid in ``valid`` (T,)
and counted in ``n_nan_frames``; a ROI's own NaN values are masked in ``roi_valid`` (T, N) (None when there are
none) - all are set to 0 and excluded from statistics and from the tokens the models see. Timestamps must be in
seconds (a sampling rate outside 0.5-1000 Hz is refused). Every other problem raises ``ValueError`` naming
the session and the field. ``save``/``load`` use one HDF5 file per session, written atomically (temp file +
rename) with a SHA-256 checksum of the arrays; a truncated or corrupt file raises :class:`RecordingFileError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np

GRATING_DIRECTIONS: tuple[int, ...] = (0, 45, 90, 135, 180, 225, 270, 315)
GRATING_TEMPORAL_FREQS: tuple[int, ...] = (1, 2, 4, 8, 15)
CELL_CLASSES: tuple[str, ...] = ("excitatory", "inhibitory")
GRATING_FIELDS: tuple[str, ...] = ("start", "stop", "direction_deg", "temporal_freq_hz")
#: Cell class from each line's biology (the inhibitory-only ablation; arrays without a cell_class).
INHIBITORY_LINES: tuple[str, ...] = ("Sst-IRES-Cre", "Vip-IRES-Cre", "Pvalb-IRES-Cre")
MIN_RATE_HZ, MAX_RATE_HZ = 0.5, 1000.0  # plausible imaging rates (ABO 2-photon: 30 Hz)
FORMAT_VERSION = 2  # 2: files carry their identity (session id + generator / experiment)


class RecordingFileError(IOError):
    """A cached session file is missing, truncated, corrupt, or from another format version."""


@dataclass
class Recording:
    """One imaging session, validated on construction (see module docstring for shapes)."""

    dff: np.ndarray
    timestamps: np.ndarray
    unit_ids: list[str]
    cre_line: str
    mouse_id: str
    session_id: str
    depth_um: float
    area: str
    indicator: str
    cell_class: str
    grating_trials: dict[str, np.ndarray]
    movie_frames: np.ndarray
    movie_repeat: np.ndarray
    movie: np.ndarray | None = None
    source: str = "synthetic"
    valid: np.ndarray = field(default=None)  # type: ignore[assignment]  # bool (T,), filled by validation
    n_nan_frames: int = 0
    roi_valid: np.ndarray | None = None  # bool (T, N): False where one ROI's value was NaN; None = all valid

    # ------------------------------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        """Validate every field (a clear ``ValueError`` naming the session and field) and normalise dtypes."""
        sid = self.session_id or "<no session_id>"

        def bad(field_name: str, why: str) -> ValueError:
            return ValueError(f"session {sid}: field '{field_name}': {why}")

        _check_metadata(self, bad)
        dff = _checked_dff(self.dff, bad)
        n_t, n_units = dff.shape
        ts = _checked_timestamps(self.timestamps, n_t, bad)
        ids = _checked_unit_ids(self.unit_ids, self.session_id, n_units, bad)
        dff, ids, roi_valid = _dropped_nan_rois(dff, ids, self.roi_valid, sid, bad)
        self.grating_trials = _checked_trials(self.grating_trials, ts, bad)
        frames, repeat, self.movie = _checked_movie(self.movie_frames, self.movie_repeat, self.movie, n_t, bad)
        dff, valid, self.roi_valid = _masked_nan_values(dff, self.valid, roi_valid, bad)
        self.n_nan_frames = int((~valid).sum())
        self.dff, self.timestamps, self.unit_ids = dff, ts, ids
        self.movie_frames, self.movie_repeat, self.valid = frames, repeat, valid
        self.depth_um = float(self.depth_um)

    # ------------------------------------------------------------------------------------------ properties
    @property
    def n_frames(self) -> int:
        return int(self.dff.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.dff.shape[1])

    @property
    def sampling_rate_hz(self) -> float:
        return float(1.0 / np.median(np.diff(self.timestamps)))

    @staticmethod
    def segments_of(timestamps: np.ndarray) -> np.ndarray:
        """Contiguous-segment index of every frame ``(T,)``: a step > 1.5 frame intervals starts a new segment
        (recordings assembled from pieces; no window, lag or difference may cross one)."""
        ts = np.asarray(timestamps, dtype=np.float64)
        if len(ts) < 2:
            return np.zeros(len(ts), np.int64)
        d = np.diff(ts)
        return np.r_[0, np.cumsum(d > 1.5 * np.median(d))].astype(np.int64)

    @property
    def segment_id(self) -> np.ndarray:
        """:meth:`segments_of` this recording's timestamps (all 0 for one continuous recording)."""
        return self.segments_of(self.timestamps)

    @property
    def n_trials(self) -> int:
        return int(len(self.grating_trials["start"]))

    def summary(self) -> dict[str, Any]:
        """One row for the observatory table."""
        return {
            "session_id": self.session_id, "cre_line": self.cre_line, "mouse_id": self.mouse_id,
            "area": self.area, "depth_um": self.depth_um, "indicator": self.indicator, "cell_class": self.cell_class,
            "n_units": self.n_units, "n_frames": self.n_frames, "duration_s": round(self.n_frames / 30.0, 1),
            "n_grating_trials": self.n_trials, "n_movie_repeats": int(self.movie_repeat.max() + 1),
            "n_nan_frames": self.n_nan_frames, "source": self.source,
        }

    # ------------------------------------------------------------------------------------------- file I/O
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "dff": self.dff, "timestamps": self.timestamps, "valid": self.valid,
            "movie_frames": self.movie_frames, "movie_repeat": self.movie_repeat,
            "unit_ids": np.array(self.unit_ids, dtype=h5py.string_dtype()),
        }
        for key in GRATING_FIELDS:
            arrays[f"grating_trials/{key}"] = self.grating_trials[key]
        if self.movie is not None:
            arrays["movie"] = self.movie
        if self.roi_valid is not None:
            arrays["roi_valid"] = self.roi_valid
        return arrays

    def value_mask(self, per_roi: bool = False) -> np.ndarray:
        """Which values of ``dff`` are real: ``valid`` (T,) when no ROI has NaN values of its own, else (T, N);
        ``per_roi=True``: always (T, N) (a read-only broadcast view when every ROI shares the frame mask)."""
        if self.roi_valid is not None:
            return self.valid[:, None] & self.roi_valid
        return np.broadcast_to(self.valid[:, None], self.dff.shape) if per_roi else self.valid

    def _attrs(self) -> dict[str, Any]:
        return {
            "cre_line": self.cre_line, "mouse_id": self.mouse_id, "session_id": self.session_id,
            "depth_um": self.depth_um, "area": self.area, "indicator": self.indicator,
            "cell_class": self.cell_class, "source": self.source, "format_version": FORMAT_VERSION,
        }

    def save(self, path: str | Path, identity: dict[str, Any] | None = None) -> Path:
        """Write one HDF5 file atomically (temp file in the same directory, fsync, rename) with a checksum.

        ``identity`` (JSON-ready, e.g. the generator digest) is stored beside the session id and checked by
        :meth:`load`, so a valid file of another session or another generator is never taken for this one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            arrays = self._arrays()
            with h5py.File(tmp, "w") as f:
                for key, arr in arrays.items():
                    f.create_dataset(key, data=arr)
                attrs = {**self._attrs(), "identity": json.dumps(identity or {}, sort_keys=True)}
                for key, value in attrs.items():
                    f.attrs[key] = value
                f.attrs["checksum"] = _checksum(arrays, attrs)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, session_id: str | None = None,
             identity: dict[str, Any] | None = None) -> "Recording":
        """Read a file written by :meth:`save`; raises :class:`RecordingFileError` if it is not intact, or if it
        holds another session than ``session_id`` or was saved with another ``identity`` (when given)."""
        path = Path(path)
        if not path.exists():
            raise RecordingFileError(f"{path}: no such file")
        try:
            with h5py.File(path, "r") as f:
                attrs = {k: f.attrs[k] for k in f.attrs}
                arrays = {}
                for key in ("dff", "timestamps", "valid", "movie_frames", "movie_repeat", "unit_ids", "movie", "roi_valid"):
                    if key in f:
                        arrays[key] = f[key][()]
                for key in GRATING_FIELDS:
                    arrays[f"grating_trials/{key}"] = f[f"grating_trials/{key}"][()]
        except (OSError, KeyError, ValueError) as err:
            raise RecordingFileError(f"{path}: unreadable or truncated HDF5 ({err})") from err
        if attrs.get("format_version") != FORMAT_VERSION:
            raise RecordingFileError(f"{path}: format version {attrs.get('format_version')} != {FORMAT_VERSION}")
        stored = attrs.pop("checksum", None)
        arrays["unit_ids"] = np.array([u.decode() if isinstance(u, bytes) else str(u) for u in arrays["unit_ids"]],
                                      dtype=h5py.string_dtype())
        meta = {k: (v.item() if hasattr(v, "item") else v) for k, v in attrs.items()}
        if stored is None or _checksum(arrays, meta) != stored:
            raise RecordingFileError(f"{path}: checksum mismatch (corrupt file)")
        if session_id is not None and meta["session_id"] != session_id:
            raise RecordingFileError(f"{path}: holds session {meta['session_id']!r}, expected {session_id!r}")
        if identity is not None and json.loads(meta.get("identity", "{}")) != json.loads(json.dumps(identity)):
            raise RecordingFileError(f"{path}: made by {meta.get('identity')}, expected {json.dumps(identity)}")
        return cls(
            dff=arrays["dff"], timestamps=arrays["timestamps"], unit_ids=[str(u) for u in arrays["unit_ids"]],
            cre_line=meta["cre_line"], mouse_id=meta["mouse_id"], session_id=meta["session_id"],
            depth_um=meta["depth_um"], area=meta["area"], indicator=meta["indicator"],
            cell_class=meta["cell_class"],
            grating_trials={k: arrays[f"grating_trials/{k}"] for k in GRATING_FIELDS},
            movie_frames=arrays["movie_frames"], movie_repeat=arrays["movie_repeat"], movie=arrays.get("movie"),
            source=meta["source"], valid=arrays["valid"], roi_valid=arrays.get("roi_valid"),
        )


def _checksum(arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        arr = arrays[key]
        h.update(key.encode())
        if arr.dtype.kind in "OSU":
            h.update("\x00".join(str(u.decode() if isinstance(u, bytes) else u) for u in arr.tolist()).encode())
        else:
            a = np.ascontiguousarray(arr)
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(a.tobytes())
    for key in sorted(attrs):
        if key != "checksum":
            h.update(f"{key}={attrs[key]}".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- validation
# Each helper checks one group of Recording fields; ``bad(field, why)`` builds the ValueError.
Bad = Callable[[str, str], ValueError]


def _check_metadata(rec: "Recording", bad: Bad) -> None:
    if not isinstance(rec.session_id, str) or not rec.session_id:
        raise bad("session_id", "must be a non-empty string")
    for name in ("cre_line", "mouse_id", "area", "indicator"):
        if not isinstance(getattr(rec, name), str) or not getattr(rec, name):
            raise bad(name, "must be a non-empty string")
    if rec.cell_class not in CELL_CLASSES:
        raise bad("cell_class", f"must be one of {CELL_CLASSES}, got {rec.cell_class!r}")
    if not np.isfinite(rec.depth_um) or rec.depth_um < 0:
        raise bad("depth_um", f"must be a non-negative finite depth, got {rec.depth_um}")


def _checked_dff(dff_in: np.ndarray, bad: Bad) -> np.ndarray:
    dff = np.asarray(dff_in)
    if dff.ndim != 2:
        raise bad("dff", f"must be 2-D (T, N), got shape {dff.shape}")
    if dff.shape[0] == 0 or dff.shape[1] == 0:
        raise bad("dff", f"empty session (shape {dff.shape})")
    if not np.issubdtype(dff.dtype, np.floating):
        raise bad("dff", f"must be floating point, got {dff.dtype}")
    dff = dff.astype(np.float32, copy=False)
    if np.isinf(dff).any():
        raise bad("dff", "contains +-inf")
    return dff


def _checked_timestamps(timestamps: np.ndarray, n_t: int, bad: Bad) -> np.ndarray:
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.shape != (n_t,):
        raise bad("timestamps", f"shape {ts.shape} does not match dff's T={n_t}")
    if not np.isfinite(ts).all():
        raise bad("timestamps", "contains NaN/inf")
    if n_t > 1 and not (np.diff(ts) > 0).all():
        raise bad("timestamps", "must be strictly increasing")
    if n_t > 1:
        rate = 1.0 / float(np.median(np.diff(ts)))
        if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
            hint = " (milliseconds? timestamps must be in seconds)" if rate < MIN_RATE_HZ else ""
            raise bad("timestamps", f"imply a sampling rate of {rate:.3g} Hz, outside the plausible "
                                    f"{MIN_RATE_HZ}-{MAX_RATE_HZ} Hz{hint}")
    return ts


def _checked_unit_ids(unit_ids: Sequence[str], session_id: str, n_units: int, bad: Bad) -> list[str]:
    ids = list(unit_ids)
    if len(ids) != n_units:
        raise bad("unit_ids", f"{len(ids)} ids for {n_units} ROIs")
    if len(set(ids)) != len(ids):
        dup = sorted({u for u in ids if ids.count(u) > 1})[:3]
        raise bad("unit_ids", f"duplicated ids, e.g. {dup}")
    if not all(isinstance(u, str) and u.startswith(f"{session_id}/") for u in ids):
        raise bad("unit_ids", "every id must be '<session_id>/<cell>' (globally unique)")
    return ids


def _checked_trials(grating_trials: dict | None, ts: np.ndarray, bad: Bad) -> dict[str, np.ndarray]:
    trials = {k: np.asarray(v) for k, v in (grating_trials or {}).items()}
    missing = [k for k in GRATING_FIELDS if k not in trials]
    if missing:
        raise bad("grating_trials", f"missing columns {missing}")
    if len({len(trials[k]) for k in GRATING_FIELDS}) != 1:
        raise bad("grating_trials", "columns have different lengths")
    start = trials["start"].astype(np.float64)
    stop = trials["stop"].astype(np.float64)
    if (stop <= start).any():
        raise bad("grating_trials", "every trial needs stop > start")
    if len(start) and (start.min() < ts[0] - 1e-6 or stop.max() > ts[-1] + 1.0):
        raise bad("grating_trials", "trials lie outside the recording")
    direction = trials["direction_deg"].astype(np.float64)
    if np.isnan(direction).any():
        raise bad("grating_trials", "blank sweeps (NaN direction) must be dropped before construction")
    if not np.isin(direction, GRATING_DIRECTIONS).all():
        raise bad("grating_trials", f"direction_deg must be in {GRATING_DIRECTIONS}")
    if not np.isin(trials["temporal_freq_hz"].astype(np.float64), GRATING_TEMPORAL_FREQS).all():
        raise bad("grating_trials", f"temporal_freq_hz must be in {GRATING_TEMPORAL_FREQS}")
    return {"start": start, "stop": stop, "direction_deg": direction.astype(np.int64),
            "temporal_freq_hz": trials["temporal_freq_hz"].astype(np.int64)}


def _checked_movie(movie_frames: np.ndarray, movie_repeat: np.ndarray, movie: np.ndarray | None, n_t: int,
                   bad: Bad) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    frames, repeat = np.asarray(movie_frames), np.asarray(movie_repeat)
    if frames.shape != (n_t,) or repeat.shape != (n_t,):
        raise bad("movie_frames", f"movie_frames/movie_repeat must have shape ({n_t},)")
    frames, repeat = frames.astype(np.int64), repeat.astype(np.int64)
    if (frames < -1).any():
        raise bad("movie_frames", "frame index must be >= -1")
    if ((frames >= 0) != (repeat >= 0)).any():
        raise bad("movie_repeat", "must be >= 0 exactly where a movie frame is shown")
    if movie is not None:
        movie = np.asarray(movie)
        if movie.ndim != 3 or movie.dtype != np.uint8:
            raise bad("movie", f"must be uint8 (F, H, W), got {movie.dtype} {movie.shape}")
        if frames.max(initial=-1) >= movie.shape[0]:
            raise bad("movie_frames", f"index {frames.max()} beyond the movie's {movie.shape[0]} frames")
    elif (frames >= 0).any():
        raise bad("movie", "movie_frames reference a movie but movie is None")
    return frames, repeat, movie


def _dropped_nan_rois(dff: np.ndarray, ids: list[str], roi_valid: np.ndarray | None, sid: str, bad: Bad
                      ) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Drop the ROIs whose dF/F is NaN in every frame, with a warning that names them."""
    dead = np.isnan(dff).all(axis=0)
    if dead.all():
        raise bad("dff", "every ROI is NaN in every frame")
    if roi_valid is not None and np.asarray(roi_valid).shape != dff.shape:
        raise bad("roi_valid", f"must have dff's shape {dff.shape}")
    if not dead.any():
        return dff, ids, roi_valid
    names = [u for u, d in zip(ids, dead) if d]
    warnings.warn(f"session {sid}: dropping {len(names)} ROI(s) whose dF/F is NaN in every frame: "
                  f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}", stacklevel=4)
    keep = ~dead
    return dff[:, keep], [u for u, k in zip(ids, keep) if k], None if roi_valid is None else roi_valid[:, keep]


def _masked_nan_values(dff: np.ndarray, valid_in: np.ndarray | None, roi_valid_in: np.ndarray | None, bad: Bad
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """NaN values set to 0 and masked: frames where every ROI is NaN in ``valid``, a ROI's own NaN values in
    ``roi_valid`` (None when there are none)."""
    n_t = dff.shape[0]
    nan = np.isnan(dff)
    nan_rows = nan.all(axis=1)
    if nan_rows.all():
        raise bad("dff", "every frame is NaN")
    valid = np.ones(n_t, dtype=bool) if valid_in is None else np.asarray(valid_in, dtype=bool).copy()
    if valid.shape != (n_t,):
        raise bad("valid", f"must have shape ({n_t},)")
    valid &= ~nan_rows
    roi_valid = None if roi_valid_in is None else np.asarray(roi_valid_in, dtype=bool).copy()
    own = nan & ~nan_rows[:, None]
    if own.any():
        roi_valid = ~own if roi_valid is None else roi_valid & ~own
    if nan.any():
        dff = dff.copy()
        dff[nan] = 0.0
    return dff, valid, roi_valid
