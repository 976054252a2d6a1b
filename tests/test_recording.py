"""The Recording contract: validation, NaN repair, atomic checked HDF5 files."""

from __future__ import annotations

import numpy as np
import pytest

from poyocap.data.recording import Recording, RecordingFileError


def make(**over):
    t, n = 300, 4
    rng = np.random.default_rng(0)
    kw = dict(
        dff=rng.normal(size=(t, n)).astype(np.float32), timestamps=np.arange(t) / 30.0,
        unit_ids=[f"s1/c{i}" for i in range(n)], cre_line="Sst-IRES-Cre", mouse_id="m1", session_id="s1",
        depth_um=275.0, area="VISp", indicator="GCaMP6f", cell_class="inhibitory",
        grating_trials={"start": np.array([1.0, 4.0]), "stop": np.array([3.0, 6.0]),
                        "direction_deg": np.array([0, 45]), "temporal_freq_hz": np.array([1, 15])},
        movie_frames=np.r_[np.full(200, -1), np.tile(np.arange(10), 10)],
        movie_repeat=np.r_[np.full(200, -1), np.repeat(np.arange(10), 10)],
        movie=rng.integers(0, 255, (10, 4, 8), dtype=np.uint8),
    )
    kw.update(over)
    return Recording(**kw)


def test_valid_recording():
    r = make()
    assert r.n_frames == 300 and r.n_units == 4 and r.n_nan_frames == 0 and r.valid.all()
    assert r.dff.dtype == np.float32 and abs(r.sampling_rate_hz - 30.0) < 1e-9


@pytest.mark.parametrize("field,value,match", [
    ("dff", np.zeros((300,)), "2-D"),
    ("dff", np.zeros((0, 4)), "empty"),
    ("dff", np.full((300, 4), np.inf, np.float32), "inf"),
    ("dff", np.zeros((300, 4), dtype=np.int32), "floating"),
    ("timestamps", np.r_[np.arange(299) / 30.0, 0.0], "increasing"),
    ("timestamps", np.arange(10) / 30.0, "shape"),
    ("unit_ids", ["s1/c0", "s1/c0", "s1/c2", "s1/c3"], "duplicated"),
    ("unit_ids", ["c0", "c1", "c2", "c3"], "globally unique"),
    ("unit_ids", ["s1/c0"], "ids for"),
    ("cell_class", "pyramidal", "cell_class"),
    ("cre_line", "", "cre_line"),
    ("depth_um", -5.0, "depth"),
    ("movie_frames", np.full(300, -2), "movie_frames"),
    ("movie", None, "movie"),
])
def test_bad_input_raises_naming_session_and_field(field, value, match):
    with pytest.raises(ValueError, match=match) as err:
        make(**{field: value})
    msg = str(err.value)
    assert "session s1" in msg and f"field '{field}'" in msg, msg


@pytest.mark.parametrize("trials,match", [
    ({"start": [1.0], "stop": [0.5], "direction_deg": [0], "temporal_freq_hz": [1]}, "stop > start"),
    ({"start": [1.0], "stop": [2.0], "direction_deg": [30], "temporal_freq_hz": [1]}, "direction"),
    ({"start": [1.0], "stop": [2.0], "direction_deg": [np.nan], "temporal_freq_hz": [1]}, "blank"),
    ({"start": [1.0], "stop": [2.0], "direction_deg": [0], "temporal_freq_hz": [3]}, "temporal_freq"),
    ({"start": [1.0], "stop": [2.0], "direction_deg": [0]}, "missing"),
])
def test_bad_grating_trials(trials, match):
    with pytest.raises(ValueError, match=match):
        make(grating_trials={k: np.array(v) for k, v in trials.items()})


def test_nan_frames_are_masked_and_counted():
    dff = np.random.default_rng(1).normal(size=(300, 4)).astype(np.float32)
    dff[10:13, 2] = np.nan
    dff[50] = np.nan
    r = make(dff=dff)
    # frame 50 (every ROI NaN) is invalid; ROI 2's own NaN values are masked for ROI 2 only
    assert r.n_nan_frames == 1 and not r.valid[50] and r.valid[10:13].all() and np.isfinite(r.dff).all()
    assert not r.roi_valid[10:13, 2].any() and r.roi_valid[10:13, [0, 1, 3]].all() and r.roi_valid.sum() == 4 * 300 - 3
    with pytest.raises(ValueError, match="every frame"):
        make(dff=np.full((300, 4), np.nan, np.float32))


