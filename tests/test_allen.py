"""The real-data reader, tested offline on small files with the released NWB 1.x layout."""

from __future__ import annotations

import numpy as np
import pytest

from poyocap.data.allen import AllenDownloadError, AllenObservatory, cre_line_from_genotype, read_nwb, write_test_nwb
from poyocap.data.recording import RecordingFileError


def test_read_generated_nwb(tmp_path):
    path = write_test_nwb(tmp_path / "501000001.nwb", n_units=5, nan_frames=3)
    rec = read_nwb(path, frame_hw=(8, 16))
    assert rec.cre_line == "Sst-IRES-Cre" and rec.cell_class == "inhibitory" and rec.source == "allen"
    assert rec.n_units == 5 and rec.dff.shape == (3000, 5) and rec.n_nan_frames == 3
    assert rec.unit_ids[0] == "501000001/517000000" and rec.area == "VISp" and rec.depth_um == 275.0
    # 24 rows, 3 of them blank sweeps -> 21 trials
    assert rec.n_trials == 21 and set(rec.grating_trials["direction_deg"]) <= set(range(0, 360, 45))
    assert rec.movie.shape == (30, 8, 16) and rec.movie_repeat.max() == 1
    assert (rec.movie_frames >= 0).sum() == 60


def test_genotype_parsing():
    assert cre_line_from_genotype("Cux2-CreERT2/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/Ai93") == "Cux2-CreERT2"
    with pytest.raises(ValueError):
        cre_line_from_genotype("wt/wt")


def test_truncated_or_incomplete_nwb_is_refused(tmp_path):
    path = write_test_nwb(tmp_path / "a.nwb")
    raw = path.read_bytes()
    (tmp_path / "trunc.nwb").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(RecordingFileError):
        read_nwb(tmp_path / "trunc.nwb")
    import h5py

    with h5py.File(path, "r+") as f:
        del f["stimulus/presentation/drifting_gratings_stimulus"]
    with pytest.raises(RecordingFileError, match="missing"):
        read_nwb(path)


def test_network_failure_gives_clear_message(tmp_path, monkeypatch):
    obs = AllenObservatory(tmp_path, cre_lines=["Sst-IRES-Cre"])

    class Offline:
        def get_ophys_experiments(self, **kw):
            raise ConnectionError("no route to host")

    obs._boc = Offline()
    with pytest.raises(AllenDownloadError, match="internet"):
        obs.experiments()
    with pytest.raises(ValueError):
        AllenObservatory(tmp_path, cre_lines=["Nope-Cre"])


def test_allen_load_caches_and_discards_bad_downloads(tmp_path):
    good = write_test_nwb(tmp_path / "good.nwb")
    bad = tmp_path / "bad.nwb"
    bad.write_bytes(good.read_bytes()[:500])

    class DataSet:
        def __init__(self, f):
            self.nwb_file = str(f)

    class FakeCache:
        def get_ophys_experiment_data(self, exp_id):
            return DataSet(good if exp_id == 1 else bad)

    obs = AllenObservatory(tmp_path / "cache", frame_hw=(8, 16))
    obs._boc = FakeCache()
    rec = obs.load({"id": 1, "cre_line": "Sst-IRES-Cre", "donor_name": "301234"})
    assert rec.mouse_id == "301234" and obs._recording_path(1).exists()
    assert np.array_equal(obs.load({"id": 1, "cre_line": "Sst-IRES-Cre"}).dff, rec.dff)  # from cache
    with pytest.raises(RecordingFileError):
        obs.load({"id": 2, "cre_line": "Sst-IRES-Cre"})
    assert not bad.exists(), "a half-written download must not be reused"


def test_real_brain_observatory_cache_constructs_offline(tmp_path):
    """The pinned environment imports allensdk (statsmodels < 0.15) and builds the real cache class locally."""
    from allensdk.core.brain_observatory_cache import BrainObservatoryCache

    obs = AllenObservatory(tmp_path / "allen", cre_lines=["Sst-IRES-Cre"])
    assert isinstance(obs.boc, BrainObservatoryCache)
    assert (tmp_path / "allen" / "manifest.json").exists()


@pytest.mark.parametrize("err, cause", [
    (__import__("urllib.error").error.URLError(__import__("socket").gaierror(-2, "Name or service not known")),
     "network"),
    (ConnectionRefusedError("refused"), "network"),
    (OSError(__import__("errno").ENOSPC, "No space left on device"), "disk"),
    (PermissionError(__import__("errno").EACCES, "Permission denied"), "disk"),
    (KeyError("cell_specimen_id"), "allensdk failed"),
])
def test_failures_name_their_cause(tmp_path, err, cause):
    from poyocap.data.allen import describe_failure

    assert describe_failure(err, tmp_path).startswith(cause)


def test_broken_allensdk_import_is_not_called_a_network_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):  # noqa: ANN001, ANN202
        if name.startswith("allensdk"):
            raise ImportError("cannot import name 'multipletests'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(AllenDownloadError, match="not the network") as info:
        AllenObservatory(tmp_path).boc  # noqa: B018
    assert "internet" not in str(info.value)
