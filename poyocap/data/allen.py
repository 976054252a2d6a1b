"""AllenObservatory: the real Allen Brain Observatory (Visual Coding 2-photon) through ``allensdk``.

Two layers, so that the part that reads files is tested on our offline machines:

- :func:`read_nwb` turns one local NWB 1.x file into a :class:`Recording` with ``h5py`` only, using the
  released files' layout (docs/architecture.md, "Reference numbers"):
  ``processing/brain_observatory_pipeline/DfOverF/imaging_plane_1/{data (N, T), timestamps}``, ``.../ImageSegmentation/cell_specimen_ids``,
  ``stimulus/presentation/drifting_gratings_stimulus/{data, features, frame_duration}``,
  ``stimulus/presentation/natural_movie_one_stimulus/{data, frame_duration}``,
  ``stimulus/templates/natural_movie_one_image_stack/data`` and ``general/...`` metadata.
- :class:`AllenObservatory` lists experiments with ``BrainObservatoryCache`` (drifting gratings + natural
  movie one = session A), downloads them (allensdk writes to a temp name and moves it into place), and reads
  each with :func:`read_nwb`, caching the resulting Recording as our own checked HDF5.

Network problems raise :class:`AllenDownloadError` with what to do; a file that fails to read is deleted
from the cache so it is downloaded again rather than used half-written.
"""

from __future__ import annotations

import errno
import logging
import socket
import urllib.error
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from ..config import ALL_CRE_LINES
from .movie import resize_movie
from .recording import GRATING_DIRECTIONS, GRATING_TEMPORAL_FREQS, INHIBITORY_LINES, Recording, RecordingFileError

log = logging.getLogger(__name__)

PIPELINE = "processing/brain_observatory_pipeline"
DG_GROUP = "stimulus/presentation/drifting_gratings_stimulus"
MOVIE_GROUP = "stimulus/presentation/natural_movie_one_stimulus"
MOVIE_TEMPLATE = "stimulus/templates/natural_movie_one_image_stack/data"
MOVIE_FRAMES = 900



class AllenDownloadError(RuntimeError):
    """allensdk could not list or fetch Allen Brain Observatory data; the message names the cause
    (network, disk, allensdk itself) - see :func:`describe_failure`."""


#: errno values that mean "the disk", not "the network"
_DISK_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM}


def describe_failure(err: BaseException, cache_dir: Path) -> str:
    """Name the real cause of an allensdk failure: network (no route, DNS, timeout, refused), disk (full, read-only,
    permissions under ``cache_dir``) or anything else (allensdk / its dependencies)."""
    chain, e = [], err
    while e is not None and len(chain) < 5:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = f"{type(err).__name__}: {err}"
    if any(isinstance(x, OSError) and x.errno in _DISK_ERRNOS for x in chain):
        return (f"disk: cannot write the Allen cache under {cache_dir} ({text}); free space or pick another "
                "cache with $POYOCAP_CACHE")
    network_types = (urllib.error.URLError, socket.gaierror, socket.timeout, ConnectionError, TimeoutError)
    if any(isinstance(x, network_types) or type(x).__module__.startswith(("requests", "urllib3")) for x in chain):
        return (f"network: could not reach the Allen Brain Observatory API (api.brain-map.org) ({text}); check your "
                "internet connection / proxy, or use --source synthetic")
    return f"allensdk failed ({text}); this is not a network error - see the traceback with python -X dev"


def _attr_or_dataset(f: h5py.File, path: str, default: str = "") -> str:
    if path not in f:
        return default
    value = f[path][()]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        v = value.ravel()[0]
        return v.decode() if isinstance(v, bytes) else str(v)
    return str(value)


def cre_line_from_genotype(genotype: str) -> str:
    """``'Cux2-CreERT2/wt;Camk2a-tTA/wt;Ai93(...)'`` -> ``'Cux2-CreERT2'`` (must be one of the 13 lines)."""
    for part in genotype.replace(";", "/").split("/"):
        if part in ALL_CRE_LINES:
            return part
    raise ValueError(f"genotype {genotype!r} names none of the 13 Cre lines")