def test_one_roi_nan_on_alternate_frames_leaves_the_others_alone():
    dff = np.random.default_rng(1).normal(size=(300, 4)).astype(np.float32)
    dff[::2, 1] = np.nan
    r = make(dff=dff)
    assert r.valid.all() and r.n_nan_frames == 0
    assert not r.roi_valid[::2, 1].any() and r.roi_valid[1::2, 1].all() and r.roi_valid[:, [0, 2, 3]].all()
    mask = r.value_mask()
    assert mask.shape == (300, 4) and mask.sum() == 4 * 300 - 150
    assert np.array_equal(r.value_mask(per_roi=True), mask)


def test_per_roi_value_mask_has_the_data_shape_without_roi_nans():
    dff = np.random.default_rng(1).normal(size=(300, 4)).astype(np.float32)
    dff[5] = np.nan  # a whole frame: frame-level mask only
    r = make(dff=dff)
    assert r.roi_valid is None and r.value_mask().shape == (300,)
    full = r.value_mask(per_roi=True)
    assert full.shape == (300, 4) and not full[5].any() and full.sum() == 4 * 299


def test_all_nan_roi_is_dropped_with_a_warning_that_names_it():
    dff = np.random.default_rng(1).normal(size=(300, 4)).astype(np.float32)
    dff[:, 3] = np.nan
    with pytest.warns(UserWarning, match="s1/c3"):
        r = make(dff=dff)
    assert r.unit_ids == ["s1/c0", "s1/c1", "s1/c2"] and r.dff.shape == (300, 3) and r.valid.all()


def test_timestamps_must_be_in_seconds():
    with pytest.raises(ValueError, match="milliseconds"):
        make(timestamps=np.arange(300) * 1000 / 30.0)
    with pytest.raises(ValueError, match="sampling rate"):
        make(timestamps=np.arange(300) / 1e5)


def test_nan_timestamps_are_refused():
    ts = np.arange(300) / 30.0
    ts[7] = np.nan
    with pytest.raises(ValueError, match="timestamps"):
        make(timestamps=ts)


def test_cached_file_of_another_session_or_generator_is_refused(tmp_path):
    path = make().save(tmp_path / "s1.h5", identity={"digest": "abc"})
    assert Recording.load(path, session_id="s1", identity={"digest": "abc"}).session_id == "s1"
    with pytest.raises(RecordingFileError, match="expected 's2'"):
        Recording.load(path, session_id="s2")
    with pytest.raises(RecordingFileError, match="expected"):
        Recording.load(path, identity={"digest": "other"})


def test_roi_mask_survives_save_and_load(tmp_path):
    dff = np.random.default_rng(1).normal(size=(300, 4)).astype(np.float32)
    dff[::3, 0] = np.nan
    r = make(dff=dff)
    again = Recording.load(r.save(tmp_path / "s1.h5"))
    assert np.array_equal(again.roi_valid, r.roi_valid) and np.array_equal(again.dff, r.dff)


def test_save_load_roundtrip(tmp_path):
    dff = np.random.default_rng(2).normal(size=(300, 4)).astype(np.float32)
    dff[5] = np.nan
    r = make(dff=dff)
    path = r.save(tmp_path / "s1.h5")
    back = Recording.load(path)
    assert np.array_equal(back.dff, r.dff) and back.unit_ids == r.unit_ids and back.n_nan_frames == 1
    assert np.array_equal(back.movie, r.movie) and back.grating_trials["direction_deg"].tolist() == [0, 45]
    assert not list(tmp_path.glob(".*tmp")), "temp file left behind"


def test_truncated_and_corrupt_files_are_detected(tmp_path):
    path = make().save(tmp_path / "s1.h5")
    raw = path.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RecordingFileError):
        Recording.load(tmp_path / "trunc.h5")
    import h5py

    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(raw)
    with h5py.File(corrupt, "r+") as f:  # flip data but keep the stored checksum
        f["dff"][0, 0] = 99.0
    with pytest.raises(RecordingFileError, match="checksum"):
        Recording.load(corrupt)
    with pytest.raises(RecordingFileError, match="no such file"):
        Recording.load(tmp_path / "missing.h5")
