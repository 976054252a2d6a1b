"""Bring-your-own dF/F on a committed excerpt of the real Allen sample (8 cells x 5 min across a segment boundary,
tests/data/cux2_excerpt.npz; provenance in poyocap/data/reference/README.md), and the statistics module pinned
against independent computations on the same arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from poyocap.data.arrays import load_npz, recording_from_arrays
from poyocap.data.cellstats import cell_statistics, direction_decodability
from poyocap.data.splits import build_splits
from poyocap.data.windows import grating_windows, pretrain_windows

EXCERPT = Path(__file__).parent / "data" / "cux2_excerpt.npz"
META = {"session_id": "s1", "cre_line": "Cux2-CreERT2"}


@pytest.fixture(scope="module")
def excerpt():
    with pytest.warns(UserWarning, match="blank"):
        rec = load_npz(EXCERPT, source="allen")
    with np.load(EXCERPT) as f:
        raw = f["dff"].astype(np.float32).T, f["segment_bounds"]
    return rec, raw


def test_excerpt_becomes_a_recording_with_two_segments(excerpt):
    rec, (dff, bounds) = excerpt
    assert rec.dff.shape == dff.shape == (9000, 8) and rec.cre_line == "Cux2-CreERT2" and rec.source == "allen"
    seg = rec.segment_id
    assert seg[: bounds[0, 1]].max() == 0 and seg[bounds[1, 0]:].min() == 1
    assert rec.sampling_rate_hz == pytest.approx(30.0) and rec.n_trials > 50
    assert set(rec.grating_trials["direction_deg"]) <= set(range(0, 360, 45))


def test_no_window_crosses_the_segment_gap(excerpt):
    rec, (_, bounds) = excerpt
    gap = bounds[0, 1]
    splits = build_splits([rec], novel_fraction=0.1)
    assert ((pretrain_windows([rec], splits, 1.0, 0.25).t0 < gap) & (pretrain_windows([rec], splits, 1.0, 0.25).t1
                                                                    > gap)).any(), "the tiling does reach the gap"
    for table in (pretrain_windows([rec], splits, 1.0, 0.25), grating_windows([rec], splits, 1.0)):
        kept = table.split != -2
        assert kept.sum() > 0
        crossing = (table.t0 < gap) & (table.t1 > gap)
        assert not (crossing & kept).any(), "a kept window spans the gap"


def test_statistics_match_independent_computation(excerpt):
    rec, (dff, bounds) = excerpt
    cells = cell_statistics(rec)
    x = dff.astype(np.float64)
    np.testing.assert_allclose(cells["skewness"], stats.skew(x, axis=0), rtol=1e-6)
    np.testing.assert_allclose(cells["kurtosis"], stats.kurtosis(x, axis=0, fisher=False), rtol=1e-6)
    segs = [x[a:b] for a, b in bounds]
    d = np.concatenate([np.diff(s, axis=0) for s in segs])
    mad = np.median(np.abs(d - np.median(d, axis=0)), axis=0)
    np.testing.assert_allclose(cells["noise_sd"], 1.4826 * mad / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(cells["snr"], x.std(0) / (1.4826 * mad / np.sqrt(2)), rtol=1e-6)
    for j in range(3):  # lag-1 and lag-30 autocorrelation from the pairs inside each segment only
        for lag, col in ((1, "ac_1frame"), (30, "ac_1s")):
            a = np.concatenate([s[:-lag, j] for s in segs])
            b = np.concatenate([s[lag:, j] for s in segs])
            assert cells[col][j] == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-9)
    c = np.corrcoef(x.T)
    np.testing.assert_allclose(cells["mean_corr"], (c.sum(1) - 1) / 7, rtol=1e-6)
    assert (cells["event_rate_hz"] > 0).all() and (cells["event_rate_hz"] < 1).all()


def test_event_detector_counts_by_hand():
    """Three separated bumps (one re-armed between two close ones, one not) on a flat trace."""
    t = 3000
    dff = np.zeros((t, 2), np.float32) + np.random.default_rng(0).normal(0, 0.01, (t, 2)).astype(np.float32)
    for start in (500, 1500, 1520, 2500):  # 1500 and 1520: no fall below median + 2 noise between -> one event
        dff[start:start + 10, 0] += 1.0
    dff[1510:1520, 0] += 1.0
    rec = recording_from_arrays(dff, metadata=META, rate_hz=30.0)
    cells = cell_statistics(rec)
    assert cells["event_rate_hz"][0] * (t / 30.0) == pytest.approx(3)


def test_bad_input_is_refused_clearly():
    dff = np.zeros((600, 3), np.float32) + np.random.default_rng(0).normal(0, 0.1, (600, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="differ in length"):
        recording_from_arrays(dff, metadata=META, rate_hz=30.0,
                              trials={"onset_frame": [10, 100], "direction_deg": ["0"], "temporal_freq_hz": ["1", "2"]})
    with pytest.raises(ValueError, match="must increase"):
        recording_from_arrays(dff, metadata=META, rate_hz=30.0,
                              trials={"onset_frame": [300, 100], "direction_deg": ["0", "45"]})
    with pytest.raises(ValueError, match="timestamps"):
        recording_from_arrays(dff, metadata=META, timestamps=np.arange(500) / 30.0)
    with pytest.raises(ValueError, match="segments"):
        recording_from_arrays(dff, metadata=META, rate_hz=30.0, segments=[(0, 200), (250, 600)])
    with pytest.raises(ValueError, match="metadata needs"):
        recording_from_arrays(dff, metadata={"session_id": "x"}, rate_hz=30.0)
    nan_run = dff.copy()
    nan_run[100:160, 1] = np.nan  # a NaN run in one cell: masked for that cell only
    rec = recording_from_arrays(nan_run, metadata=META, rate_hz=30.0)
    assert rec.valid.all() and not rec.roi_valid[100:160, 1].any()
    assert np.isfinite(cell_statistics(rec)[["skewness", "noise_sd", "ac_1frame"]].to_numpy()).all()


def test_trials_running_past_a_segment_end_are_dropped():
    dff = np.random.default_rng(0).normal(0, 0.1, (900, 2)).astype(np.float32)
    with pytest.warns(UserWarning, match="1 trial"):
        rec = recording_from_arrays(dff, metadata=META, rate_hz=30.0, segments=[(0, 450), (450, 900)],
                                    trials={"onset_frame": [30, 420, 500], "direction_deg": ["0", "90", "blank"]})
    assert rec.n_trials == 1 and rec.grating_trials["direction_deg"].tolist() == [0]


def test_decodability_on_a_tuned_population_beats_chance():
    rng = np.random.default_rng(0)
    n_trials, fps = 160, 30
    onsets = 30 + np.arange(n_trials) * 90
    direction = rng.integers(0, 8, n_trials) * 45
    pref = rng.integers(0, 8, 20) * 45
    dff = rng.normal(0, 0.2, (onsets[-1] + 120, 20)).astype(np.float32)
    for o, d in zip(onsets, direction):
        dff[o:o + 60] += (np.cos(np.deg2rad(d - pref)) > 0.5)[None] * 0.5
    rec = recording_from_arrays(dff, metadata=META, rate_hz=fps,
                                trials={"onset_frame": onsets, "direction_deg": direction.astype(str)})
    dec = direction_decodability(rec, [4, 20], (0.0, 1.0), n_draws=3)
    assert dec["accuracy"].iloc[1] > 0.5 > 1 / 8 and dec["accuracy"].iloc[1] > dec["accuracy"].iloc[0]


def test_own_data_cli_on_the_excerpt():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "poyocap", "own-data", str(EXCERPT), "--snr-min", "1.5"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "8 cells in 1 recording(s)" in out.stdout and "snr_aware:" in out.stdout and "too noisy" in out.stdout
    missing = subprocess.run([sys.executable, "-m", "poyocap", "own-data", "no_such_file.npz"], capture_output=True,
                             text=True)
    assert missing.returncode == 1 and "no such file" in missing.stderr and "Traceback" not in missing.stderr


def test_snr_aware_call_leaves_noisy_cells_out():
    import pandas as pd

    from poyocap.stages.realism import label_free_calls

    cells = pd.DataFrame({"skewness": [0.5, 0.5, 8.0], "kurtosis": [4.0, 4.0, 90.0], "snr": [1.1, 2.5, 3.0]})
    calls = label_free_calls(cells, {"skewness": 3.0, "kurtosis": 20.0}, snr_min=1.5)
    assert calls["label_free"].tolist() == ["predictable", "predictable", "unpredictable"]
    assert calls["snr_aware"].tolist() == ["too noisy", "predictable", "unpredictable"]


def test_compare_cux2_applies_the_calibration_rule():
    import pandas as pd

    from poyocap.data.cellstats import STATISTICS
    from poyocap.stages.realism import REAL_GROUP, compare_cux2

    base = {s: 1.0 for s in STATISTICS} | {"mean_corr": 0.10}
    real = pd.DataFrame([base] * 5).assign(group=REAL_GROUP)
    syn = pd.DataFrame([base | {"skewness": 1.2, "snr": 1.3, "mean_corr": 0.15}] * 5).assign(
        group="synthetic Cux2-CreERT2")
    table = compare_cux2(pd.concat([real, syn])).set_index("statistic")
    assert table.loc["skewness", "within_rule"] and not table.loc["snr", "within_rule"]  # x1.2 ok, x1.3 not
    assert not table.loc["mean_corr", "within_rule"]  # +0.05 > 0.04
    assert table.loc["noise_sd", "ratio"] == pytest.approx(1.0)
    assert not table.loc["skewness", "ranges_overlap"]  # constant 1.0 vs constant 1.2


def test_by_snr_compares_cells_at_the_same_snr():
    import pandas as pd

    from poyocap.data.cellstats import STATISTICS
    from poyocap.stages.realism import REAL_GROUP, by_snr

    # real cells: events rise with SNR; synthetic: flat. Two bins each, one cell of another group to ignore
    real = pd.DataFrame({s: [0.0] * 4 for s in STATISTICS} | {"snr": [1.1, 1.15, 2.5, 2.6],
                                                                "event_rate_hz": [0.05, 0.07, 0.14, 0.16]})
    syn = pd.DataFrame({s: [0.0] * 3 for s in STATISTICS} | {"snr": [1.1, 2.4, 2.8], "event_rate_hz": [0.1] * 3})
    other = pd.DataFrame({s: [9.0] for s in STATISTICS} | {"snr": [1.1]})
    cells = pd.concat([real.assign(group=REAL_GROUP), syn.assign(group="synthetic Cux2-CreERT2"),
                       other.assign(group="synthetic Sst-IRES-Cre")], ignore_index=True)
    table = by_snr(cells, bins=(0.0, 1.2, 2.2, 3.0)).set_index(["group", "snr_bin"])
    assert len(table) == 4  # the empty (1.2, 2.2] bin is left out, the Sst cell is not counted
    low, high = table.loc[(REAL_GROUP, "(0.0, 1.2]")], table.loc[(REAL_GROUP, "(2.2, 3.0]")]
    assert low["event_rate_hz"] == pytest.approx(0.06) and high["event_rate_hz"] == pytest.approx(0.15)
    assert low["n_cells"] == 2 and low["snr_median"] == pytest.approx(1.125)
    assert table.loc[("synthetic Cux2-CreERT2", "(2.2, 3.0]"), "n_cells"] == 2