def read_nwb(
    path: str | Path,
    cre_line: str | None = None,
    frame_hw: tuple[int, int] = (32, 64),
) -> Recording:
    """Read one Allen NWB 1.x file into a :class:`Recording` (h5py only; works offline).

    Args:
        path: local NWB file (session A: drifting gratings + natural movie one).
        cre_line: overrides the line parsed from ``general/subject/genotype``.
        frame_hw: the movie template is downsampled to this (H, W) (the paper used 128 x 256).
    Raises:
        RecordingFileError: unreadable/truncated file, or a required group is missing.
        ValueError: content that violates the Recording contract (names the session and field).
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise RecordingFileError(f"{path}: not a readable HDF5/NWB file ({err})") from err
    with f:
        try:
            dff_group = f[f"{PIPELINE}/DfOverF/imaging_plane_1"]
            dff = dff_group["data"][()].T.astype(np.float32)  # stored (N, T) -> (T, N)
            ts = dff_group["timestamps"][()].astype(np.float64)
            cell_ids = f[f"{PIPELINE}/ImageSegmentation/cell_specimen_ids"][()]
            dg = f[DG_GROUP]
            dg_data = dg["data"][()].astype(np.float64)
            features = [x.decode() if isinstance(x, bytes) else str(x) for x in dg["features"][()]]
            dg_frames = dg["frame_duration"][()].astype(np.int64)
        except KeyError as err:
            raise RecordingFileError(f"{path}: missing NWB group/dataset {err}") from err
        session_id = _attr_or_dataset(f, "general/session_id") or path.stem
        genotype = _attr_or_dataset(f, "general/subject/genotype")
        line = cre_line or cre_line_from_genotype(genotype)
        depth = float(_attr_or_dataset(f, "general/optophysiology/imaging_plane_1/imaging depth", "0").split()[0])
        area = _attr_or_dataset(f, "general/optophysiology/imaging_plane_1/location", "unknown") or "unknown"
        indicator = _attr_or_dataset(f, "general/optophysiology/imaging_plane_1/indicator", "unknown") or "unknown"
        mouse = _attr_or_dataset(f, "general/specimen_name") or f"mouse-of-{session_id}"
        movie_frames = np.full(len(ts), -1, np.int64)
        movie_repeat = np.full(len(ts), -1, np.int64)
        movie = None
        if MOVIE_GROUP in f:
            idx = f[f"{MOVIE_GROUP}/data"][()].astype(np.int64).ravel()
            fd = f[f"{MOVIE_GROUP}/frame_duration"][()].astype(np.int64)
            n_movie = int(idx.max()) + 1 if len(idx) else MOVIE_FRAMES
            repeat = np.arange(len(idx)) // max(n_movie, 1)
            for frame, rep, (a, b) in zip(idx, repeat, fd):
                movie_frames[a:max(b, a + 1)] = frame
                movie_repeat[a:max(b, a + 1)] = rep
            if MOVIE_TEMPLATE in f:
                movie = resize_movie(f[MOVIE_TEMPLATE][()].astype(np.uint8), *frame_hw)
            else:
                raise RecordingFileError(f"{path}: natural movie shown but {MOVIE_TEMPLATE} is missing")

    col = {name: i for i, name in enumerate(features)}
    for needed in ("orientation", "temporal_frequency"):
        if needed not in col:
            raise RecordingFileError(f"{path}: drifting-grating features lack {needed!r} (have {features})")
    direction = dg_data[:, col["orientation"]]
    tf = dg_data[:, col["temporal_frequency"]]
    blank = np.isnan(direction) | np.isnan(tf)
    if "blank_sweep" in col:
        blank |= dg_data[:, col["blank_sweep"]] > 0.5
    keep = ~blank
    start_frame, stop_frame = dg_frames[keep, 0], np.minimum(dg_frames[keep, 1], len(ts) - 1)
    trials = {
        "start": ts[start_frame], "stop": ts[stop_frame],
        "direction_deg": direction[keep].astype(np.int64), "temporal_freq_hz": tf[keep].astype(np.int64),
    }
    return Recording(
        dff=dff, timestamps=ts, unit_ids=[f"{session_id}/{int(c)}" for c in cell_ids], cre_line=line,
        mouse_id=str(mouse), session_id=str(session_id), depth_um=depth, area=area, indicator=indicator,
        cell_class="inhibitory" if line in INHIBITORY_LINES else "excitatory", grating_trials=trials,
        movie_frames=movie_frames, movie_repeat=movie_repeat, movie=movie, source="allen",
    )


class AllenObservatory:
    """Allen Brain Observatory sessions with drifting gratings and natural movie one, as Recordings.

    Example (needs internet the first time; ~several hundred MB per session)::

        obs = AllenObservatory(paths.cache_dir() / "allen", cre_lines=["Sst-IRES-Cre"], max_sessions_per_line=2)
        recordings = obs.load_all()
    """

    def __init__(
        self,
        cache_dir: str | Path,
        cre_lines: Iterable[str] = ALL_CRE_LINES,
        max_sessions_per_line: int = 0,
        frame_hw: tuple[int, int] = (32, 64),
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.cre_lines = tuple(cre_lines)
        unknown = set(self.cre_lines) - set(ALL_CRE_LINES)
        if unknown:
            raise ValueError(f"unknown Cre lines {sorted(unknown)}")
        self.max_sessions_per_line = max_sessions_per_line
        self.frame_hw = frame_hw
        self._boc = None

    @property
    def boc(self):  # noqa: ANN201 - allensdk type
        if self._boc is None:
            try:
                from allensdk.core.brain_observatory_cache import BrainObservatoryCache
            except ImportError as err:  # allensdk is in requirements.txt: this is a broken environment
                raise AllenDownloadError(
                    f"allensdk could not be imported ({type(err).__name__}: {err}) - a dependency problem of this "
                    "environment, not the network; rebuild it with ./run_tests.sh or pip install -r requirements.txt"
                ) from err
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise AllenDownloadError(describe_failure(err, self.cache_dir)) from err
            self._boc = BrainObservatoryCache(manifest_file=str(self.cache_dir / "manifest.json"))
        return self._boc

    def experiments(self) -> list[dict]:
        """Experiments (one per session) showing drifting gratings and natural movie one, per line (capped)."""
        try:
            exps = self.boc.get_ophys_experiments(
                cre_lines=list(self.cre_lines), stimuli=["drifting_gratings", "natural_movie_one"]
            )
        except Exception as err:  # noqa: BLE001 - allensdk raises many kinds on network failure
            raise AllenDownloadError(
                f"could not list Allen Brain Observatory experiments: {describe_failure(err, self.cache_dir)}"
            ) from err
        exps = sorted(exps, key=lambda e: (e["cre_line"], e["id"]))
        if self.max_sessions_per_line:
            kept, count = [], {}
            for e in exps:
                if count.get(e["cre_line"], 0) < self.max_sessions_per_line:
                    kept.append(e)
                    count[e["cre_line"]] = count.get(e["cre_line"], 0) + 1
            exps = kept
        return exps

    def _recording_path(self, exp_id: int) -> Path:
        return self.cache_dir / "recordings" / f"{exp_id}_{self.frame_hw[0]}x{self.frame_hw[1]}.h5"

    def load(self, exp: dict) -> Recording:
        """Download (if needed) and read one experiment; cached as a checked Recording file."""
        cached = self._recording_path(exp["id"])
        identity = {"allen_experiment": int(exp["id"]), "frame_hw": list(self.frame_hw)}
        if cached.exists():
            try:
                return Recording.load(cached, identity=identity)
            except RecordingFileError as err:
                log.warning("%s; re-reading the NWB file", err)
        try:
            data_set = self.boc.get_ophys_experiment_data(exp["id"])
        except Exception as err:  # noqa: BLE001
            raise AllenDownloadError(
                f"download of experiment {exp['id']} failed: {describe_failure(err, self.cache_dir)}. Re-run to "
                "resume; delete the experiment's .nwb under the cache to force a fresh download."
            ) from err
        nwb = Path(data_set.nwb_file)
        try:
            rec = read_nwb(nwb, cre_line=exp["cre_line"], frame_hw=self.frame_hw)
        except RecordingFileError:
            nwb.unlink(missing_ok=True)  # never reuse a half-written download
            raise
        rec.mouse_id = str(exp.get("donor_name", rec.mouse_id))
        rec.save(cached, identity=identity)
        return rec

    def iter_recordings(self, progress: bool = True) -> Iterator[Recording]:
        from tqdm import tqdm

        for exp in tqdm(self.experiments(), desc="allen sessions", unit="session", disable=not progress):
            yield self.load(exp)

    def load_all(self, progress: bool = True) -> list[Recording]:
        return list(self.iter_recordings(progress=progress))


def write_test_nwb(
    path: str | Path,
    n_units: int = 5,
    n_frames: int = 3000,
    cre_genotype: str = "Sst-IRES-Cre/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt",
    movie_hw: tuple[int, int] = (30, 60),
    movie_frames: int = 30,
    movie_repeats: int = 2,
    seed: int = 0,
    nan_frames: int = 0,
) -> Path:
    """Write a small file with the released NWB 1.x layout (group names, dtypes, stimulus tables).

    Used by the tests (and useful to try the reader without downloading). Drifting gratings include blank
    sweeps (NaN orientation, ``blank_sweep = 1``) exactly as the released tables do.
    """
    rng = np.random.default_rng(seed)
    path = Path(path)
    ts = 9.0 + np.arange(n_frames) / 30.0
    dff = (0.05 * rng.standard_normal((n_units, n_frames))).astype(np.float32)
    if nan_frames:
        dff[:, 100:100 + nan_frames] = np.nan
    rows, frames = [], []
    t = 60
    for k in range(24):
        if k % 8 == 7:
            rows.append([np.nan, np.nan, 1.0])
        else:
            rows.append([float(GRATING_TEMPORAL_FREQS[k % 5]), float(GRATING_DIRECTIONS[k % 8]), 0.0])
        frames.append([t, t + 60])
        t += 90
    m_idx = np.tile(np.arange(movie_frames), movie_repeats)
    m_fd = np.stack([t + 30 + np.arange(len(m_idx)), t + 31 + np.arange(len(m_idx))], axis=1)
    if m_fd.max() >= n_frames:
        raise ValueError("n_frames too small for the stimulus schedule")
    with h5py.File(path, "w") as f:
        g = f.create_group(f"{PIPELINE}/DfOverF/imaging_plane_1")
        g.create_dataset("data", data=dff)
        g.create_dataset("timestamps", data=ts)
        f.create_dataset(f"{PIPELINE}/ImageSegmentation/cell_specimen_ids",
                         data=np.arange(517000000, 517000000 + n_units, dtype=np.int64))
        dg = f.create_group(DG_GROUP)
        dg.create_dataset("data", data=np.array(rows, dtype=np.float64))
        dg.create_dataset("features", data=np.array([b"temporal_frequency", b"orientation", b"blank_sweep"]))
        dg.create_dataset("frame_duration", data=np.array(frames, dtype=np.float64))
        nm = f.create_group(MOVIE_GROUP)
        nm.create_dataset("data", data=m_idx.astype(np.float64))
        nm.create_dataset("frame_duration", data=m_fd.astype(np.float64))
        f.create_dataset(MOVIE_TEMPLATE, data=rng.integers(0, 256, (movie_frames, *movie_hw), dtype=np.uint8))
        f.create_dataset("general/session_id", data=b"501000001")
        f.create_dataset("general/subject/genotype", data=cre_genotype.encode())
        f.create_dataset("general/specimen_name", data=b"Sst-IRES-Cre;Ai148-301234")
        f.create_dataset("general/session_type", data=b"three_session_A")
        op = "general/optophysiology/imaging_plane_1"
        f.create_dataset(f"{op}/imaging depth", data=b"275 microns")
        f.create_dataset(f"{op}/location", data=b"VISp")
        f.create_dataset(f"{op}/indicator", data=b"GCaMP6f")
    return path
